/**
 * Gives memory back to the system once the operator is idle after a burst (issue 9: "memory
 * after the runs finish returns near its start").
 *
 * Where the memory was (measured with /proc/PID/smaps, `--trace-gc` and the heap spaces,
 * `BENCH_RUNS=500 npm run bench -- scale`): after a burst, the operator's resident memory
 * stayed at its peak (151 → 390 MiB) although the V8 heap in use was back near its start
 * (63 MiB after a forced GC). 257 MiB of it were 1,033 anonymous 256 KiB mappings — V8 pages —
 * of which the heap counted only 108 MiB: the rest sat in V8's page pool. V8 (13.6, Node 24)
 * pools the pages a shrinking heap frees, for reuse, and releases the pool only in a
 * last-resort GC (`CollectAllAvailableGarbage`): a regular full GC, `gc()` included, keeps
 * it (`--trace-gc` prints `pooled: 316 MB` after the heap fell to 42 MB), and V8's memory
 * reducer, which would shrink the heap when the isolate is idle, never fires in Node (it
 * sees the isolate as in the foreground: `--trace-memory-reducer` prints "high alloc,
 * foreground" every 8 s on an idle process). glibc's arenas grew by ~40 MiB, a minor part.
 *
 * So: every `intervalMs` this looks at the event loop's utilisation over the interval and at
 * RSS; when the loop was idle for a whole interval and RSS is `growthBytes` above where it
 * was after the last reduction (or at start), it runs one last-resort GC (a few full GCs:
 * ~200 ms on a 60 MiB live heap, only when idle, so no placement waits on it) and takes the
 * RSS after it as the new floor. It also reduces when a busy spell has just ended and RSS is
 * `growthBytes` above the start (at 10,000 runs the last reduction came while they ran, and
 * their deletion freed the heap without raising RSS again). Reductions are spaced by at least
 * `minSpacingMs` and 100 times their own duration. A busy operator never pays for it.
 *
 * Measured (500 runs, same harness, load 6–13 on 2 cores): RSS start 158, peak 353, 30 s
 * after the runs were deleted 179 MiB (without this: 151 → 388 → 390, and still 390 after a
 * forced `gc()`); one reduction, 381 → 169 MiB in 712 ms on a loaded machine. What is left
 * above the start is glibc's: the main arena (`[heap]`) 12 → 36 MiB and the thread arenas
 * 7 → 17. glibc tunables were tried and not adopted: with
 * `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=131072:glibc.malloc.arena_max=2`
 * RSS after deletion was 169 MiB instead of 179 (thread arenas 10 instead of 17 MiB, the
 * main arena unchanged at 35), within run-to-run noise and at the price of fewer malloc
 * arenas for V8's GC and libuv threads; `MALLOC_ARENA_MAX=2` alone made no difference earlier.
 * At 3,000 runs the same tunables gave 200 MiB after deletion instead of 225 (thread arenas
 * 12 instead of 38 MiB, main arena 56 vs 54): worth adopting once a same-load throughput
 * comparison shows arena_max=2 costs nothing.
 */
import { constants, PerformanceObserver, performance } from "node:perf_hooks";
import v8 from "node:v8";
import { runInNewContext } from "node:vm";
import type { Logger } from "./logging.ts";

export interface IdleMemoryReducerOptions {
  /** How often to look (default 15 s). The loop must be idle for one whole interval. */
  intervalMs?: number;
  /** Event-loop utilisation (0…1) below which an interval counts as idle (default 0.1). */
  idleUtilization?: number;
  /** RSS growth above the floor that is worth a reduction (default 64 MiB). */
  growthBytes?: number;
  /**
   * Least time between two reductions (default 60 s), and never less than 100 times the last
   * reduction's own duration, so reductions take at most 1 % of the time. An operator holding
   * 10,000 running runs, mostly waiting, counts as idle between its busy spells; a reduction
   * then took 0.6–1.5 s (2 loaded cores).
   */
  minSpacingMs?: number;
  now?: () => number;
  /** Defaults: a last-resort GC, `process.memoryUsage.rss`, the event loop's utilisation. */
  gc?: () => void;
  rss?: () => number;
  /** Utilisation of the event loop since the previous call (0…1). */
  utilization?: () => number;
  log?: Pick<Logger, "info">;
}

