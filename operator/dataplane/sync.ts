/**
 * The sync engine: makes a destination hold what a source holds, moving only new or changed
 * objects, and records the result in a manifest beside the data.
 *
 * - Listing is streamed page by page; each object is decided against the manifest as it
 *   arrives, so the destination is neither listed nor HEADed on a rerun.
 * - No per-object state: the committed manifest is read as a stream and merged with the
 *   listing (both in `compareKeys` order); the new manifest is written in key order to a temp
 *   file as objects are decided and uploaded at the end; `verify: "list"` and `delete` merge
 *   the destination listing the same way. What is held is bounded by `streamLimits` (keys
 *   listed out of order, undecided objects), not by the object count (manifest-stream.ts).
 * - Data buffers come from one byte budget of `concurrency × partSize`: memory is bounded
 *   whatever the object count or size. A large object is read as one stream, hashed in order,
 *   and its parts are uploaded in parallel while the next ones are read.
 * - Integrity: sha256 computed while streaming, checked against the source's own sha256 when it
 *   carries one, stored as destination metadata and in the manifest; every part/put carries an
 *   MD5 the store checks; `verify: "content"` re-reads the destination.
 * - Crash safety: objects become visible only when complete (atomic put / multipart commit);
 *   completed copies are checkpointed to journal segments (the copies since the last
 *   checkpoint each), so a rerun after a kill resumes; the
 *   manifest is committed last, and only when nothing failed; `delete` runs only then.
 */
import { createHash } from "node:crypto";
import { Transform } from "node:stream";
import {
  compareKeys,
  JournalLines,
  journalDir,
  journalKey,
  loadManifest,
  type Manifest,
  type ManifestEntry,
  META_PREFIX,
  manifestKey,
  readAll,
  readStreamInto,
  type ShardSpec,
  shardOf,
} from "./manifest.ts";
import {
  DEFAULT_STREAM_LIMITS,
  KeyCursor,
  ManifestReader,
  ReorderQueue,
  type Row,
  type Slot,
  SortedManifestWriter,
  type StreamLimits,
} from "./manifest-stream.ts";
import { DEFAULT_RETRY, type RetryPolicy, withRetry } from "./retry.ts";
import {
  type AbandonedUploadResult,
  normaliseKey,
  type ObjectInfo,
  type ObjectStore,
  type PartReceipt,
  StoreError,
} from "./store.ts";

export const DEFAULT_CONCURRENCY = 8;
export const DEFAULT_PART_SIZE = 8 * 1024 * 1024;
/**
 * Objects up to this size go in one streamed request (rclone's S3 upload_cutoff is 200 MiB
 * too); larger ones in parallel parts. One request spares the store reassembling parts (on
 * s3rver a full rewrite) and the client a round trip per part; parts win once one stream's
 * pace, not the per-request cost, is what limits.
 */
export const DEFAULT_UPLOAD_CUTOFF = 200 * 1024 * 1024;

export interface SyncOptions {
  /** Objects (and parts) transferred at once; default 8. */
  concurrency?: number;
  /** Part size for multipart uploads and the unit of the memory budget; default 8 MiB. */
  partSize?: number;
  /**
   * Objects above the part size and up to this size are streamed in one request (when the
   * destination can: `putStream`, up to its `maxPutSize`); larger ones go in parts. Default
   * 200 MiB; 0 sends everything above the part size in parts.
   */
  uploadCutoff?: number;
  /** Delete destination objects missing from the source, only after a sync with no error. */
  delete?: boolean;
  /** Decide and report, write nothing. */
  dryRun?: boolean;
  /** Only keys with shardOf(key, count) === index. */
  shard?: ShardSpec;
  /**
   * Extra checks of objects the manifest says are current: "list" lists the destination and
   * compares sizes and etags; "content" re-reads and hashes them. Default "none", which
   * becomes "list" for the first sync after one that did not end cleanly (see `verify` in
   * the summary).
   */
  verify?: "none" | "list" | "content";
  signal?: AbortSignal;
  onProgress?: (p: SyncProgress) => void;
  progressIntervalMs?: number;
  /** How often completed copies are checkpointed to the journal; default 2 s. */
  checkpointIntervalMs?: number;
  /**
   * Uploads that killed syncs left in this sync's key space (S3 multipart uploads, file-store
   * temp files) are discarded at its start once untouched for this long before it (default
   * 10 min, as for temp files): a live writer's upload is never that old.
   */
  abandonedAfterMs?: number;
  retry?: RetryPolicy;
  /**
   * Consecutive failed object copies (each after its retries, no success between them) that
   * stop the sync: the store is down, not one object. Default max(16, 2 × concurrency); a
   * source object gone since the listing (NotFound) or changed (PreconditionFailed) does not
   * count.
   */
  breakerFailures?: number;
  /**
   * Bounds (entries) of the streaming merge's side tables and reorder queue; the defaults keep
   * them to a few MiB whatever the object count. For tests.
   */
  streamLimits?: Partial<StreamLimits>;
  /** Called for each retried request (no secrets in the error messages). */
  onRetry?: (what: string, error: unknown, attempt: number, delayMs: number) => void;
}

export interface SyncProgress {
  phase: "syncing" | "deleting" | "committing" | "done";
  /** True once the source listing finished: totals are final from then on. */
  listingDone: boolean;
  objectsSeen: number;
  objectsToCopy: number;
  bytesToCopy: number;
  objectsCopied: number;
  bytesCopied: number;
  objectsSkipped: number;
  objectsFailed: number;
  bytesPerSecond: number;
  /** Seconds left, once the listing is done and a rate is known. */
  etaSeconds?: number;
}

