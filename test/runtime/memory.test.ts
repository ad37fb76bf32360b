/**
 * The operator gives back the memory a burst grew it to once it is idle again
 * (operator/runtime/memory.ts): one last-resort GC per burst, never while busy, never for
 * small growth; and that GC really shrinks V8's heap.
 */
import v8 from "node:v8";
import { IdleMemoryReducer, lastResortGc } from "../../operator/runtime/memory.ts";

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
