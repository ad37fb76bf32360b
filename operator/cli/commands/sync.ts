/**
 * `spillway sync SRC DST`: makes DST hold what SRC holds (azblob://, s3://, file:// URIs),
 * moving only new or changed objects, verified end to end. A progress bar on a terminal,
 * `--json` for a machine-readable summary.
 *
 * Exit codes: 0 complete; 1 some objects failed (the rest is journaled, a rerun resumes);
 * 2 bad input (usage, URI, credentials, missing container/bucket) with one line on stderr and
 * nothing written; 130 interrupted (SIGINT/SIGTERM; finished objects are journaled).
 */
import * as nodeModule from "node:module";
import { PerformanceObserver } from "node:perf_hooks";
import { getHeapSpaceStatistics, setFlagsFromString } from "node:v8";
import { SingleBar } from "cli-progress";
import type { Command } from "commander";
import { credentialsFromEnv } from "../../dataplane/credentials.ts";
import type { ShardSpec } from "../../dataplane/manifest.ts";
import { setReadObserver } from "../../dataplane/reads.ts";
import { openStore, StoreError, type StoreErrorCode } from "../../dataplane/store.ts";
import {
  DEFAULT_CONCURRENCY,
  DEFAULT_PART_SIZE,
  DEFAULT_UPLOAD_CUTOFF,
  type SyncOptions,
  type SyncProgress,
  type SyncSummary,
  syncStores,
} from "../../dataplane/sync.ts";
import { OldGenerationLimit, ReadBufferScavenger } from "../../runtime/memory.ts";

/** Store errors that mean "fix your input", not "try again": exit code 2. */
const INPUT_ERRORS: ReadonlySet<StoreErrorCode> = new Set([
  "InvalidUri",
  "InvalidKey",
  "MissingCredentials",
  "ContainerNotFound",
  "Auth",
]);

class UsageError extends Error {}

const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1e3,
  kb: 1e3,
  kib: 1024,
  m: 1e6,
  mb: 1e6,
  mib: 1024 ** 2,
  g: 1e9,
  gb: 1e9,
  gib: 1024 ** 3,
};

/** "8MiB", "5M", "1048576" → bytes (at least `min`). */
export function parseSize(v: string, what = "--part-size", min = 1): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(v);
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new UsageError(`${what}: not a size: ${v} (e.g. 8MiB)`);
  const n = Math.floor(Number(m[1]) * unit);
  if (n < min) throw new UsageError(`${what} must be at least ${min} byte${min === 1 ? "" : "s"}, got ${v}`);
  return n;
}

/** "i/N" with 0 ≤ i < N. */
export function parseShard(v: string): ShardSpec {
  const m = /^(\d+)\/(\d+)$/.exec(v.trim());
  const index = Number(m?.[1]);
  const count = Number(m?.[2]);
  if (!m || count < 1 || index >= count) throw new UsageError(`--shard wants i/N with 0 ≤ i < N, got ${v}`);
  return { index, count };
}

function positiveInt(what: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 1024)
    throw new UsageError(`${what} must be an integer from 1 to 1024, got ${v}`);
  return n;
}

const mib = (n: number) => (n / 1024 / 1024).toFixed(1);

function progressBar(): { update(p: SyncProgress): void; stop(): void } {
  const bar = new SingleBar(
    {
      format:
        "{bar} {percentage}% | {done}/{total_mib} MiB | objects: {objects} | {rate} MiB/s | ETA {eta_formatted}",
      barsize: 30,
      hideCursor: true,
      etaBuffer: 50,
      stream: process.stderr,
      fps: 5,
    },
    undefined,
  );
  let started = false;
  return {
    update(p) {
      const payload = {
        done: mib(p.bytesCopied),
        total_mib: `${mib(p.bytesToCopy)}${p.listingDone ? "" : "+"}`,
        objects: `${p.objectsCopied}/${p.objectsToCopy}${p.listingDone ? "" : "+"} copied, ${p.objectsSkipped} unchanged${p.objectsFailed ? `, ${p.objectsFailed} failed` : ""}`,
        rate: mib(p.bytesPerSecond),
      };
      // The bar counts bytes; an all-small-object sync still moves, since totals grow with listing.
      const total = Math.max(p.bytesToCopy, 1);
      if (!started) {
        bar.start(total, p.bytesCopied, payload);
        started = true;
      } else {
        bar.setTotal(total);
        bar.update(p.bytesCopied, payload);
      }
    },
    stop() {
      if (started) bar.stop();
    },
  };
}

