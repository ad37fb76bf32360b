/**
 * The operator gives back the memory a burst grew it to once it is idle again
 * (operator/runtime/memory.ts): one last-resort GC per burst, never while busy, never for
 * small growth; and that GC really shrinks V8's heap. A sync process's lower old-generation
 * limit collects only above max(floor, 1.5 × live) and leaves large heaps to V8. Its read-buffer
 * scavenger runs one minor GC per `everyBytes` read, after the read, never two at once.
 */

import { PerformanceObserver, constants as perf, performance } from "node:perf_hooks";
import v8 from "node:v8";
import {
  IdleMemoryReducer,
  lastResortGc,
  OldGenerationLimit,
  ReadBufferScavenger,
} from "../../operator/runtime/memory.ts";

const MiB = 2 ** 20;

/** A reducer over a scripted process: RSS and loop utilisation are set by the test. */
function scripted(startRss: number) {
  const state = { rss: startRss, busy: 0, gcs: 0, releaseTo: startRss, now: 0 };
  const reducer = new IdleMemoryReducer({
    growthBytes: 64 * MiB,
    idleUtilization: 0.1,
    minSpacingMs: 60_000,
    now: () => state.now,
    rss: () => state.rss,
    utilization: () => state.busy,
    gc: () => {
      state.gcs++;
      state.rss = state.releaseTo;
    },
  });
  return { state, reducer };
}

test("after a burst it collects once, when the event loop is idle, and memory returns", () => {
  const { state, reducer } = scripted(150 * MiB);
  state.rss = 400 * MiB;
  state.busy = 0.9;
  expect(reducer.tick()).toBe(false);
  expect(state.gcs).toBe(0);

  state.busy = 0.02;
  state.releaseTo = 160 * MiB;
  expect(reducer.tick()).toBe(true);
  expect(state.gcs).toBe(1);
  expect(state.rss).toBe(160 * MiB);

  // Still idle, nothing new to give back: no second collection.
  expect(reducer.tick()).toBe(false);
  expect(state.gcs).toBe(1);

  // The next growth is measured from where the last reduction left memory, and waits for
  // the least spacing between two reductions.
  state.rss = 230 * MiB;
  state.now = 30_000;
  expect(reducer.tick()).toBe(false);
  state.now = 60_000;
  expect(reducer.tick()).toBe(true);
  expect(state.gcs).toBe(2);
});

test("a busy spell that ends above the start is followed by a reduction, without new growth", () => {
  const { state, reducer } = scripted(150 * MiB);
  // A reduction while 10,000 runs are held: the floor becomes 300 MiB.
  state.rss = 400 * MiB;
  state.releaseTo = 300 * MiB;
  expect(reducer.tick()).toBe(true);
  // The runs are deleted (busy), then the loop is idle; RSS has not grown past the floor.
  state.now = 120_000;
  state.rss = 320 * MiB;
  state.busy = 0.8;
  expect(reducer.tick()).toBe(false);
  state.busy = 0.01;
  state.releaseTo = 180 * MiB;
  expect(reducer.tick()).toBe(true);
  expect(state.rss).toBe(180 * MiB);
  // Idle on: nothing more.
  state.now = 240_000;
  expect(reducer.tick()).toBe(false);
  expect(state.gcs).toBe(2);
});

test("an idle process that grew less than the threshold is left alone", () => {
  const { state, reducer } = scripted(150 * MiB);
  state.rss = 200 * MiB;
  state.busy = 0;
  expect(reducer.tick()).toBe(false);
  expect(state.gcs).toBe(0);
});

test("the last-resort GC shrinks the V8 heap a burst grew", () => {
  let burst: object[] | undefined = Array.from({ length: 400_000 }, (_, i) => ({ i, s: `run-${i}` }));
  const grown = v8.getHeapStatistics().total_heap_size;
  expect(burst.length).toBe(400_000);
  burst = undefined;
  lastResortGc()();
  expect(burst).toBeUndefined();
  expect(v8.getHeapStatistics().total_heap_size).toBeLessThan(grown);
});

/** An old-generation limit over a scripted heap: bytes in use set by the test, GC scripted. */
function scriptedHeap(used: number) {
  const heap = { used, live: used, gcs: 0 };
  const limit = new OldGenerationLimit({
    floorBytes: 16 * MiB,
    factor: 1.5,
    ceilingBytes: 64 * MiB,
    used: () => heap.used,
    gc: () => {
      heap.gcs++;
      heap.used = heap.live;
    },
  });
  return { heap, limit };
}

test("the sync's old-generation limit collects above max(floor, 1.5 × live), and only there", () => {
  const { heap, limit } = scriptedHeap(10 * MiB);
  heap.live = 10 * MiB;
  expect(limit.tick()).toBe(false); // under the floor
  heap.used = 16 * MiB;
  expect(limit.tick()).toBe(false); // at it
  heap.used = 17 * MiB;
  expect(limit.tick()).toBe(true);
  expect(heap.gcs).toBe(1);
  expect(limit.limit).toBe(16 * MiB); // 1.5 × 10 MiB is under the floor

  // A larger live heap raises the limit to 1.5 × what the last GC left.
  heap.live = 20 * MiB;
  heap.used = 40 * MiB;
  expect(limit.tick()).toBe(true);
  expect(limit.limit).toBe(30 * MiB);
  heap.used = 29 * MiB;
  expect(limit.tick()).toBe(false);
  heap.used = 31 * MiB;
  expect(limit.tick()).toBe(true);
  expect(limit.collections).toBe(3);
});

