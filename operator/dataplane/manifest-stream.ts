/**
 * The manifest as streams, so a sync holds no per-object state whatever the object count:
 *
 * - `ManifestReader` reads a stored manifest line by line (the format of `serialiseManifest`:
 *   a header line, one entry per line, `]}`) in windows of ranged reads of one version.
 * - `KeyCursor` merges a sorted stream of rows with a listing as a cursor ("take key k"); rows
 *   it passed, and rows its stream held out of order, wait in a bounded side table for a key
 *   that arrives out of order. A row evicted from it counts as absent, which every caller
 *   treats the safe way (recopy, keep).
 * - `ReorderQueue` turns copies finishing in any order back into listing order, with room for
 *   a bounded number of undecided objects (the listing waits when it is full).
 * - `SortedManifestWriter` writes the new manifest to a local temp file in key order, hashing
 *   it on the fly for the version; rows that come out of order (the source listed them out of
 *   order) are kept aside, bounded (spilled to sorted runs), and merged in by a final pass;
 *   the document is then uploaded streamed from the file.
 *
 * Key order is `compareKeys` (UTF-8 byte order) throughout.
 */
import { createHash } from "node:crypto";
import { writeSync } from "node:fs";
import { type FileHandle, mkdtemp, open, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  compareKeys,
  MANIFEST_FORMAT,
  type Manifest,
  type ManifestEntry,
  manifestKey,
  parseManifest,
  readStreamInto,
} from "./manifest.ts";
import { LentChunks } from "./reads.ts";
import { DEFAULT_RETRY, isTransient, type RetryPolicy, withRetry } from "./retry.ts";
import { type ObjectStore, type PartReceipt, StoreError } from "./store.ts";

export type Row = [key: string, entry: ManifestEntry];

/** Bounds of the streaming merge (entries held at most); tests make them small. */
export interface StreamLimits {
  /** Rows a cursor keeps for keys that arrive out of order. */
  sideTable: number;
  /** Objects listed but not yet decided (copies in flight and the ones behind them). */
  reorder: number;
  /** Out-of-order rows the writer holds before spilling them to a sorted run file. */
  stragglers: number;
}

export const DEFAULT_STREAM_LIMITS: StreamLimits = { sideTable: 4096, reorder: 8192, stragglers: 4096 };

interface Line {
  text: string;
  /** Bytes the line took in the stream, its newline included. */
  bytes: number;
}

/** Splits a byte stream into UTF-8 lines (without the `\n`); the last one may lack it. */
async function* splitLines(stream: AsyncIterable<Uint8Array>): AsyncGenerator<Line> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for await (const chunk of stream) {
    const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let start = 0;
    for (let nl = buf.indexOf(10, start); nl !== -1; nl = buf.indexOf(10, start)) {
      if (pending.length > 0) {
        pending.push(buf.subarray(start, nl));
        const whole = Buffer.concat(pending);
        yield { text: whole.toString("utf8"), bytes: whole.length + 1 };
        pending = [];
        pendingBytes = 0;
      } else {
        yield { text: buf.toString("utf8", start, nl), bytes: nl - start + 1 };
      }
      start = nl + 1;
    }
    if (start < buf.length) {
      // Copied: the chunk's memory may be reused by the stream after this iteration.
      pending.push(Buffer.from(buf.subarray(start)));
      pendingBytes += buf.length - start;
    }
  }
  if (pendingBytes > 0) {
    const whole = Buffer.concat(pending);
    yield { text: whole.toString("utf8"), bytes: whole.length };
  }
}

/** One entry line (`["key",size,"sha256","srcEtag","dstEtag"]` with or without a trailing comma). */
function parseEntryLine(line: string): Row | "skip" | undefined {
  const body = line.endsWith(",") ? line.slice(0, -1) : line;
  if (!body.startsWith("[")) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (!Array.isArray(v)) return undefined;
  const [key, size, sha256, srcEtag, dstEtag] = v as unknown[];
  // The same rows `parseManifest` skips.
  if (typeof key !== "string" || typeof size !== "number" || typeof sha256 !== "string") return "skip";
  return [key, { size, sha256, srcEtag: String(srcEtag ?? ""), dstEtag: String(dstEtag ?? "") }];
}