/**
 * A function running V8's last-resort GC (the one that also releases its page pool). Uses
 * `gc` when node runs with --expose-gc; otherwise exposes it for one new context only, as
 * Jest's leak detector does (`v8.setFlagsFromString` then `vm.runInNewContext("gc")`), so
 * the operator's own global scope never gets a `gc`.
 */
export function lastResortGc(): () => void {
  const collect = exposedGc();
  return () => collect({ type: "major", execution: "sync", flavor: "last-resort" });
}

/** V8's `gc` extension: `globalThis.gc` under --expose-gc, else one exposed for a new context. */
function exposedGc(): (opts?: object) => void {
  let gc = (globalThis as { gc?: (opts?: object) => void }).gc;
  if (!gc) {
    v8.setFlagsFromString("--expose-gc");
    gc = runInNewContext("gc") as (opts?: object) => void;
    v8.setFlagsFromString("--no-expose-gc");
  }
  return gc;
}

function eventLoopUtilization(): () => number {
  let last = performance.eventLoopUtilization();
  return () => {
    const now = performance.eventLoopUtilization();
    const delta = performance.eventLoopUtilization(now, last);
    last = now;
    return delta.utilization;
  };
}

export class IdleMemoryReducer {
  private readonly intervalMs: number;
  private readonly idleUtilization: number;
  private readonly growthBytes: number;
  private readonly minSpacingMs: number;
  private readonly now: () => number;
  private lastReduction = Number.NEGATIVE_INFINITY;
  private lastGcMs = 0;
  /** RSS when started: nothing is reduced below start + growth. */
  private readonly startRss: number;
  /** A busy interval was seen since the last reduction (a burst, e.g. a mass deletion). */
  private sawBusy = false;
  private readonly gc: () => void;
  private readonly rss: () => number;
  private readonly utilization: () => number;
  private readonly log: Pick<Logger, "info"> | undefined;
  private floor: number;
  private timer: NodeJS.Timeout | undefined;

  constructor(opts: IdleMemoryReducerOptions = {}) {
    this.intervalMs = opts.intervalMs ?? 15_000;
    this.idleUtilization = opts.idleUtilization ?? 0.1;
    this.growthBytes = opts.growthBytes ?? 64 * 2 ** 20;
    this.minSpacingMs = opts.minSpacingMs ?? 60_000;
    this.now = opts.now ?? Date.now;
    this.gc = opts.gc ?? lastResortGc();
    this.rss = opts.rss ?? (() => process.memoryUsage.rss());
    this.utilization = opts.utilization ?? eventLoopUtilization();
    this.log = opts.log;
    this.floor = this.rss();
    this.startRss = this.floor;
  }