export interface Tally {
  objects: number;
  bytes: number;
}

export interface SyncSummary {
  source: string;
  destination: string;
  dryRun: boolean;
  /** Objects that were (or, in a dry run, would be) copied. */
  planned: Tally;
  copied: Tally;
  skipped: Tally;
  failed: Tally;
  deleted: Tally;
  /**
   * Source keys that cannot be a destination key (`..`/`.`/empty segments, a leading `/`, a
   * backslash, NUL): never copied, listed in `errors`. They do not fail the sync — a foreign
   * bucket holding one such key must not block a dataset forever — but they are reported.
   */
  rejected: Tally;
  /** The first errors, one line each, no secrets. */
  errors: { key: string; message: string }[];
  /** Digest of the committed manifest; absent when the sync did not complete. */
  version?: string;
  complete: boolean;
  aborted: boolean;
  durationMs: number;
  /** Highest number of data-buffer bytes held at once (the memory bound at work). */
  peakBufferBytes: number;
  /**
   * The check of unchanged objects this sync made: the requested one, or "list" when "none"
   * was requested but the previous sync had not ended cleanly (its journal was found).
   */
  verify: "none" | "list" | "content";
  /**
   * Why the sync stopped before the end of its listing, when it did: `breakerFailures` object
   * copies in a row failed (each after its retries) with no success between them — a store
   * that went away mid-sync. Without it a dead store cost every remaining object its full
   * retry schedule (hours for a large dataset). What finished is journaled; a rerun resumes.
   */
  stopped?: string;
  /** Uploads killed syncs left in this sync's key space, discarded at its start (`abandonedAfterMs`). */
  abortedUploads: number;
  /** That clean-up's failures (they never fail the sync): how many, and the first one. */
  uploadCleanupErrors?: { count: number; first: string };
}

/** A FIFO byte budget: the only source of data buffers, so memory is bounded by its capacity. */
export class ByteBudget {
  private used = 0;
  peak = 0;
  private readonly waiters: { n: number; resolve: () => void }[] = [];
  constructor(readonly capacity: number) {}
  async acquire(n: number): Promise<number> {
    const want = Math.min(Math.max(n, 0), this.capacity);
    if (this.waiters.length === 0 && this.used + want <= this.capacity) {
      this.take(want);
      return want;
    }
    await new Promise<void>((resolve) => this.waiters.push({ n: want, resolve }));
    return want;
  }
  release(n: number): void {
    this.used -= n;
    while (this.waiters.length > 0 && this.used + this.waiters[0]!.n <= this.capacity) {
      const w = this.waiters.shift()!;
      this.take(w.n);
      w.resolve();
    }
  }
  private take(n: number) {
    this.used += n;
    if (this.used > this.peak) this.peak = this.used;
  }
}

/**
 * Reusable data buffers, in power-of-two size classes from 4 KiB, holding at most `capacity`
 * bytes idle (the byte budget's capacity: what the sync may hold anyway).
 *
 * Why: every small object was read into a fresh buffer. Buffers of 4 KiB and more are not
 * carved from Node's shared pool; each one is a new external allocation, and V8 answers a fast
 * churn of external memory with extra full GCs — about a quarter of the client's CPU in a cold
 * copy of 200 × 1 MiB. A buffer goes back to the pool only after the request that used it
 * succeeded (its bytes are on the wire and answered); after a failure it is left to the GC, so
 * a request still writing from a destroyed socket never shares memory with the next object.
 */
export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private idle = 0;
  constructor(readonly capacity: number) {}
  /** A buffer of exactly `size` bytes (a view of a pooled slab; contents undefined). */
  take(size: number): Buffer {
    if (size === 0) return Buffer.alloc(0);
    const cls = sizeClass(size);
    const slab = this.free.get(cls)?.pop();
    if (slab) {
      this.idle -= cls;
      return slab.subarray(0, size);
    }
    return Buffer.allocUnsafeSlow(cls).subarray(0, size);
  }
  /** Returns a buffer `take` gave out, once nothing uses it any more. */
  give(buf: Buffer): void {
    const slab = Buffer.from(buf.buffer, buf.byteOffset, buf.buffer.byteLength - buf.byteOffset);
    const cls = slab.length;
    if (buf.byteOffset !== 0 || cls === 0 || cls !== sizeClass(cls)) return; // not one of ours
    if (this.idle + cls > this.capacity) return;
    const list = this.free.get(cls) ?? [];
    if (list.length === 0) this.free.set(cls, list);
    list.push(slab);
    this.idle += cls;
  }
}

function sizeClass(size: number): number {
  return Math.max(4096, 2 ** Math.ceil(Math.log2(size)));
}

class Semaphore {
  private free: number;
  private readonly waiters: (() => void)[] = [];
  constructor(n: number) {
    this.free = n;
  }
  async acquire(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return;
    }
    await new Promise<void>((r) => this.waiters.push(r));
  }
  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.free++;
  }
}

const MAX_ERRORS_REPORTED = 20;

function isUnchanged(obj: ObjectInfo, entry: ManifestEntry | undefined): entry is ManifestEntry {
  if (!entry || entry.size !== obj.size) return false;
  if (obj.sha256 && entry.sha256) return obj.sha256 === entry.sha256;
  return entry.srcEtag !== "" && entry.srcEtag === obj.etag;
}