function entryLine(key: string, e: ManifestEntry): string {
  return JSON.stringify([key, e.size, e.sha256, e.srcEtag, e.dstEtag]);
}

export interface ManifestHeader {
  format: string;
  version?: string;
  objects?: number;
  [field: string]: unknown;
}

export interface ReadOptions {
  signal?: AbortSignal;
  retry?: RetryPolicy;
  /** Bytes per ranged read of the document (default `MANIFEST_READ_WINDOW`); tests make it small. */
  window?: number;
}

/** Bytes of a stored manifest each ranged read brings (a reader holds two such windows). */
export const MANIFEST_READ_WINDOW = 1024 * 1024;
/** The first window: enough for the header (all `replicaVersion` reads) without a whole window. */
const FIRST_WINDOW = 64 * 1024;

/**
 * A stored manifest read line by line. `open` reads only the header; `rows()` yields the
 * entries in stored order (sorted, unless an older engine wrote it in UTF-16 order: callers
 * merge with a `KeyCursor`, which copes). The document is read in windows (`manifestWindows`):
 * ranged reads of the version `open` found, each retried on its own. A document that ends
 * early or has an unreadable line ends the rows there (`truncated`): the rest counts as absent,
 * i.e. is checked again — and so does the rest of one replaced while it was read.
 */
export class ManifestReader {
  truncated = false;

  private constructor(
    readonly header: ManifestHeader,
    private lines: AsyncGenerator<Line> | undefined,
    /** A manifest that is not one entry per line (no engine writes one): read whole. */
    private readonly whole?: Manifest,
  ) {}

  /** Undefined when absent, empty or unreadable (an unreadable manifest counts as absent). */
  static async open(
    store: ObjectStore,
    key: string,
    options: ReadOptions = {},
  ): Promise<ManifestReader | undefined> {
    const signal = options.signal;
    const policy = options.retry ?? DEFAULT_RETRY;
    return withRetry(
      async () => {
        const head = await store.head(key, signal);
        if (!head || head.size === 0) return undefined;
        const lines = splitLines(
          manifestWindows(store, key, head.etag, head.size, options.window ?? MANIFEST_READ_WINDOW, {
            policy,
            ...(signal ? { signal } : {}),
          }),
        );
        try {
          const first = await lines.next();
          if (first.done) return undefined;
          const text = first.value.text;
          if (text.startsWith("{") && text.endsWith('"entries":[')) {
            let header: ManifestHeader;
            try {
              header = JSON.parse(`${text}]}`) as ManifestHeader;
            } catch {
              await lines.return(undefined);
              return undefined;
            }
            if (header.format !== MANIFEST_FORMAT) {
              await lines.return(undefined);
              return undefined;
            }
            return new ManifestReader(header, lines);
          }
          const parts = [text];
          for (let l = await lines.next(); !l.done; l = await lines.next()) parts.push(l.value.text);
          let m: Manifest;
          try {
            m = parseManifest(parts.join("\n"));
          } catch {
            return undefined;
          }
          return new ManifestReader({ format: MANIFEST_FORMAT }, undefined, m);
        } catch (e) {
          await lines.return(undefined);
          throw e;
        }
      },
      {
        policy,
        ...(signal ? { signal } : {}),
        // Replaced between the head and the read: read the new one.
        retryable: (e) => isTransient(e) || isReplaced(e),
      },
    );
  }

