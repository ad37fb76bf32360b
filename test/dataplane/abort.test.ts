/**
 * onAbort (operator/dataplane/abort.ts): one listener per signal, callbacks that run once on
 * abort unless unregistered, slots reused so that churn keeps nothing of earlier callbacks.
 */
import { abortError, onAbort } from "../../operator/dataplane/abort.ts";

test("runs the callbacks still registered when the signal aborts, each once", () => {
  const ac = new AbortController();
  const calls: string[] = [];
  const offA = onAbort(ac.signal, () => calls.push("a"));
  onAbort(ac.signal, () => calls.push("b"));
  const offC = onAbort(ac.signal, () => calls.push("c"));
  offA();
  offA(); // twice is harmless
  offC();
  onAbort(ac.signal, () => calls.push("d")); // takes a freed slot
  ac.abort(new Error("stop"));
  ac.abort();
  expect(calls.sort()).toEqual(["b", "d"]);
});

test("after heavy churn only the live callbacks run, and late unregistrations change nothing", () => {
  const ac = new AbortController();
  let ran = 0;
  const live: (() => void)[] = [];
  for (let i = 0; i < 10_000; i++) {
    const off = onAbort(ac.signal, () => ran++);
    if (i % 1000 === 0) live.push(off);
    else off();
  }
  ac.abort();
  expect(ran).toBe(10);
  for (const off of live) off();
  expect(ran).toBe(10);
});

test("a signal already aborted runs the callback at once; the error is an AbortError with the reason", () => {
  const ac = new AbortController();
  const reason = new Error("interrupted");
  ac.abort(reason);
  let ran = false;
  onAbort(ac.signal, () => {
    ran = true;
  })();
  expect(ran).toBe(true);
  const e = abortError(ac.signal);
  expect([e.name, (e as Error & { code?: string }).code, e.cause]).toEqual([
    "AbortError",
    "ABORT_ERR",
    reason,
  ]);
});