/**
 * Discards the uploads killed syncs left in this sync's key space — data keys (never
 * `.spillway/`) of its shard — untouched since `before`: an incomplete S3 multipart upload is
 * invisible, but its parts are kept and billed. Runs beside the sync; never fails it.
 */
async function abortAbandonedUploads(
  dst: ObjectStore,
  before: number,
  shard: ShardSpec | undefined,
  signal: AbortSignal | undefined,
): Promise<Pick<SyncSummary, "abortedUploads" | "uploadCleanupErrors">> {
  let first: string | undefined;
  const owns = (key: string) => {
    if (key.startsWith(META_PREFIX) || (shard && shardOf(key, shard.count) !== shard.index)) return false;
    try {
      return normaliseKey(key) === key; // a key no sync writes is not this sync's
    } catch {
      return false;
    }
  };
  const onError = (_what: string, e: unknown) => {
    first ??= (e as Error).message ?? String(e);
  };
  let r: AbandonedUploadResult | undefined;
  try {
    r = await dst.abortAbandonedUploads?.({
      before: new Date(before),
      owns,
      onError,
      ...(signal ? { signal } : {}),
    });
  } catch (e) {
    onError("clean-up", e);
    r = { aborted: 0, failed: 1 };
  }
  if (!r) return { abortedUploads: 0 };
  return {
    abortedUploads: r.aborted,
    ...(r.failed > 0 ? { uploadCleanupErrors: { count: r.failed, first: first ?? "unknown error" } } : {}),
  };
}