  async *rows(): AsyncGenerator<Row> {
    if (this.whole) {
      for (const key of [...this.whole.keys()].sort(compareKeys)) yield [key, this.whole.get(key)!];
      return;
    }
    const lines = this.lines!;
    try {
      for (let r = await lines.next(); !r.done; r = await lines.next()) {
        const line = r.value.text;
        if (line === "") continue;
        if (line === "]}") return;
        const row = parseEntryLine(line);
        if (row === "skip") continue;
        if (!row) {
          this.truncated = true;
          return;
        }
        yield row;
      }
      this.truncated = true; // no closing `]}`
    } catch (e) {
      // Replaced while it was read (another sync committed): what was not read counts as absent.
      if (!isReplaced(e)) throw e;
      this.truncated = true;
    } finally {
      await lines.return(undefined);
    }
  }

  /** Stops reading (the rows were not all consumed). */
  close(): void {
    void this.lines?.return(undefined).catch(() => {});
  }
}

function isReplaced(e: unknown): boolean {
  return e instanceof StoreError && e.code === "PreconditionFailed";
}

/**
 * An object's bytes (`size` of them, version `etag`) as windows of ranged reads, each drained
 * at once into one of two buffers of the reader's own: the window handed out, and the next one,
 * read meanwhile. A window is valid until the next is asked for. Each read is retried on its
 * own (transient errors), conditional on `etag`.
 *
 * Why not one streamed read: a merge consumes the manifest at the listing's pace — minutes for
 * a large dataset — so one response was held open, paused, for the whole listing (servers drop
 * idle connections; a reopen at the last line was not conditional on the version), and each
 * chunk waited in its buffer for the merge. Drained into a window, a chunk lives for a memcpy,
 * every window is of one version, and a failure costs one window. (Written first as the suspect
 * of a no-op's growth with the manifest's size; the cause was the temp file's writes,
 * `RunAppender`, and this made no measurable difference to it.)
 */
async function* manifestWindows(
  store: ObjectStore,
  key: string,
  etag: string,
  size: number,
  window: number,
  options: { policy: RetryPolicy; signal?: AbortSignal },
): AsyncGenerator<Buffer> {
  // Stops the read in flight when the consumer stops early (`return`) or the sync is aborted.
  const stop = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
  const buffers = [Buffer.allocUnsafe(Math.min(window, size)), Buffer.allocUnsafe(Math.min(window, size))];
  const read = (start: number, buf: Buffer): Promise<Buffer> => {
    const end = Math.min(start + buf.length, size);
    return withRetry(
      async () =>
        readStreamInto(await store.read(key, { range: { start, end }, ifMatch: etag, signal }), buf, key),
      { policy: options.policy, signal },
    );
  };
  let at = Math.min(FIRST_WINDOW, window, size);
  let next: Promise<Buffer> | undefined = read(0, buffers[0]!.subarray(0, at));
  let i = 0;
  try {
    while (next) {
      const got = await next;
      i++;
      const start = at;
      at = Math.min(at + window, size);
      next = start < size ? read(start, buffers[i % 2]!.subarray(0, at - start)) : undefined;
      // Never left unhandled when the consumer stops first; awaited (and thrown) otherwise.
      next?.catch(() => {});
      yield got;
    }
  } finally {
    stop.abort();
  }
}

/**
 * A sorted stream of rows merged with a listing in the same order: `take(key)` advances the
 * cursor to `key` and returns its value. Rows passed on the way and rows the stream itself
 * yields out of order go to a side table of at most `sideLimit` rows (oldest evicted), which
 * answers keys that arrive out of order. An evicted row is lost to the merge: callers treat a
 * missing value the safe way.
 */
export class KeyCursor<V> {
  private head: [string, V] | undefined;
  private needRead = true;
  private last: string | undefined;
  private readonly side = new Map<string, V>();
  /** Rows dropped from the side table. */
  evicted = 0;
  /** Rows the stream yielded out of key order. */
  outOfOrder = 0;

  constructor(
    private readonly rows: AsyncIterator<[string, V]>,
    private readonly sideLimit: number,
  ) {}

  private async read(): Promise<void> {
    this.needRead = false;
    for (;;) {
      const r = await this.rows.next();
      if (r.done) {
        this.head = undefined;
        return;
      }
      const [key, value] = r.value;
      if (this.last !== undefined && compareKeys(key, this.last) <= 0) {
        this.outOfOrder++;
        this.stash(key, value);
        continue;
      }
      this.last = key;
      this.head = [key, value];
      return;
    }
  }