test("a live heap whose limit reaches the ceiling is left to V8", () => {
  const { heap, limit } = scriptedHeap(50 * MiB);
  heap.live = 45 * MiB;
  expect(limit.tick()).toBe(true); // the first look: the floor applies
  expect(limit.limit).toBe(67.5 * MiB); // ≥ 64 MiB: V8's own limit from now on
  heap.used = 200 * MiB;
  expect(limit.tick()).toBe(false);
  expect(heap.gcs).toBe(1);
});

test("on the real heap: it frees promoted garbage, and V8's own full GCs update the live size", async () => {
  const sizeOf = () =>
    v8
      .getHeapSpaceStatistics()
      .filter((s) => s.space_name === "old_space" || s.space_name === "large_object_space")
      .reduce((n, s) => n + s.space_used_size, 0);
  const base = sizeOf();
  // Its own timer never fires here (1 h): only the observer can update the live size.
  const limit = new OldGenerationLimit({
    floorBytes: base + 8 * MiB,
    ceilingBytes: 2 ** 40,
    intervalMs: 3_600_000,
  });
  // Garbage in the large-object space (each array > V8's regular-object size): old generation.
  let garbage: number[][] | undefined = Array.from({ length: 12 }, () => new Array(250_000).fill(1.5));
  expect(sizeOf()).toBeGreaterThan(base + 16 * MiB);
  garbage = undefined;
  expect(limit.tick()).toBe(true);
  expect(garbage).toBeUndefined();
  expect(sizeOf()).toBeLessThan(base + 8 * MiB);

  // 24 MiB that stay live, then a full GC that is not the limit's own: the observer sees it.
  limit.start();
  try {
    const kept = Array.from({ length: 12 }, () => new Array(250_000).fill(2.5));
    lastResortGc()();
    for (let i = 0; i < 100 && limit.limit < 1.5 * 20 * MiB; i++) await new Promise((r) => setTimeout(r, 20));
    expect(limit.limit).toBeGreaterThanOrEqual(1.5 * 20 * MiB);
    expect(kept).toHaveLength(12);
    expect(limit.collections).toBe(1);
  } finally {
    limit.stop();
  }
});

describe("the sync's read-buffer scavenger", () => {
  test("one minor GC per everyBytes read, run after the read that crossed the mark, never two queued", () => {
    const queued: (() => void)[] = [];
    let gcs = 0;
    const s = new ReadBufferScavenger({
      everyBytes: 16 * MiB,
      gc: () => gcs++,
      defer: (run) => queued.push(run),
    });
    for (let i = 0; i < 255; i++) s.note(64 * 1024);
    expect(queued).toHaveLength(0);
    s.note(64 * 1024); // 16 MiB
    expect(queued).toHaveLength(1);
    expect(gcs).toBe(0); // not inside the read
    for (let i = 0; i < 600; i++) s.note(64 * 1024); // more reads before it ran: still one
    expect(queued).toHaveLength(1);
    queued.shift()!();
    expect({ gcs, collections: s.collections }).toEqual({ gcs: 1, collections: 1 });
    // The count starts again from the GC, not from the mark.
    for (let i = 0; i < 255; i++) s.note(64 * 1024);
    expect(queued).toHaveLength(0);
    s.note(64 * 1024);
    expect(queued).toHaveLength(1);
  });

  test("on the real heap: its GC is a minor one, and it frees the Buffers a read left behind", async () => {
    const gcs: { at: number; kind: number }[] = [];
    const observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries())
        gcs.push({ at: e.startTime, kind: (e as { detail?: { kind?: number } }).detail?.kind ?? -1 });
    });
    observer.observe({ entryTypes: ["gc"] });
    try {
      const s = new ReadBufferScavenger({ everyBytes: MiB });
      const external = () => process.memoryUsage().arrayBuffers;
      // Reads' chunks, handed on and dropped: 4 MiB of dead Buffers (their memory outside the
      // heap; more would be external-memory pressure enough for V8 to start a GC of its own).
      const before = external();
      (() => {
        for (let i = 0; i < 64; i++) Buffer.alloc(64 * 1024, i & 0xff);
      })();
      const dead = external() - before;
      expect(dead).toBeGreaterThan(3 * MiB);
      const noted = performance.now();
      s.note(MiB);
      for (let i = 0; i < 100 && (s.collections === 0 || external() - before > dead / 2); i++)
        await new Promise((r) => setTimeout(r, 10));
      expect(s.collections).toBe(1);
      expect(external() - before).toBeLessThan(dead / 2);
      await new Promise((r) => setTimeout(r, 50)); // the observer's entries arrive asynchronously
      expect(gcs.filter((g) => g.at >= noted).map((g) => g.kind)).toContain(perf.NODE_PERFORMANCE_GC_MINOR);
    } finally {
      observer.disconnect();
    }
  });
});