function humanSummary(s: SyncSummary): string {
  const t = (x: { objects: number; bytes: number }) => `${x.objects} (${mib(x.bytes)} MiB)`;
  const lines = [
    `${s.dryRun ? "would copy" : "copied"} ${t(s.dryRun ? s.planned : s.copied)}, unchanged ${t(s.skipped)}, failed ${t(s.failed)}, deleted ${t(s.deleted)}${s.rejected.objects ? `, rejected ${s.rejected.objects} invalid keys` : ""} in ${(s.durationMs / 1000).toFixed(1)} s`,
  ];
  if (s.version) lines.push(`version ${s.version}`);
  if (s.abortedUploads) lines.push(`aborted ${s.abortedUploads} incomplete uploads left by killed syncs`);
  if (s.uploadCleanupErrors)
    lines.push(
      `clean-up of abandoned uploads: ${s.uploadCleanupErrors.count} failed (${s.uploadCleanupErrors.first})`,
    );
  for (const e of s.errors) lines.push(`  ${e.key}: ${e.message}`);
  if (s.stopped) lines.push(s.stopped);
  if (s.aborted) lines.push("interrupted: finished objects are journaled, rerun to resume");
  else if (!s.complete && !s.dryRun)
    lines.push("incomplete: nothing was deleted and the manifest was not committed; rerun to retry");
  return lines.join("\n");
}

export interface SyncCommandOptions {
  concurrency: string;
  partSize: string;
  uploadCutoff?: string;
  delete?: boolean;
  dryRun?: boolean;
  shard?: string;
  verify: string;
  json?: boolean;
  progress?: boolean;
}