  private stash(key: string, value: V): void {
    this.side.delete(key);
    this.side.set(key, value);
    if (this.side.size > this.sideLimit) {
      this.side.delete(this.side.keys().next().value as string);
      this.evicted++;
    }
  }

  /** The value of `key`, taken out of the stream (a second take of it finds nothing). */
  async take(key: string): Promise<V | undefined> {
    if (this.needRead) await this.read();
    while (this.head && compareKeys(this.head[0], key) < 0) {
      this.stash(this.head[0], this.head[1]);
      await this.read();
    }
    if (this.head && this.head[0] === key) {
      const v = this.head[1];
      this.head = undefined;
      this.needRead = true;
      return v;
    }
    const v = this.side.get(key);
    if (v !== undefined) this.side.delete(key);
    return v;
  }

  /** Whether any row was never taken (passed, evicted, or still ahead). */
  async anyLeft(): Promise<boolean> {
    if (this.side.size > 0 || this.evicted > 0) return true;
    if (this.needRead) await this.read();
    return this.head !== undefined;
  }

  async close(): Promise<void> {
    await this.rows.return?.();
  }
}

export interface Slot {
  key: string;
  settled: boolean;
  entry?: ManifestEntry | undefined;
}

/**
 * Listing order restored for results that settle in any order: `push` a slot per listed object,
 * `settle` it with its manifest entry (or none), and entries are emitted in push order as the
 * oldest slots settle. `room()` waits while `limit` slots are unsettled-or-behind: one slow
 * copy at the head holds back the listing, not memory.
 */
export class ReorderQueue {
  private slots: (Slot | undefined)[] = [];
  private first = 0;
  private readonly waiters: (() => void)[] = [];

  constructor(
    private readonly limit: number,
    private readonly emit: (key: string, entry: ManifestEntry | undefined) => void,
  ) {}

  get size(): number {
    return this.slots.length - this.first;
  }

  get full(): boolean {
    return this.size >= this.limit;
  }

  async room(): Promise<void> {
    while (this.size >= this.limit) await new Promise<void>((r) => this.waiters.push(r));
  }

  push(key: string): Slot {
    const slot: Slot = { key, settled: false };
    this.slots.push(slot);
    return slot;
  }

  settle(slot: Slot, entry: ManifestEntry | undefined): void {
    slot.settled = true;
    slot.entry = entry;
    for (let s = this.slots[this.first]; s?.settled; s = this.slots[this.first]) {
      this.slots[this.first++] = undefined;
      this.emit(s.key, s.entry);
    }
    if (this.first > 1024 && this.first * 2 > this.slots.length) {
      this.slots = this.slots.slice(this.first);
      this.first = 0;
    }
    while (this.waiters.length > 0 && this.size < this.limit) this.waiters.shift()!();
  }
}

/**
 * Appends rows in strictly increasing key order to a file as the manifest's entry lines.
 *
 * Lines are encoded into one buffer as they come and written synchronously (`writeSync`, 64 KiB
 * at a time into the page cache: tens of microseconds). Asynchronous writes kept what they
 * wrote alive until their completion ran, and a merge decides a whole listing page — 5,000 rows — in one run of microtasks, during which no
 * I/O completion runs: the page's 64 KiB flushes (as Buffers, as strings, through promises or
 * callbacks, alike) waited through the page's scavenges and were promoted, one manifest's worth
 * of old generation that only a full GC frees, which a no-op resync never runs. A no-op of
 * 200,000 objects (2026-12-07, harness): old generation 7 → 33 MiB and peak RSS 128–132 MiB with
 * asynchronous writes, 7 → 10 MiB and 106 MiB with these.
 */