/** Syncs `src` into `dst`. Throws only for errors that stop the whole sync (bad input, manifest I/O). */
export async function syncStores(
  src: ObjectStore,
  dst: ObjectStore,
  options: SyncOptions = {},
): Promise<SyncSummary> {
  const started = Date.now();
  const concurrency = Math.max(1, Math.floor(options.concurrency ?? DEFAULT_CONCURRENCY));
  const basePartSize = Math.max(1, Math.floor(options.partSize ?? DEFAULT_PART_SIZE));
  const uploadCutoff = Math.max(0, Math.floor(options.uploadCutoff ?? DEFAULT_UPLOAD_CUTOFF));
  const policy = options.retry ?? DEFAULT_RETRY;
  const signal = options.signal;
  const shard = options.shard && options.shard.count > 1 ? options.shard : undefined;
  const requestedVerify = options.verify ?? "none";
  const dryRun = options.dryRun ?? false;
  const budget = new ByteBudget(concurrency * Math.max(basePartSize, dst.capabilities.minPartSize));
  const buffers = new BufferPool(budget.capacity);

  const retry = <T>(what: string, fn: () => Promise<T>) =>
    withRetry(fn, {
      policy,
      ...(signal ? { signal } : {}),
      onRetry: (e, attempt, delay) => options.onRetry?.(what, e, attempt, delay),
    });

  // The first contact is retried like every other call: a store answering 500 while it
  // (re)starts is transient; a missing bucket or bad credentials are not, and fail at once.
  // The source's first listing page is requested at once — on a no-op sync, waiting for it is
  // most of the time — and the checks of both stores go meanwhile (each one round trip). The
  // page is used only after both checks passed; a failed check's error is the one reported.
  const stopListing = new AbortController();
  const listSignal = signal ? AbortSignal.any([signal, stopListing.signal]) : stopListing.signal;
  const listing = src.list({ signal: listSignal })[Symbol.asyncIterator]();
  const firstPage = listing.next();
  firstPage.catch(() => {}); // awaited below; not an unhandled rejection meanwhile
  // What the destination holds: the committed manifest, read as a stream and merged with the
  // listing (a cursor, not a map), overlaid with the journal of an interrupted run (held in
  // memory on resume only: it is what that run finished). A shard starts from the main
  // manifest when it has none of its own. Both are requested with the checks, not after them
  // (a round trip less before the first copy); when a check fails, its error is the one
  // reported and these answers are dropped.
  const limits: StreamLimits = { ...DEFAULT_STREAM_LIMITS, ...options.streamLimits };
  const mKey = manifestKey(shard);
  const readOptions = { retry: policy, ...(signal ? { signal } : {}) };
  const held = Promise.all([
    ManifestReader.open(dst, mKey, readOptions),
    readJournal(dst, shard, retry, signal),
  ]);
  held.catch(() => {}); // awaited below, after the checks
  try {
    const checks = await Promise.allSettled([
      retry("check source", () => src.check(signal, "read")),
      retry("check destination", () => dst.check(signal, "write")),
    ]);
    for (const c of checks) if (c.status === "rejected") throw c.reason;
  } catch (e) {
    stopListing.abort(); // no listing retries left running after a sync that did not start
    held.then(
      ([r]) => r?.close(),
      () => {},
    );
    throw e;
  }
  const [ownReader, journal] = await held;
  let reader = ownReader;
  const ownManifest = reader !== undefined;
  if (!reader && shard) reader = await ManifestReader.open(dst, manifestKey(), readOptions);
  const fromMain = !ownManifest && shard !== undefined;
  const committedRows = async function* (): AsyncGenerator<Row> {
    if (!reader) return;
    for await (const row of reader.rows())
      if (!fromMain || shardOf(row[0], shard!.count) === shard!.index) yield row;
  };
  const known = new KeyCursor<ManifestEntry>(committedRows(), limits.sideTable);
  const journaled = journal.entries;

  // A journal means the previous sync did not end cleanly: interrupted, objects failed, or a
  // store error. Its records may claim writes the destination no longer holds (a store that
  // lost acknowledged writes when it crashed, as Azurite does when killed before it persists
  // its metadata; a bucket restored from a backup). So the first sync after such an end also
  // checks the destination listing (`verify: "list"`): one listing, then objects that vanished
  // or changed are copied again. A clean history keeps `none`'s cost: no listing.
  const hadJournal = journal.keys.length > 0;
  const verify = requestedVerify === "none" && hadJournal ? "list" : requestedVerify;
  // The destination listing, merged as a second cursor (a key it does not answer is copied).
  const dstRows = async function* (): AsyncGenerator<[string, { size: number; etag: string }]> {
    for await (const o of dst.list(signal ? { signal } : {})) {
      if (o.key.startsWith(META_PREFIX)) continue;
      if (shard && shardOf(o.key, shard.count) !== shard.index) continue;
      yield [o.key, { size: o.size, etag: o.etag }];
    }
  };
  const dstListed = verify === "list" ? new KeyCursor(dstRows(), limits.sideTable) : undefined;

  // The new manifest: written in key order to a temp file as objects are decided (listing
  // order restored by the reorder queue), hashed on the way for the version.
  const writer = await SortedManifestWriter.create({ discard: dryRun, stragglers: limits.stragglers });
  const queue = new ReorderQueue(limits.reorder, (key, entry) => {
    if (entry) writer.add(key, entry);
  });

  const run = async (): Promise<SyncSummary> => {
    const s = {
      seen: 0,
      planned: { objects: 0, bytes: 0 },
      copied: { objects: 0, bytes: 0 },
      skipped: { objects: 0, bytes: 0 },
      failed: { objects: 0, bytes: 0 },
      deleted: { objects: 0, bytes: 0 },
      rejected: { objects: 0, bytes: 0 },
      bytesMoved: 0,
    };
    const errors: { key: string; message: string }[] = [];
    let listingDone = false;
    let phase: SyncProgress["phase"] = "syncing";

    const progress = (): SyncProgress => {
      const secs = Math.max((Date.now() - started) / 1000, 0.001);
      const rate = s.bytesMoved / secs;
      const left = s.planned.bytes - s.bytesMoved;
      return {
        phase,
        listingDone,
        objectsSeen: s.seen,
        objectsToCopy: s.planned.objects,
        bytesToCopy: s.planned.bytes,
        objectsCopied: s.copied.objects,
        bytesCopied: s.bytesMoved,
        objectsSkipped: s.skipped.objects,
        objectsFailed: s.failed.objects,
        bytesPerSecond: rate,
        ...(listingDone && rate > 0 ? { etaSeconds: Math.max(0, left / rate) } : {}),
      };
    };
    const interval = options.progressIntervalMs ?? 250;
    const ticker = options.onProgress
      ? setInterval(() => options.onProgress!(progress()), interval)
      : undefined;

    // The breaker: failed copies in a row (see `stopped`). A source object that vanished or
    // changed since the listing is that object's story, not the store's.
    const asked = options.breakerFailures;
    const breakerAt = asked !== undefined && asked >= 1 ? Math.floor(asked) : Math.max(16, 2 * concurrency);
    let failedInARow = 0;
    let stopped: string | undefined;
    const copyFailed = (e: unknown) => {
      if (e instanceof StoreError && (e.code === "NotFound" || e.code === "PreconditionFailed")) return;
      if (++failedInARow >= breakerAt && stopped === undefined)
        stopped = `stopped after ${failedInARow} object copies in a row failed (the last: ${(e as Error).message ?? String(e)}); finished objects are journaled, rerun to resume`;
    };
    const fail = (key: string, size: number, e: unknown) => {
      s.failed.objects++;
      s.failed.bytes += size;
      if (errors.length < MAX_ERRORS_REPORTED)
        errors.push({ key, message: (e as Error).message ?? String(e) });
    };

    // Journal: the copies finished since the last checkpoint go out as one new segment
    // (`journalDir`/<seq>.json) every interval (never concurrently with itself); nothing grows
    // with the object count between checkpoints but those copies, kept as encoded rows
    // (`JournalLines`). A segment that failed to write is folded into the next one.
    const pending = new JournalLines();
    let journalSeq = journal.nextSeq;
    let segmentsWritten = 0;
    let journalWrite: Promise<void> = Promise.resolve();
    const writeJournal = () => {
      if (dryRun) return journalWrite;
      const segment = pending.take();
      if (!segment) return journalWrite;
      const key = segmentKey(shard, journalSeq++);
      // Not bound to `signal`: an aborted sync still journals what it finished, so a rerun resumes.
      journalWrite = journalWrite
        .then(() =>
          withRetry(() => dst.put(key, segment.document, { contentType: "application/json" }), {
            policy: { ...policy, attempts: 3 },
          }),
        )
        .then(() => {
          segmentsWritten++;
        })
        .catch(() => {
          // Retried at the next checkpoint; the data itself is safe.
          pending.restore(segment);
        });
      return journalWrite;
    };
    const checkpointer = dryRun ? undefined : setInterval(writeJournal, options.checkpointIntervalMs ?? 2000);

    const copy = async (obj: ObjectInfo, key: string): Promise<ManifestEntry> => {
      const size = obj.size;
      const partSize = Math.max(
        basePartSize,
        dst.capabilities.minPartSize,
        Math.ceil(size / dst.capabilities.maxParts),
      );
      if (size <= partSize && size <= dst.capabilities.maxPutSize) {
        const held = await budget.acquire(size);
        try {
          const buf = await readExactly(src, key, size, signal, undefined, undefined, buffers);
          const sha256 = createHash("sha256").update(buf).digest("hex");
          checkSourceHash(obj, key, sha256);
          const r = await retry(`put ${key}`, () =>
            dst.put(key, buf, {
              sha256,
              ...(obj.md5 ? { md5: obj.md5 } : {}),
              ...(signal ? { signal } : {}),
            }),
          );
          buffers.give(buf); // only after success: see BufferPool
          s.bytesMoved += size;
          return { size, sha256, srcEtag: obj.etag, dstEtag: r.etag };
        } finally {
          budget.release(held);
        }
      }
      if (dst.putStream && size <= uploadCutoff && size <= dst.capabilities.maxPutSize)
        return copyStreamed(obj, key, dst.putStream.bind(dst));
      return copyInParts(obj, key, partSize);
    };

    /**
     * A mid-sized object in one streamed request: read once, hashed (sha256) on the way through,
     * never held whole; the stream's window counts against the byte budget as one part.
     * Integrity: the sha256 is checked against the source's recorded one and recorded; a source
     * MD5 goes as Content-MD5 and must equal the MD5 the store reports (a mismatch deletes the
     * object and fails this attempt, so the manifest never records it); a source sha256 is S3's
     * payload hash, which S3 checks before the object becomes visible. With neither, the bytes
     * are not hashed twice (MD5 costs more CPU than SHA-256 here): the sha256 carried end to end
     * and `verify: "content"` are the check, as for rclone without a source hash.
     */
    const copyStreamed = async (
      obj: ObjectInfo,
      key: string,
      putStream: NonNullable<ObjectStore["putStream"]>,
    ): Promise<ManifestEntry> => {
      const size = obj.size;
      const held = await budget.acquire(Math.min(size, basePartSize));
      try {
        const source = await src.read(key, { ifMatch: obj.etag, ...(signal ? { signal } : {}) });
        const sha = createHash("sha256");
        let seen = 0;
        const changed = () => new StoreError("Transient", `${key}: source changed size while it was read`);
        const hashing = new Transform({
          transform(chunk: Buffer, _enc, done) {
            seen += chunk.length;
            if (seen > size) return done(changed());
            sha.update(chunk);
            done(null, chunk);
          },
          flush(done) {
            done(seen === size ? null : changed());
          },
        });
        source.on("error", (e) => hashing.destroy(e));
        hashing.on("error", () => source.destroy());
        source.pipe(hashing);
        let sha256: string | undefined;
        const digest = () => {
          if (seen !== size || !hashing.writableFinished) return undefined;
          sha256 ??= sha.digest("hex");
          return sha256;
        };
        // Not retried here: a stream cannot be replayed. A failed request fails this attempt, and
        // the per-object retry (in `handle`) reads the source again.
        const r = await putStream(key, hashing, size, {
          ...(obj.sha256 ? { sha256: obj.sha256 } : { sha256After: digest }),
          ...(obj.md5 ? { md5: obj.md5 } : {}),
          ...(signal ? { signal } : {}),
        }).catch((e: unknown) => {
          source.destroy();
          throw e;
        });
        const got = digest();
        if (got === undefined) throw changed();
        if ((obj.sha256 && obj.sha256 !== got) || (obj.md5 && r.md5 && r.md5 !== obj.md5)) {
          await dst.delete(key).catch(() => {});
          throw new StoreError(
            "Integrity",
            `${key}: the data stored differs from the source's recorded hash`,
          );
        }
        s.bytesMoved += size;
        return { size, sha256: got, srcEtag: obj.etag, dstEtag: r.etag };
      } finally {
        budget.release(held);
      }
    };

    /**
     * A large object: its parts are read with ranged GETs and uploaded in parallel (one stream
     * per part — a single stream is capped by one connection and, on the emulators, by one
     * request's pace), each part holding its share of the byte budget until it is both uploaded
     * and hashed. The sha256 is computed in part order: parts read early wait, holding their
     * budget, for the ones before them. Budget is acquired in part order (the budget is FIFO),
     * so the lowest unhashed part always has its buffer and the frontier always advances.
     * Every ranged read is conditional on the listed etag: a source replaced mid-copy fails the
     * read (PreconditionFailed) instead of mixing two versions.
     */
    const copyInParts = async (obj: ObjectInfo, key: string, partSize: number): Promise<ManifestEntry> => {
      const size = obj.size;
      const upload = await retry(`start ${key}`, () =>
        dst.startUpload(key, {
          partSize,
          ...(obj.sha256 ? { sha256: obj.sha256 } : {}),
          ...(signal ? { signal } : {}),
        }),
      );
      interface Part {
        n: number;
        held: number;
        /** Released when 0: one hold for the upload, one for the hash. */
        holds: number;
        released: boolean;
        buf?: Buffer;
      }
      const parts = new Map<number, Part>();
      const release = (p: Part) => {
        if (!p.released) {
          p.released = true;
          p.buf = undefined;
          budget.release(p.held);
        }
      };
      const drop = (p: Part) => {
        if (--p.holds > 0) return;
        // Both the upload and the hash are done with it (a failure releases without `drop`,
        // leaving the buffer to the GC).
        if (p.buf) buffers.give(p.buf);
        release(p);
      };
      const hash = createHash("sha256");
      let hashed = 0; // parts 1..hashed are in the hash
      const advanceHash = () => {
        for (let p = parts.get(hashed + 1); p?.buf; p = parts.get(hashed + 1)) {
          hash.update(p.buf);
          hashed++;
          drop(p);
        }
      };
      const receipts: PartReceipt[] = [];
      const inflight = new Set<Promise<void>>();
      let failure: unknown;
      let moved = 0;
      const count = Math.max(1, Math.ceil(size / partSize));
      try {
        for (let n = 1; n <= count && failure === undefined; n++) {
          const start = (n - 1) * partSize;
          const end = Math.min(size, start + partSize);
          const part: Part = { n, held: await budget.acquire(end - start), holds: 2, released: false };
          parts.set(n, part);
          if (failure !== undefined) break;
          const task = (async () => {
            const buf = await retry(`read ${key} part ${n}`, () =>
              readExactly(src, key, end - start, signal, { start, end }, obj.etag, buffers),
            );
            if (part.released) return; // the copy already failed
            part.buf = buf;
            advanceHash();
            const r = await retry(`upload ${key} part ${n}`, () => upload.uploadPart(n, buf, signal));
            receipts.push(r);
            s.bytesMoved += buf.length;
            moved += buf.length;
            drop(part);
          })()
            .catch((e: unknown) => {
              failure ??= e;
              // The copy is lost: free every part's budget now, or parts waiting for the hash
              // frontier (which will not advance) and the loop's next acquire would wait forever.
              for (const p of parts.values()) release(p);
            })
            .finally(() => inflight.delete(task));
          inflight.add(task);
        }
        while (inflight.size > 0) await Promise.race(inflight);
        if (failure !== undefined) throw failure;
        if (hashed !== count)
          throw new StoreError("Other", `${key}: ${count - hashed} parts were never hashed`);
        const sha256 = hash.digest("hex");
        checkSourceHash(obj, key, sha256);
        const r = await retry(`commit ${key}`, () =>
          upload.commit(receipts, { sha256, ...(signal ? { signal } : {}) }),
        );
        return { size, sha256, srcEtag: obj.etag, dstEtag: r.etag };
      } catch (e) {
        await Promise.allSettled([...inflight]);
        for (const p of parts.values()) release(p);
        s.bytesMoved -= moved;
        await upload.abort();
        throw e;
      }
    };

    const verifyContent = async (key: string, entry: ManifestEntry): Promise<boolean> => {
      try {
        const stream = await dst.read(key, signal ? { signal } : {});
        const h = createHash("sha256");
        let n = 0;
        for await (const c of stream as AsyncIterable<Uint8Array>) {
          h.update(c);
          n += c.length;
        }
        return n === entry.size && h.digest("hex") === entry.sha256;
      } catch (e) {
        if (e instanceof StoreError && e.code === "NotFound") return false;
        throw e;
      }
    };

    const slots = new Semaphore(concurrency);
    const tasks = new Set<Promise<void>>();
    /**
     * `entry`: what the destination holds now; `current`: whether the source still matches it.
     * Settles the object's slot in every case: with the new entry, the previous one (the
     * destination still holds it) or none.
     */
    const handle = async (
      obj: ObjectInfo,
      key: string,
      entry: ManifestEntry | undefined,
      current: boolean,
      slot: Slot,
    ) => {
      let result = entry;
      try {
        if (entry && current && verify === "content" && (await verifyContent(key, entry))) {
          s.skipped.objects++;
          s.skipped.bytes += obj.size;
          return;
        }
        s.planned.objects++;
        s.planned.bytes += obj.size;
        if (dryRun) return;
        // A source that changes mid-read or a transient failure of a stream is retried whole.
        const e = await withRetry(() => copy(obj, key), {
          policy: { ...policy, attempts: Math.min(policy.attempts, 3) },
          ...(signal ? { signal } : {}),
          retryable: (err) => err instanceof StoreError && (err.retryable || err.code === "Integrity"),
        });
        result = e;
        pending.add(key, e);
        s.copied.objects++;
        s.copied.bytes += obj.size;
        failedInARow = 0;
      } catch (e) {
        fail(key, obj.size, e);
        if (!signal?.aborted) copyFailed(e);
      } finally {
        queue.settle(slot, result);
      }
    };

    let aborted = false;
    try {
      for (let step = await firstPage; !step.done; step = await listing.next()) {
        if (stopped !== undefined) {
          stopListing.abort();
          void listing.return?.(undefined).catch(() => {});
          break;
        }
        const obj = step.value;
        if (obj.key.startsWith(META_PREFIX)) continue;
        if (shard && shardOf(obj.key, shard.count) !== shard.index) continue;
        s.seen++;
        let key: string;
        try {
          key = normaliseKey(obj.key);
        } catch (e) {
          s.rejected.objects++;
          s.rejected.bytes += obj.size;
          if (errors.length < MAX_ERRORS_REPORTED)
            errors.push({ key: JSON.stringify(obj.key), message: (e as Error).message });
          continue;
        }
        // A key listed out of order is answered by the cursors' side tables, or is new (copied).
        const committedEntry = await known.take(key);
        const j = journaled?.get(key);
        if (j) journaled!.delete(key);
        const entry = j ?? committedEntry;
        const listed = dstListed ? await dstListed.take(key) : undefined;
        if (queue.full) await queue.room();
        const slot = queue.push(key);
        const current = isUnchanged(obj, entry);
        if (
          current &&
          verify !== "content" &&
          (!dstListed || (listed && listed.size === entry.size && listed.etag === entry.dstEtag))
        ) {
          s.skipped.objects++;
          s.skipped.bytes += obj.size;
          queue.settle(slot, entry);
        } else {
          await slots.acquire();
          if (stopped !== undefined) {
            // The slot was waited for while the breaker tripped: this object is not tried.
            slots.release();
            queue.settle(slot, entry);
            continue;
          }
          const t = handle(obj, key, entry, current, slot).finally(() => {
            slots.release();
            tasks.delete(t);
          });
          tasks.add(t);
        }
      }
      listingDone = stopped === undefined;
    } catch (e) {
      if (signal?.aborted) aborted = true;
      else {
        await Promise.allSettled([...tasks]);
        if (checkpointer) clearInterval(checkpointer);
        if (ticker) clearInterval(ticker);
        await writeJournal();
        throw e;
      }
    }
    await Promise.allSettled([...tasks]);
    if (checkpointer) clearInterval(checkpointer);
    aborted ||= signal?.aborted ?? false;

    let version: string | undefined;
    let complete = false;
    try {
      if (!dryRun && (aborted || s.failed.objects > 0 || stopped !== undefined)) {
        await writeJournal();
      } else if (!dryRun) {
        // A failure from here on (the destination listing for --delete, the manifest upload)
        // journals this run's copies first, so the rerun does not redo them.
        await (async () => {
          const written = await writer.finish();
          if (options.delete) {
            phase = "deleting";
            await deleteExtra(
              dst,
              writer,
              shard,
              limits.sideTable,
              async (o) => {
                try {
                  await retry(`delete ${o.key}`, () => dst.delete(o.key, signal));
                  s.deleted.objects++;
                  s.deleted.bytes += o.size;
                } catch (e) {
                  fail(o.key, 0, e);
                }
              },
              signal,
            );
          }
          phase = "committing";
          version = written.version;
          // Nothing to write when the new manifest is the committed one: no journal, no copy,
          // every committed entry carried over (none left behind by the merge) in key order.
          const changed =
            !ownManifest ||
            hadJournal ||
            s.copied.objects > 0 ||
            known.outOfOrder > 0 ||
            reader?.truncated === true ||
            (await known.anyLeft());
          if (changed)
            await retry("write manifest", () =>
              writer.upload(
                dst,
                mKey,
                { source: src.displayUri, ...(shard ? { shard } : {}) },
                { retry: { ...policy, attempts: 1 }, ...(signal ? { signal } : {}) },
              ),
            );
        })().catch(async (e: unknown) => {
          await writeJournal();
          throw e;
        });
        await journalWrite;
        if (hadJournal || segmentsWritten > 0)
          await dropJournal(dst, shard, journal.keys.includes(journalKey(shard)), retry, signal);
        complete = s.failed.objects === 0;
      } else {
        complete = s.failed.objects === 0;
      }
    } finally {
      phase = "done";
      if (ticker) clearInterval(ticker);
      options.onProgress?.(progress());
    }

    return {
      source: src.displayUri,
      destination: dst.displayUri,
      dryRun,
      planned: s.planned,
      copied: s.copied,
      skipped: s.skipped,
      failed: s.failed,
      deleted: s.deleted,
      rejected: s.rejected,
      errors,
      ...(version && !dryRun ? { version } : {}),
      ...(stopped !== undefined ? { stopped } : {}),
      complete: complete && !aborted && stopped === undefined,
      aborted,
      durationMs: Date.now() - started,
      peakBufferBytes: budget.peak,
      verify,
      ...((await cleanup) ?? { abortedUploads: 0 }),
    };
  };

  // Beside the sync, from its start: what killed syncs left staged in its key space.
  const cleanup = dryRun
    ? undefined
    : abortAbandonedUploads(dst, started - (options.abandonedAfterMs ?? 10 * 60_000), shard, signal);
  try {
    return await run();
  } finally {
    // A sync that failed mid-listing leaves no listing request behind (its page read ahead).
    stopListing.abort();
    await Promise.allSettled([known.close(), dstListed?.close(), cleanup]);
    reader?.close();
    await writer.dispose();
  }
}