/** The command's action; returns the exit code (kept separate from process state for tests). */
export async function runSync(src: string, dst: string, o: SyncCommandOptions): Promise<number> {
  const ac = new AbortController();
  const interrupt = () => ac.abort();
  process.once("SIGINT", interrupt);
  process.once("SIGTERM", interrupt);
  let bar: ReturnType<typeof progressBar> | undefined;
  try {
    const verify = o.verify;
    if (verify !== "none" && verify !== "list" && verify !== "content")
      throw new UsageError(`--verify wants none, list or content, got ${verify}`);
    const options: SyncOptions = {
      concurrency: positiveInt("--concurrency", o.concurrency),
      partSize: parseSize(o.partSize),
      ...(o.uploadCutoff !== undefined
        ? { uploadCutoff: parseSize(o.uploadCutoff, "--upload-cutoff", 0) }
        : {}),
      delete: o.delete ?? false,
      dryRun: o.dryRun ?? false,
      verify,
      signal: ac.signal,
      ...(o.shard ? { shard: parseShard(o.shard) } : {}),
    };
    // The store SDKs load on first use, below: with V8's compile cache (in the temp dir; a
    // read-only one just leaves it off) a repeated sync — a resync Job, a cron — starts in
    // about two thirds of the time, which is much of a no-op sync's wall clock.
    nodeModule.enableCompileCache?.();
    const credentials = credentialsFromEnv();
    const source = await openStore(src, credentials);
    const destination = await openStore(dst, credentials);
    const showBar = (o.progress ?? true) && !o.json && process.stderr.isTTY === true;
    if (showBar) {
      bar = progressBar();
      const b = bar;
      options.onProgress = (p) => b.update(p);
    }
    const summary = await syncStores(source, destination, options);
    bar?.stop();
    if (o.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
    else process.stderr.write(`${humanSummary(summary)}\n`);
    if (summary.aborted) return 130;
    return summary.complete ? 0 : 1;
  } catch (e) {
    bar?.stop();
    if (ac.signal.aborted) {
      process.stderr.write("spillway sync: interrupted\n");
      return 130;
    }
    const bad = e instanceof UsageError || (e instanceof StoreError && INPUT_ERRORS.has(e.code));
    process.stderr.write(`spillway sync: ${(e as Error).message}\n`);
    return bad ? 2 : 1;
  } finally {
    process.off("SIGINT", interrupt);
    process.off("SIGTERM", interrupt);
  }
}

/** Whether the process was started with V8 flag `flag` (on its command line or in NODE_OPTIONS). */
function startedWith(flag: string, execArgv: readonly string[], env: NodeJS.ProcessEnv): boolean {
  return [...execArgv, ...(env.NODE_OPTIONS ?? "").split(/\s+/)].some((a) => a.startsWith(flag));
}

const MiB = 1024 * 1024;
/** The young generation's semi-space cap when the process was started without one. */
const SEMI_SPACE_CAP_MIB = 16;

/**
 * Stops the young generation of a sync process growing past 16 MiB semi-spaces (unless the
 * process was started with its own `--max-semi-space-size`: the launcher's flags win);
 * `SPILLWAY_SYNC_SEMI_SPACE_CAP_MIB` changes the cap, 0 leaves V8's own sizing. Returns the
 * function that stops it.
 *
 * Why: a sync holds no per-object state (the streaming merge), yet its peak RSS grew with the
 * object count — 135 MiB for a cold copy of 5,000 objects, 300–317 MiB for 50,000. V8 doubles
 * the young generation whenever the bytes that survived scavenges since its last growth exceed
 * its size. A sync's in-flight requests and the listing page being worked through survive every
 * scavenge (~0.3 MiB each time), so any long enough sync grows the semi-spaces to V8's maximum
 * (64 MiB here: `new_space` 32 → 128 MiB at 50,000 objects), and the old generation's limit,
 * which V8 sets to the live size times up to 4 *plus the young generation's size*, grows with
 * it (old space 20 → 85 MiB). 16 MiB is what a 5,000-object sync reaches anyway, so a short
 * sync runs exactly as before and a long one keeps its shape. `--semi-space-growth-factor` is
 * read at each growth, so this can be set at run time, unlike the size flags — here, in the
 * command every sync runs (CLI, worker Job, benchmark), rather than in each Job's NODE_OPTIONS.
 * (Bounding the old generation too with full GCs of the sync's own costs CPU out of proportion
 * to their pauses — see `lowerOldGenerationLimit` below, an opt-in.)
 */
function capYoungGeneration(): () => void {
  const capMiB = Number(process.env.SPILLWAY_SYNC_SEMI_SPACE_CAP_MIB ?? SEMI_SPACE_CAP_MIB);
  if (!(capMiB > 0) || startedWith("--max-semi-space-size", process.execArgv, process.env)) return () => {};
  let growth = 2;
  const check = () => {
    const young = getHeapSpaceStatistics().find((s) => s.space_name === "new_space");
    // `new_space` counts both semi-spaces.
    const want = young && young.space_size >= 2 * capMiB * MiB ? 1 : 2;
    if (want !== growth) {
      growth = want;
      setFlagsFromString(`--semi-space-growth-factor=${growth}`);
    }
  };
  // After each GC: the young generation grows only at a scavenge, and may shrink after a
  // full GC (then it may grow again, up to the cap).
  const observer = new PerformanceObserver(check);
  observer.observe({ entryTypes: ["gc"] });
  return () => {
    observer.disconnect();
    if (growth !== 2) setFlagsFromString("--semi-space-growth-factor=2");
  };
}

/** The old generation's growing factor, as `--heap-growing-percent` (the launcher's flag). */
const HEAP_GROWING_PERCENT = 100;

/**
 * The `--heap-growing-percent` a sync process must set at run time: none when it was started
 * with one (the launcher's flags, a flag on the command line or in NODE_OPTIONS win) or when
 * `SPILLWAY_SYNC_HEAP_GROWING_PERCENT` is 0 (V8's own factor); that variable changes the value.
 */
export function oldGenerationGrowthFlag(
  execArgv: readonly string[],
  env: NodeJS.ProcessEnv,
): string | undefined {
  const percent = Number(env.SPILLWAY_SYNC_HEAP_GROWING_PERCENT ?? HEAP_GROWING_PERCENT);
  if (!(percent > 0) || startedWith("--heap-growing-percent", execArgv, env)) return undefined;
  return `--heap-growing-percent=${Math.floor(percent)}`;
}

/**
 * Sets V8's old-generation growing factor to 2 for a sync run without the launcher's flags
 * (`oldGenerationGrowthFlag`). Why: see `SYNC_NODE_FLAGS` in bin/sync-runtime.mjs — V8's own
 * factor (up to 4) let a long sync's old generation fill with ~70 MiB of garbage between full
 * GCs, so its peak RSS grew with the object count. V8 reads the flag whenever it sets the next
 * limit (after each full GC), so setting it at run time takes effect from the first one.
 * Returns the function that restores V8's own factor.
 */
function limitOldGenerationGrowth(): () => void {
  const flag = oldGenerationGrowthFlag(process.execArgv, process.env);
  if (!flag) return () => {};
  setFlagsFromString(flag);
  return () => setFlagsFromString("--heap-growing-percent=0");
}

/**
 * Opt-in (`SPILLWAY_SYNC_OLD_GENERATION_FLOOR_MIB=<MiB>`, e.g. 16; unset or 0: off): holds a
 * sync's old generation near its live size (`OldGenerationLimit`, runtime/memory.ts) — memory
 * for CPU, for a sync worker whose pod has little memory to spare.
 *
 * A copy of many small objects promotes ~1 KiB per object of state that lives a second or two
 * (the journal's pending entries, listing entries), which V8 lets fill its floor (the
 * launcher's `--initial-old-space-size`) before it collects: peak RSS of a cold copy of
 * 50,000 × 4 KiB 146–150 MiB against ~100 at 5,000 with a 64 MiB floor, ~113 with the
 * launcher's 32 (2026-12-07). With a 16 MiB floor of this limit's: 121 MiB (at 64). Why not
 * by default: each full GC also throws away optimized code that embedded objects the GC freed
 * ("embedded weak objects cleared": ~20 functions per GC, re-optimized after), and Node's fast API calls (socket writes, header encoding) run their slow paths
 * meanwhile — 8 full GCs instead of 2 cost that copy 29.3 CPU s instead of 26.3 (+11 %; the
 * pauses themselves ~0.1 s). Measured 2026-11-22, docs/dataplane.md.
 */
export function lowerOldGenerationLimit(env: NodeJS.ProcessEnv): OldGenerationLimit | undefined {
  const floorMiB = Number(env.SPILLWAY_SYNC_OLD_GENERATION_FLOOR_MIB ?? 0);
  if (!(floorMiB > 0)) return undefined;
  const limit = new OldGenerationLimit({ floorBytes: floorMiB * MiB });
  limit.start();
  return limit;
}

/**
 * A minor GC every `SPILLWAY_SYNC_SCAVENGE_EVERY_MIB` (default 16; 0 or not a number: off) of
 * transient reads — the stores' sockets, the copies of lent chunks an SDK route is given
 * (`setReadObserver`, dataplane/reads.ts; `ReadBufferScavenger`, runtime/memory.ts): the chunks a sync reads are
 * dead a moment later but freed only at a GC, which a sync's small JS heap rarely needs — so tens
 * of MiB of them piled up and malloc's heap grew page by page, each new page faulted in and
 * zeroed. Returns the scavenger (none when off) and the function that stops it.
 */
export function scavengeReadBuffers(env: NodeJS.ProcessEnv): {
  scavenger?: ReadBufferScavenger;
  stop: () => void;
} {
  const everyMiB = Number(env.SPILLWAY_SYNC_SCAVENGE_EVERY_MIB ?? 16);
  if (!(everyMiB > 0)) return { stop: () => {} };
  const scavenger = new ReadBufferScavenger({ everyBytes: everyMiB * MiB });
  setReadObserver(scavenger.note);
  return { scavenger, stop: () => setReadObserver(undefined) };
}

/**
 * Small Buffers get memory of their own, not slices of Node's shared 8 KiB pool
 * (`Buffer.poolSize`, 0 here; `SPILLWAY_SYNC_BUFFER_POOL_BYTES` sets another size, 8192 is
 * Node's). Returns the function that restores the previous size.
 *
 * Why: every small `Buffer.from(string)` and `Buffer.allocUnsafe` of the process is a slice of
 * the current 8 KiB pool slab, and the slab is replaced only once full. A sync makes ~0.8 KiB
 * of them per object — the SigV4 signer turns the canonical request and the string to sign
 * into bytes, MD5s go from hex to bytes — so a slab lives ~10 objects, ~100 ms at a cold
 * copy's pace: longer than two of the ~17 scavenges a second, so every slab was promoted and
 * kept, dead, until a full GC. Measured (2026-12-08, harness, Azurite → s3rver, 50,000 ×
 * 4 KiB): `arrayBuffers` climbed ~0.6 MiB/s, 5 → 12–16 MiB between full GCs (3 full GCs in
 * 65 s), and malloc's heap (`[heap]`) reached 22 MiB; without the pool, `arrayBuffers` stays at
 * 5–7 MiB (one full GC in 63 s), `[heap]` 15 MiB, peak RSS 111 against 113–116 MiB, the same
 * CPU (18.9 s against 18.5–19.9); (a)'s client CPU unchanged too (1.51–1.53 s against
 * 1.50–1.60, three alternating runs each). A fresh small allocation dies young and is freed
 * at the next scavenge.
 */
export function unpoolSmallBuffers(env: NodeJS.ProcessEnv): () => void {
  const size = Number(env.SPILLWAY_SYNC_BUFFER_POOL_BYTES ?? 0);
  const previous = Buffer.poolSize;
  if (!(size >= 0)) return () => {};
  Buffer.poolSize = size;
  return () => {
    Buffer.poolSize = previous;
  };
}

export function register(program: Command): void {
  program
    .command("sync")
    .description(
      "Make DST hold what SRC holds, copying only new or changed objects, verified by sha256.\n" +
        "URIs: azblob://<account>/<container>/<prefix>?endpoint=…&sas=…, " +
        "s3://<bucket>/<prefix>?endpoint=…&region=…, file:///<path>.\n" +
        "Credentials: AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_KEY (or sas=…), " +
        "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.",
    )
    .argument("<src>", "source store URI")
    .argument("<dst>", "destination store URI")
    .option("--concurrency <n>", "objects and parts in flight", String(DEFAULT_CONCURRENCY))
    .option("--part-size <size>", "multipart part size, e.g. 8MiB", `${DEFAULT_PART_SIZE / 1024 / 1024}MiB`)
    .option(
      "--upload-cutoff <size>",
      `objects up to this size are streamed in one request, larger ones in parts (default ${DEFAULT_UPLOAD_CUTOFF / 1024 / 1024}MiB; 0: parts above --part-size)`,
    )
    .option(
      "--delete",
      "delete destination objects missing from the source (only after a sync with no error)",
    )
    .option("--dry-run", "report what would be copied, write nothing")
    .option("--shard <i/N>", "sync only this worker's share of the keys (Indexed Job workers)")
    .option(
      "--verify <mode>",
      "also check unchanged objects: none, list (sizes/etags) or content (sha256)",
      "none",
    )
    .option("--json", "print a JSON summary on stdout instead of the progress bar")
    .option("--no-progress", "no progress bar even on a terminal")
    .action(async (src: string, dst: string, o: SyncCommandOptions) => {
      // Only in the command's own process (not where runSync is called as a function).
      const releaseYoung = capYoungGeneration();
      const releaseOld = limitOldGenerationGrowth();
      const oldLimit = lowerOldGenerationLimit(process.env);
      const scavenging = scavengeReadBuffers(process.env);
      const restorePool = unpoolSmallBuffers(process.env);
      try {
        process.exitCode = await runSync(src, dst, o);
      } finally {
        restorePool();
        scavenging.stop();
        oldLimit?.stop();
        releaseOld();
        releaseYoung();
      }
    });
}