class RunAppender {
  /** Lines encoded as they come, written 64 KiB at a time. */
  private readonly bytes = Buffer.allocUnsafeSlow(64 * 1024);
  private fill = 0;
  private failed: unknown;
  private readonly digest = createHash("sha256");
  count = 0;
  last: string | undefined;

  constructor(
    private readonly handle: FileHandle,
    /** Manifest entry lines (`,\n` between rows) and the digest; else one row per line. */
    private readonly asManifest: boolean,
  ) {}

  append(key: string, e: ManifestEntry): void {
    if (this.asManifest && this.count > 0) this.put(",\n");
    this.put(entryLine(key, e));
    if (!this.asManifest) this.put("\n");
    if (this.asManifest) this.digest.update(`${key}\t${e.size}\t${e.sha256}\n`);
    this.count++;
    this.last = key;
  }

  /**
   * Encodes `text` into the appender's one buffer at once, so no line is held as a string until
   * a flush (a cold copy fills 64 KiB of lines in ~0.7 s: every line was promoted).
   */
  private put(text: string): void {
    if (this.fill + text.length * 3 > this.bytes.length) {
      this.flush();
      if (text.length * 3 > this.bytes.length) {
        this.write(Buffer.from(text, "utf8"));
        return;
      }
    }
    this.fill += this.bytes.write(text, this.fill, "utf8");
  }

  /** Writes what is buffered; a write error is kept and thrown by `close`. */
  flush(): void {
    if (this.fill === 0) return;
    this.write(this.bytes.subarray(0, this.fill));
    this.fill = 0;
  }

  private write(data: Buffer): void {
    if (this.failed !== undefined) return;
    try {
      for (let done = 0; done < data.length; ) done += writeSync(this.handle.fd, data, done);
    } catch (e) {
      this.failed = e;
    }
  }

  private closed = false;

  async close(): Promise<void> {
    this.flush();
    this.closed = true;
    await this.handle.close();
    if (this.failed !== undefined) throw this.failed;
  }

  /** Closes the file without finishing it (a sync that ended early): no handle left to the GC. */
  async discard(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close().catch(() => {});
  }

  version(): string {
    return `sha256:${this.digest.digest("hex")}`;
  }
}

/**
 * A local file's bytes in chunks read into one buffer, reused for every chunk: a chunk is valid
 * until the next is asked for (`splitLines` copies what it keeps). A read stream allocates a
 * fresh buffer per read — external memory by the tens of MiB for a large manifest, garbage at
 * once but freed only at a GC.
 */
async function* fileChunks(path: string, size = 256 * 1024): AsyncGenerator<Buffer> {
  const fh = await open(path, "r");
  try {
    const buf = Buffer.allocUnsafe(size);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, size, null);
      if (bytesRead === 0) return;
      yield buf.subarray(0, bytesRead);
    }
  } finally {
    await fh.close();
  }
}

/** Rows of a file a `RunAppender` wrote (either layout). */
async function* fileRows(path: string): AsyncGenerator<Row> {
  for await (const l of splitLines(fileChunks(path))) {
    if (l.text === "") continue;
    const row = parseEntryLine(l.text);
    if (row === "skip") continue;
    if (!row) throw new Error(`manifest temp file ${path}: unreadable line`);
    yield row;
  }
}

/**
 * Merges sorted row streams into one strictly increasing stream; of equal keys, the row of the
 * later stream wins (its value is the newer one).
 */
async function* mergeSorted(streams: AsyncIterator<Row>[]): AsyncGenerator<Row> {
  const heads: (Row | undefined)[] = await Promise.all(
    streams.map(async (s) => {
      const r = await s.next();
      return r.done ? undefined : r.value;
    }),
  );
  for (;;) {
    let min: string | undefined;
    for (const h of heads) if (h && (min === undefined || compareKeys(h[0], min) < 0)) min = h[0];
    if (min === undefined) return;
    let winner: Row | undefined;
    for (let i = 0; i < heads.length; i++) {
      const h = heads[i];
      if (h && h[0] === min) {
        winner = h;
        const r = await streams[i]!.next();
        heads[i] = r.done ? undefined : r.value;
      }
    }
    yield winner!;
  }
}