type Retry = <T>(what: string, fn: () => Promise<T>) => Promise<T>;

function segmentKey(shard: ShardSpec | undefined, seq: number): string {
  return `${journalDir(shard)}${String(seq).padStart(10, "0")}.json`;
}

/**
 * The journal an interrupted sync left: its segments in order (a later one wins for a key),
 * over the single-file journal of earlier engines. Held in memory — only on a resume, and it is
 * what the interrupted runs finished, not the whole manifest.
 */
async function readJournal(
  dst: ObjectStore,
  shard: ShardSpec | undefined,
  retry: Retry,
  signal: AbortSignal | undefined,
): Promise<{ entries: Manifest | undefined; keys: string[]; nextSeq: number }> {
  const dir = journalDir(shard);
  const [segments, legacy] = await Promise.all([
    retry("list journal", async () => {
      const keys: string[] = [];
      for await (const o of dst.list({ prefix: dir, ...(signal ? { signal } : {}) }))
        if (o.key.startsWith(dir) && o.key.endsWith(".json")) keys.push(o.key);
      return keys.sort(compareKeys); // zero-padded sequence numbers
    }),
    retry("read journal", () => loadManifest(dst, journalKey(shard), signal)),
  ]);
  let entries: Manifest | undefined = legacy;
  for (const key of segments) {
    const seg = await retry("read journal", () => loadManifest(dst, key, signal));
    if (!seg) continue;
    entries ??= new Map();
    for (const [k, e] of seg) entries.set(k, e);
  }
  const last = segments.at(-1);
  const lastSeq = last ? Number.parseInt(last.slice(dir.length), 10) : 0;
  return {
    entries,
    keys: legacy ? [journalKey(shard), ...segments] : segments,
    nextSeq: (Number.isFinite(lastSeq) ? lastSeq : 0) + 1,
  };
}

