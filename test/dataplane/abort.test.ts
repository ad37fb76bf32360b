/**
 * onAbort (operator/dataplane/abort.ts): one listener per signal, callbacks that run once on
 * abort unless unregistered, slots reused so that churn keeps nothing of earlier callbacks;
 * withOwnSignal: a signal per call for the SDK routes, tied to the long-lived one through it.
 */
import { getEventListeners } from "node:events";
import { abortError, onAbort, withOwnSignal } from "../../operator/dataplane/abort.ts";

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

describe("withOwnSignal", () => {
  it("gives each call a signal of its own that aborts with the sync's, and adds no listener per call to it", async () => {
    const sync = new AbortController();
    const seen: AbortSignal[] = [];
    for (let i = 0; i < 100; i++)
      await withOwnSignal(sync.signal, async (s) => {
        seen.push(s!);
        s!.addEventListener("abort", () => {}); // as the SDKs do, on the call's own signal
      });
    // One listener on the sync's signal (onAbort's), whatever the number of calls.
    expect(getEventListeners(sync.signal, "abort").length).toBe(1);
    expect(new Set(seen).size).toBe(100);
    expect(seen.every((s) => s !== sync.signal)).toBe(true);

    // A call in flight when the sync aborts is aborted, with the sync's reason.
    let inFlight: AbortSignal | undefined;
    const running = withOwnSignal(
      sync.signal,
      (s) =>
        new Promise((_, reject) => {
          inFlight = s;
          s!.addEventListener("abort", () => reject(s!.reason));
        }),
    );
    sync.abort(new Error("stop"));
    await expect(running).rejects.toThrow("stop");
    expect(inFlight!.aborted).toBe(true);
    // Calls that had settled were unregistered: their signals never aborted.
    expect(seen.some((s) => s.aborted)).toBe(false);
  });

  it("an aborted sync's signal gives an aborted one; no signal gives none", async () => {
    const sync = new AbortController();
    sync.abort();
    expect(await withOwnSignal(sync.signal, async (s) => s!.aborted)).toBe(true);
    expect(await withOwnSignal(undefined, async (s) => s)).toBeUndefined();
  });
});