export interface WrittenManifest {
  version: string;
  objects: number;
  bytes: number;
}

/**
 * The new manifest, written to a temp directory under `os.tmpdir()` (removed by `dispose`).
 * `add` takes rows in listing order; rows in key order go straight to the file (hashed as they
 * go), others are held aside (bounded; spilled as sorted runs) and merged in by `finish`.
 * A writer made with `discard` keeps nothing (a dry run).
 */
export class SortedManifestWriter {
  private main: RunAppender | undefined;
  private mainPath = "";
  private stragglers: Row[] = [];
  private readonly runs: string[] = [];
  private runWrites: Promise<void> = Promise.resolve();
  private bodyPath = "";
  private result: WrittenManifest | undefined;
  objects = 0;
  bytes = 0;

  private constructor(
    private readonly dir: string | undefined,
    private readonly stragglerLimit: number,
  ) {}

  static async create(
    options: { discard?: boolean; stragglers?: number } = {},
  ): Promise<SortedManifestWriter> {
    const limit = options.stragglers ?? DEFAULT_STREAM_LIMITS.stragglers;
    if (options.discard) return new SortedManifestWriter(undefined, limit);
    await removeAbandonedTempDirs();
    const dir = await mkdtemp(join(tmpdir(), `${TEMP_PREFIX}${process.pid}-`));
    const w = new SortedManifestWriter(dir, limit);
    w.mainPath = join(dir, "entries");
    w.main = new RunAppender(await open(w.mainPath, "w"), true);
    return w;
  }

  /** Rows that came out of key order so far (in memory or spilled). */
  stragglerCount = 0;

  add(key: string, entry: ManifestEntry): void {
    this.objects++;
    this.bytes += entry.size;
    if (!this.main) return;
    if (this.main.last === undefined || compareKeys(key, this.main.last) > 0) {
      this.main.append(key, entry);
      return;
    }
    this.stragglerCount++;
    this.stragglers.push([key, entry]);
    if (this.stragglers.length >= this.stragglerLimit) this.spill();
  }

  private spill(): void {
    // A stable sort: of equal keys the later row stays later, and wins the merge.
    const rows = this.stragglers.sort((a, b) => compareKeys(a[0], b[0]));
    this.stragglers = [];
    const path = join(this.dir!, `run-${this.runs.length}`);
    this.runs.push(path);
    this.runWrites = this.runWrites.then(async () => {
      const run = new RunAppender(await open(path, "w"), false);
      for (const [k, e] of dedupe(rows)) run.append(k, e);
      await run.close();
    });
  }

  /** Closes the file and merges in the stragglers; the manifest's version and size. */
  async finish(): Promise<WrittenManifest> {
    if (this.result) return this.result;
    if (!this.main) {
      this.result = { version: "", objects: this.objects, bytes: this.bytes };
      return this.result;
    }
    await this.main.close();
    if (this.stragglers.length === 0 && this.runs.length === 0) {
      this.bodyPath = this.mainPath;
      this.result = { version: this.main.version(), objects: this.main.count, bytes: this.bytes };
      return this.result;
    }
    if (this.stragglers.length > 0) this.spill();
    await this.runWrites;
    this.bodyPath = join(this.dir!, "merged");
    const out = new RunAppender(await open(this.bodyPath, "w"), true);
    let bytes = 0;
    for await (const [k, e] of mergeSorted([this.mainPath, ...this.runs].map((p) => fileRows(p)))) {
      out.append(k, e);
      bytes += e.size;
    }
    await out.close();
    await Promise.all([this.mainPath, ...this.runs].map((p) => rm(p, { force: true })));
    this.result = { version: out.version(), objects: out.count, bytes };
    return this.result;
  }

  /** The committed rows, in key order, from the local file (after `finish`). */
  rows(): AsyncGenerator<Row> {
    if (!this.bodyPath) throw new Error("SortedManifestWriter.rows before finish");
    return fileRows(this.bodyPath);
  }