/**
 * Removes the journal after the manifest was committed: every segment there is (listed again,
 * so a segment whose write was reported failed but landed goes too) and the single-file one.
 */
/**
 * Deletes the journal: its segments, listed (a write this run counted as failed may have
 * landed), and the single-file journal of older versions when there was one at the start.
 * The segments go 8 at a time except the last, deleted alone after them: a filesystem-backed
 * store (s3rver) removes a directory that a delete leaves empty, and two deletes emptying it
 * together make one fail (HTTP 500) — a retry with backoff at the end of every sync.
 */
async function dropJournal(
  dst: ObjectStore,
  shard: ShardSpec | undefined,
  legacy: boolean,
  retry: Retry,
  signal: AbortSignal | undefined,
): Promise<void> {
  const dir = journalDir(shard);
  const keys = await retry("list journal", async () => {
    const keys: string[] = [];
    for await (const o of dst.list({ prefix: dir, ...(signal ? { signal } : {}) }))
      if (o.key.startsWith(dir)) keys.push(o.key);
    return keys;
  });
  const drop = (k: string) => retry("drop journal", () => dst.delete(k, signal));
  const last = keys.pop();
  if (legacy) keys.push(journalKey(shard));
  for (let i = 0; i < keys.length; i += 8) await Promise.all(keys.slice(i, i + 8).map(drop));
  if (last !== undefined) await drop(last);
}