  start(): void {
    if (this.timer) return;
    this.utilization();
    this.timer = setInterval(() => this.tick(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One look; true when it reduced. */
  tick(): boolean {
    const busy = this.utilization();
    const rss = this.rss();
    if (busy >= this.idleUtilization) {
      this.sawBusy = true;
      return false;
    }
    // Memory that went back on its own lowers the floor too.
    this.floor = Math.min(this.floor, rss);
    // Grown since the last reduction, or a busy spell ended (its garbage, e.g. deleted runs,
    // is what a reduction gives back) while above the start.
    const grown = rss - this.floor >= this.growthBytes;
    const afterBurst = this.sawBusy && rss - this.startRss >= this.growthBytes;
    if (!grown && !afterBurst) return false;
    const spacing = Math.max(this.minSpacingMs, 100 * this.lastGcMs);
    if (this.now() - this.lastReduction < spacing) return false;
    this.lastReduction = this.now();
    const t0 = performance.now();
    this.gc();
    this.lastGcMs = performance.now() - t0;
    const after = this.rss();
    this.floor = after;
    this.sawBusy = false;
    this.log?.info("idle after a burst: released memory", {
      rssBeforeMiB: Math.round(rss / 2 ** 20),
      rssAfterMiB: Math.round(after / 2 ** 20),
      gcMs: Math.round(this.lastGcMs),
    });
    // The GC's own time is not the workload's: start the next interval afresh.
    this.utilization();
    return true;
  }
}

export interface OldGenerationLimitOptions {
  /** Never collect below this many bytes of old generation in use (default 16 MiB). */
  floorBytes?: number;
  /** Collect when the old generation holds this times what the last full GC left (default 1.5). */
  factor?: number;
  /**
   * From this limit up, leave the old generation to V8 (default 64 MiB: the sync process's
   * `--initial-old-space-size`, under which V8 itself never collects).
   */
  ceilingBytes?: number;
  /** How often to look (default 100 ms). */
  intervalMs?: number;
  /** Defaults: the old and large-object spaces' bytes in use, a regular full GC. */
  used?: () => number;
  gc?: () => void;
}

/** Bytes in use in V8's old and large-object spaces: what a full GC, and only one, frees. */
function oldGenerationUsed(): number {
  let used = 0;
  for (const s of v8.getHeapSpaceStatistics())
    if (s.space_name === "old_space" || s.space_name === "large_object_space") used += s.space_used_size;
  return used;
}

/**
 * A lower old-generation limit than the one V8 starts with, for a process whose live heap is
 * small but whose garbage is promoted steadily: a `spillway sync` of many small objects.
 *
 * Why (docs/dataplane.md, "The sync process"): the sync process starts with
 * `--initial-old-space-size=64`, because the data of large objects streams through fresh
 * ArrayBuffers whose churn V8 answers with full GCs when its limits are low (a cold copy of
 * 200 × 1 MiB + 2 × 100 MiB: 3–12 full GCs at 64 MiB, 16–25 at 32, 33–40 at 16 or 24). But
 * V8 keeps that 64 MiB as the old generation's floor for the whole run, and a copy of many
 * small objects promotes ~1 KiB per object (the journal's pending entries, manifest lines,
 * listing entries: state that lives a second or two) against a live heap of ~11 MiB: its old
 * generation fills to the floor between full GCs, and its peak RSS went ~100 → 146–150 MiB
 * from 5,000 to 50,000 objects — the 5,000-object copy ends before it reaches the floor.
 *
 * (Since 2026-12-07 the launcher's floor is 32 MiB — with the sockets' one read buffer and the
 * read-buffer scavenger, (a) no longer pays for it — and the same copy peaks at ~113 MiB
 * without this.)
 *
 * So every `intervalMs` this compares the old generation in use with
 * max(`floorBytes`, `factor` × what the last full GC — V8's or its own — left) and runs one
 * regular full GC when it is above (~13 ms on a ~11 MiB live heap). The copy of large objects
 * never reaches it (its old generation stays at 9–13 MiB; its full GCs are V8's, for the
 * external memory); a copy of small objects is held at ~16–18 MiB; a heap whose live size
 * grows so that the limit reaches `ceilingBytes` is left to V8's own limit (live × 2), so this
 * never collects more often than V8 would for a large heap.
 *
 * Measured (Azurite → s3rver, 50,000 × 4 KiB cold copy, floor 16 MiB): 8 full GCs against 2,
 * peak RSS 121 MiB against 146 — but 29.3 CPU s against 26.3: a full GC also deoptimizes the
 * code that embedded objects it freed (`--trace-deopt`: "embedded weak objects cleared", ~20
 * functions per GC), which then runs unoptimized, and through Node's slow API paths, until
 * V8 optimizes it again. (Before `onAbort`, dataplane/abort.ts, the copy promoted ~6 KiB per
 * object and this ran 40–46 full GCs for +25–30 % CPU.) So the sync command runs it only when
 * asked (`lowerOldGenerationLimit` in cli/commands/sync.ts): memory for CPU.
 */
export class OldGenerationLimit {
  private readonly floor: number;
  private readonly factor: number;
  private readonly ceiling: number;
  private readonly intervalMs: number;
  private readonly used: () => number;
  private readonly gc: () => void;
  /** What the last full GC left (an estimate of the live old generation). */
  private live = 0;
  private timer: NodeJS.Timeout | undefined;
  private observer: PerformanceObserver | undefined;
  /** Full GCs this ran. */
  collections = 0;

  constructor(opts: OldGenerationLimitOptions = {}) {
    this.floor = opts.floorBytes ?? 16 * 2 ** 20;
    this.factor = opts.factor ?? 1.5;
    this.ceiling = opts.ceilingBytes ?? 64 * 2 ** 20;
    this.intervalMs = opts.intervalMs ?? 100;
    this.used = opts.used ?? oldGenerationUsed;
    if (opts.gc) this.gc = opts.gc;
    else {
      const collect = exposedGc();
      this.gc = () => collect({ type: "major", execution: "sync" });
    }
  }

  /** The old generation's size, in bytes, above which `tick` collects. */
  get limit(): number {
    return Math.max(this.floor, this.factor * this.live);
  }

  start(): void {
    if (this.timer) return;
    // V8's own full GCs tell the live size too (a `gc` entry of kind major).
    this.observer = new PerformanceObserver((list) => {
      // A `gc` entry's detail (`{ kind, flags }`) is not in @types/node's PerformanceEntry.
      const major = list
        .getEntries()
        .some(
          (e) => (e as { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR,
        );
      if (major) this.live = this.used();
    });
    this.observer.observe({ entryTypes: ["gc"] });
    this.timer = setInterval(() => this.tick(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.observer?.disconnect();
    this.observer = undefined;
  }

  /** One look; true when it collected. */
  tick(): boolean {
    const limit = this.limit;
    if (limit >= this.ceiling || this.used() <= limit) return false;
    this.gc();
    this.collections++;
    this.live = this.used();
    return true;
  }
}

export interface ReadBufferScavengerOptions {
  /** Bytes read between two minor GCs (default 16 MiB). */
  everyBytes?: number;
  /** Default: V8's minor GC (a scavenge), exposed as `lastResortGc` exposes the major one. */
  gc?: () => void;
  /** Default: `setImmediate` (the GC runs after the read that crossed the mark, not inside it). */
  defer?: (run: () => void) => void;
}

/**
 * Runs a minor GC (a scavenge) every `everyBytes` read off the network, so the Buffers that
 * carried the data are freed while the allocator can still hand their memory out again.
 *
 * Why (measured 2026-12-07, Node 24.21, 2 cores; docs/dataplane.md, "The sync process"): each
 * chunk a sync reads arrives in memory of its own — node:http's parser copies every body chunk
 * into a new Buffer — and is dead a moment later (hashed, copied into a part or written on).
 * But its memory is freed only when V8 collects its Buffer, and a sync allocates so little on
 * the JS heap that V8 collects rarely: 5 scavenges and 2 full GCs while a copy of 2 × 100 MiB
 * ran, so 60–80 MiB of dead chunks piled up between GCs, malloc's heap grew to hold them (437
 * `brk` extensions) and the kernel faulted in and zeroed every new page — a quarter of that
 * copy's client CPU was page faults under the parser's copy. Two concurrent 100 MiB GETs
 * hashed as they arrive, with the transport's own read buffer: 0.50–0.54 CPU s and ~24,000
 * page faults; with a scavenge every 16 MiB 0.30–0.37 CPU s and 8,000–12,000 (every 4 MiB no
 * better). A scavenge of a sync's young generation takes ~1 ms and, unlike a full GC, throws
 * away no optimized code; a chunk in flight survives one (it is read and dead within a
 * millisecond or two, so rarely two, which would promote it).
 *
 * Only in the sync command's own process (cli/commands/sync.ts), fed by the data plane's
 * transient reads (`setReadObserver`, dataplane/reads.ts: the stores' sockets, the copies of
 * lent chunks an SDK route is given); `SPILLWAY_SYNC_SCAVENGE_EVERY_MIB=0` turns it off.
 */
export class ReadBufferScavenger {
  private readonly every: number;
  private readonly gc: () => void;
  private readonly defer: (run: () => void) => void;
  private since = 0;
  private pending = false;
  /** Minor GCs this ran. */
  collections = 0;

  constructor(opts: ReadBufferScavengerOptions = {}) {
    this.every = opts.everyBytes ?? 16 * 2 ** 20;
    this.defer = opts.defer ?? ((run) => setImmediate(run).unref());
    if (opts.gc) this.gc = opts.gc;
    else {
      const collect = exposedGc();
      this.gc = () => collect({ type: "minor", execution: "sync" });
    }
  }

  /** `bytes` more were read. */
  readonly note = (bytes: number): void => {
    this.since += bytes;
    if (this.since < this.every || this.pending) return;
    this.pending = true;
    this.defer(() => {
      this.pending = false;
      this.since = 0;
      this.gc();
      this.collections++;
    });
  };
}