  /** Uploads the manifest document streamed from the file (retried whole: the file replays). */
  async upload(
    store: ObjectStore,
    key: string,
    extra: Record<string, unknown>,
    options: { signal?: AbortSignal; retry?: RetryPolicy } = {},
  ): Promise<void> {
    const r = await this.finish();
    if (!this.bodyPath) return;
    const head = JSON.stringify({
      format: MANIFEST_FORMAT,
      version: r.version,
      objects: r.objects,
      ...extra,
    });
    const prefix = Buffer.from(`${head.slice(0, -1)},"entries":[\n`);
    const suffix = Buffer.from("\n]}\n");
    const size = prefix.length + (await stat(this.bodyPath)).size + suffix.length;
    const path = this.bodyPath;
    // Hashed, sent and split into parts from one reused buffer.
    const chunks = async function* () {
      yield prefix;
      yield* fileChunks(path);
      yield suffix;
    };
    await uploadBody(store, key, chunks, size, options);
  }

  async dispose(): Promise<void> {
    await this.main?.discard();
    if (this.dir) await rm(this.dir, { recursive: true, force: true }).catch(() => {});
  }
}

const TEMP_PREFIX = "spillway-manifest-";
/** A temp dir is abandoned when its process is gone and nothing in it changed for this long. */
const ABANDONED_AFTER_MS = 10 * 60 * 1000;

/**
 * Best effort: removes the temp dirs of syncs that were killed (SIGKILL, OOM) before their
 * `dispose`. A dir is removed only when the pid in its name is not a live process and its
 * files are older than ten minutes, so a live sync's dir (in this process or another sharing
 * the temp dir) is never touched.
 */