/**
 * `--delete`: the destination listing merged with the new manifest (sorted, from the local
 * file). An object is deleted only when the manifest certainly lacks it: for a key in listing
 * order the merge is exact; a key the destination lists out of order (the manifest cursor may
 * have passed it) is checked by a full scan of the manifest file, batched.
 */
async function deleteExtra(
  dst: ObjectStore,
  manifest: SortedManifestWriter,
  shard: ShardSpec | undefined,
  batch: number,
  remove: (o: ObjectInfo) => Promise<void>,
  signal: AbortSignal | undefined,
): Promise<void> {
  const rows = manifest.rows();
  let head: Row | undefined;
  let started = false;
  const advance = async () => {
    const prev = head?.[0];
    const r = await rows.next();
    head = r.done ? undefined : r.value;
    // The file is written in strict key order; anything else must stop the deletions.
    if (head && prev !== undefined && compareKeys(head[0], prev) <= 0)
      throw new Error(
        `the new manifest is not in key order at ${JSON.stringify(head[0])}: nothing more deleted`,
      );
  };
  const inManifest = async (key: string) => {
    if (!started) {
      started = true;
      await advance();
    }
    while (head && compareKeys(head[0], key) < 0) await advance();
    return head?.[0] === key;
  };
  let unsure = new Map<string, ObjectInfo>();
  const resolveUnsure = async () => {
    if (unsure.size === 0) return;
    const check = unsure;
    unsure = new Map();
    for await (const [k] of manifest.rows()) check.delete(k);
    for (const o of check.values()) await remove(o);
  };
  let prev: string | undefined;
  try {
    for await (const o of dst.list(signal ? { signal } : {})) {
      if (o.key.startsWith(META_PREFIX)) continue;
      if (shard && shardOf(o.key, shard.count) !== shard.index) continue;
      if (prev === undefined || compareKeys(o.key, prev) > 0) {
        prev = o.key;
        if (!(await inManifest(o.key))) await remove(o);
      } else {
        unsure.set(o.key, o);
        if (unsure.size >= batch) await resolveUnsure();
      }
    }
    await resolveUnsure();
  } finally {
    await rows.return(undefined);
  }
}

function checkSourceHash(obj: ObjectInfo, key: string, sha256: string): void {
  if (obj.sha256 && obj.sha256 !== sha256)
    throw new StoreError("Integrity", `${key}: content sha256 differs from the source's recorded sha256`);
}

/**
 * Reads a whole (small) object, or the range `[start, end)` of one, into one buffer of exactly
 * that many bytes; with `etag`, only from that version of the object.
 */
async function readExactly(
  src: ObjectStore,
  key: string,
  size: number,
  signal?: AbortSignal,
  range?: { start: number; end: number },
  etag?: string,
  buffers?: BufferPool,
): Promise<Buffer> {
  const stream = await src.read(key, {
    ...(signal ? { signal } : {}),
    ...(range ? { range } : {}),
    ...(etag ? { ifMatch: etag } : {}),
  });
  if (size === 0) {
    const rest = await readAll(stream);
    if (rest.length !== 0) throw new StoreError("Transient", `${key}: source changed size while it was read`);
    return Buffer.alloc(0);
  }
  return readStreamInto(stream, buffers ? buffers.take(size) : Buffer.allocUnsafe(size), key);
}
