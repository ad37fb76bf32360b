import { describe, expect, test } from "@jest/globals";
import { Coalescer, NodeLedger, Semaphore } from "../../../operator/clouds/azure/ledger.ts";
import { ctx, emulator, offer, provider, responder } from "./fixtures.ts";

describe("NodeLedger (maxNodes)", () => {
  test("admits while the total stays within the limit, counting reservations in flight", () => {
    const l = new NodeLedger();
    l.replace(new Map([["a", 2]]), l.mark(), 0);
    expect(l.admit("b", 1, 4)).toEqual({ ok: true });
    expect(l.admit("c", 2, 4)).toEqual({ ok: false, others: 3 });
    l.settle("b", undefined);
    expect(l.admit("c", 2, 4)).toEqual({ ok: true });
  });

  test("re-admitting the same reservation does not count it twice", () => {
    const l = new NodeLedger();
    l.replace(new Map([["a", 2]]), l.mark(), 0);
    expect(l.admit("a", 2, 2)).toEqual({ ok: true });
  });

  test("a listing begun before a local change does not undo it", () => {
    const l = new NodeLedger();
    const mark = l.mark();
    l.settle("new", 3); // reserved while the listing was on its way
    l.forget("gone"); // released meanwhile
    l.replace(
      new Map([
        ["old", 1],
        ["gone", 2],
      ]),
      mark,
      0,
    );
    expect(l.total()).toBe(4);
    // A later listing is the truth again.
    l.replace(new Map([["old", 1]]), l.mark(), 1);
    expect(l.total()).toBe(1);
  });

  test("is stale after its TTL", () => {
    const l = new NodeLedger();
    expect(l.isFresh(0, 1000)).toBe(false);
    l.replace(new Map(), l.mark(), 0);
    expect(l.isFresh(999, 1000)).toBe(true);
    expect(l.isFresh(1000, 1000)).toBe(false);
  });
});

test("Coalescer: callers arriving during a run share one next run", async () => {
  const c = new Coalescer<number>();
  let runs = 0;
  let release!: () => void;
  const gate = new Promise<void>((r) => {
    release = r;
  });
  const fn = async () => {
    runs += 1;
    if (runs === 1) await gate;
    return runs;
  };
  const first = c.run(fn);
  const second = c.run(fn);
  const third = c.run(fn);
  release();
  expect(await Promise.all([first, second, third])).toEqual([1, 2, 2]);
  expect(runs).toBe(2);
});

test("Semaphore: never more than the limit at once", async () => {
  const s = new Semaphore(2);
  let active = 0;
  let peak = 0;
  await Promise.all(
    Array.from({ length: 10 }, () =>
      s.run(async () => {
        active += 1;
        peak = Math.max(peak, active);
        await new Promise((r) => setImmediate(r));
        active -= 1;
      }),
    ),
  );
  expect(peak).toBe(2);
});

test("maxNodes holds under concurrent offers over HTTP: exactly that many are accepted", async () => {
  const emu = await emulator(10, 10);
  try {
    const p = provider(emu, (x) => {
      x.spec.capacity.gpus[0].maxNodes = 3;
    });
    const r = responder(emu);
    const answers = await Promise.all(Array.from({ length: 6 }, () => r.respond(offer(1), p, ctx())));
    expect(answers.filter((a) => a.outcome === "Accepted")).toHaveLength(3);
    expect(answers.filter((a) => a.reason === "NoCapacity")).toHaveLength(3);
    expect(emu.reservations()).toHaveLength(3);
    expect(emu.agentPool().count).toBe(3);
  } finally {
    await emu.close();
  }
});