export async function removeAbandonedTempDirs(now = Date.now()): Promise<void> {
  let names: string[];
  try {
    names = await readdir(tmpdir());
  } catch {
    return;
  }
  for (const name of names) {
    const pid = /^spillway-manifest-(\d+)-/.exec(name)?.[1];
    if (!pid || Number(pid) === process.pid || isAlive(Number(pid))) continue;
    const dir = join(tmpdir(), name);
    try {
      let newest = (await stat(dir)).mtimeMs;
      for (const f of await readdir(dir)) newest = Math.max(newest, (await stat(join(dir, f))).mtimeMs);
      if (now - newest > ABANDONED_AFTER_MS) await rm(dir, { recursive: true, force: true });
    } catch {
      // Gone meanwhile, or not ours to read: leave it.
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"; // alive, another user's
  }
}

function* dedupe(sorted: Row[]): Generator<Row> {
  for (let i = 0; i < sorted.length; i++) {
    const next = sorted[i + 1];
    if (next && next[0] === sorted[i]![0]) continue; // the later of equal keys wins
    yield sorted[i]!;
  }
}

/**
 * Writes a document of `size` bytes from a replayable source, `chunks` (each valid until the
 * next is asked for): one streamed request of the chunks lent (`LentChunks`) where the store has
 * one (with its sha256 and MD5, which S3 and Azure check), else a multipart upload in small
 * parts (the file store). Never holds the document whole, and leaves no garbage per chunk.
 */
async function uploadBody(
  store: ObjectStore,
  key: string,
  chunks: () => AsyncIterable<Uint8Array>,
  size: number,
  options: { signal?: AbortSignal; retry?: RetryPolicy },
): Promise<void> {
  const signal = options.signal;
  const retry = <T>(fn: () => Promise<T>) =>
    withRetry(fn, { policy: options.retry ?? DEFAULT_RETRY, ...(signal ? { signal } : {}) });
  if (store.putStream && size <= store.capabilities.maxPutSize) {
    const sha = createHash("sha256");
    const md5 = createHash("md5");
    for await (const c of chunks()) {
      sha.update(c);
      md5.update(c);
    }
    const hashes = { sha256: sha.digest("hex"), md5: md5.digest("hex") };
    await retry(() =>
      store.putStream!(key, new LentChunks(chunks), size, {
        ...hashes,
        contentType: "application/json",
        ...(signal ? { signal } : {}),
      }),
    );
    return;
  }
  const partSize = Math.max(
    store.capabilities.minPartSize,
    1024 * 1024,
    Math.ceil(size / store.capabilities.maxParts),
  );
  await retry(async () => {
    const upload = await store.startUpload(key, {
      partSize,
      contentType: "application/json",
      ...(signal ? { signal } : {}),
    });
    try {
      const receipts: PartReceipt[] = [];
      let held: Buffer[] = [];
      let fill = 0;
      const send = async () => {
        receipts.push(await upload.uploadPart(receipts.length + 1, Buffer.concat(held, fill), signal));
        held = [];
        fill = 0;
      };
      for await (const c of chunks()) {
        let chunk = Buffer.from(c.buffer, c.byteOffset, c.byteLength);
        while (chunk.length > 0) {
          const take = Math.min(chunk.length, partSize - fill);
          held.push(Buffer.from(chunk.subarray(0, take))); // `chunks` reuses its buffer
          fill += take;
          chunk = chunk.subarray(take);
          if (fill === partSize) await send();
        }
      }
      if (fill > 0 || receipts.length === 0) await send();
      await upload.commit(receipts, signal ? { signal } : {});
    } catch (e) {
      await upload.abort();
      throw e;
    }
  });
}

/** The header of a stored manifest (its `version`, `objects`), reading nothing more. */
export async function readManifestHeader(
  store: ObjectStore,
  key: string,
  signal?: AbortSignal,
): Promise<ManifestHeader | undefined> {
  const r = await ManifestReader.open(store, key, signal ? { signal } : {});
  r?.close();
  return r?.header;
}

/**
 * The objects and bytes a stored manifest lists, read as a stream (nothing held per row);
 * undefined when it is absent or unreadable, or when it ends early (a damaged document's
 * totals would be wrong).
 */
export async function manifestTotals(
  store: ObjectStore,
  key: string,
  signal?: AbortSignal,
): Promise<{ objects: number; bytes: number; header: ManifestHeader } | undefined> {
  const r = await ManifestReader.open(store, key, signal ? { signal } : {});
  if (!r) return undefined;
  let objects = 0;
  let bytes = 0;
  try {
    for await (const [, e] of r.rows()) {
      objects++;
      bytes += e.size;
    }
  } finally {
    r.close();
  }
  return r.truncated ? undefined : { objects, bytes, header: r.header };
}

/**
 * After every worker of a sharded sync succeeded: a streaming k-way merge of the N shard
 * manifests into the main manifest (one open stream per shard, no shard held whole); returns
 * the dataset version. Throws NotFound when a shard's manifest is missing, before writing.
 */
export async function mergeShardManifestStreams(
  store: ObjectStore,
  count: number,
  signal?: AbortSignal,
): Promise<string> {
  const readers: ManifestReader[] = [];
  const writer = await SortedManifestWriter.create();
  try {
    for (let index = 0; index < count; index++) {
      const r = await ManifestReader.open(store, manifestKey({ index, count }), signal ? { signal } : {});
      if (!r) throw new StoreError("NotFound", `shard ${index}/${count} has no committed manifest`);
      readers.push(r);
    }
    // Each shard's rows are sorted (an older engine's may be in UTF-16 order: the writer puts
    // such rows in place); shards hold disjoint keys.
    for await (const [k, e] of mergeSorted(readers.map((r) => r.rows()))) writer.add(k, e);
    const truncated = readers.findIndex((r) => r.truncated);
    if (truncated >= 0)
      throw new StoreError("Other", `shard ${truncated}/${count}'s manifest is damaged (ends early)`);
    const { version } = await writer.finish();
    await writer.upload(store, manifestKey(), {}, signal ? { signal } : {});
    return version;
  } finally {
    for (const r of readers) r.close();
    await writer.dispose();
  }
}
