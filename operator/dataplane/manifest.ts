/**
 * The manifest Spillway keeps beside the data at a destination (`.spillway/manifest.json`):
 * one entry per object — key, size, content sha256, the source's etag it was copied from and
 * the destination's etag it was written as. A rerun compares the source listing with it
 * instead of listing or HEADing the destination. The dataset version is its digest.
 *
 * Format (one JSON document, also readable line by line): a header line
 * `{"format":…,"version":…,"objects":N,…,"entries":[`, then one entry per line
 * `["key",size,"sha256","srcEtag","dstEtag"],` in `compareKeys` order, then `]}`. The sync
 * engine streams it (manifest-stream.ts); `loadManifest` reads a whole one into a Map.
 */
import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import { type ObjectStore, StoreError } from "./store.ts";

/** Keys under this prefix belong to Spillway, never to the dataset. */
export const META_PREFIX = ".spillway/";
export const MANIFEST_FORMAT = "spillway.dev/manifest/v1";

export interface ManifestEntry {
  size: number;
  sha256: string;
  srcEtag: string;
  dstEtag: string;
}

export type Manifest = Map<string, ManifestEntry>;

export interface ShardSpec {
  index: number;
  count: number;
}

export function manifestKey(shard?: ShardSpec): string {
  return shard && shard.count > 1
    ? `${META_PREFIX}shards/${shard.count}/${shard.index}/manifest.json`
    : `${META_PREFIX}manifest.json`;
}

/** The single-file journal of syncs before journal segments: still read on resume and removed. */
export function journalKey(shard?: ShardSpec): string {
  return shard && shard.count > 1
    ? `${META_PREFIX}shards/${shard.count}/${shard.index}/journal.json`
    : `${META_PREFIX}journal.json`;
}

/** Where a segment of an interrupted sync's journal is kept (`<dir><seq>.json`). */
export function journalDir(shard?: ShardSpec): string {
  return shard && shard.count > 1
    ? `${META_PREFIX}shards/${shard.count}/${shard.index}/journal/`
    : `${META_PREFIX}journal/`;
}

/**
 * The one key order of Spillway: UTF-8 byte order (= Unicode code point order), the order S3
 * and Azure list in. The file store's walk produces it, manifests are sorted by it and the
 * digest is taken in it, so a sync can merge a listing with the manifest as two sorted streams.
 *
 * JavaScript's `<` compares UTF-16 code units; it agrees with code point order except where a
 * surrogate (part of an astral character, U+10000 and up) meets a code unit U+E000–U+FFFF:
 * UTF-16 puts the astral character first, UTF-8 last. Only there is this slower path taken.
 */
export function compareKeys(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800 && y >= 0xd800) return codePointRank(x) < codePointRank(y) ? -1 : 1;
    return x < y ? -1 : 1;
  }
  return a.length < b.length ? -1 : 1;
}

/** Surrogates (astral characters) above U+E000–U+FFFF, each group in its own order. */
function codePointRank(unit: number): number {
  return unit <= 0xdfff ? unit + 0x2000 : unit - 0x800;
}

/**
 * `sha256:<hex>` over the `key \t size \t sha256` lines in key order: equal content ⇔ equal
 * version. Key order is `compareKeys` (UTF-8 byte order). Versions computed before it was
 * (UTF-16 order) are the same for every key set except one holding two keys that differ first
 * where one has an astral character (emoji, rare CJK) and the other a character U+E000–U+FFFF
 * (private use, CJK compatibility, full-width forms): such a dataset gets a new version once.
 */
export function manifestDigest(m: Manifest): string {
  const h = createHash("sha256");
  for (const key of [...m.keys()].sort(compareKeys)) {
    const e = m.get(key)!;
    h.update(`${key}\t${e.size}\t${e.sha256}\n`);
  }
  return `sha256:${h.digest("hex")}`;
}

export function serialiseManifest(m: Manifest, extra: Record<string, unknown> = {}): Buffer {
  const keys = [...m.keys()].sort(compareKeys);
  const lines = keys.map((k) => {
    const e = m.get(k)!;
    return JSON.stringify([k, e.size, e.sha256, e.srcEtag, e.dstEtag]);
  });
  const head = JSON.stringify({
    format: MANIFEST_FORMAT,
    version: manifestDigest(m),
    objects: keys.length,
    ...extra,
  });
  // One object per line keeps diffs and partial reads of big manifests readable.
  return Buffer.from(`${head.slice(0, -1)},"entries":[\n${lines.join(",\n")}\n]}\n`);
}

/**
 * The entries of a journal segment, encoded as each copy finishes into one buffer that grows as
 * needed (off V8's heap), not held as objects until the segment is written: a checkpoint's
 * worth of entries (up to 2 s of copies) lived through the young generation's collections and
 * was promoted, old-generation memory freed only at a full GC, which a long copy of small
 * objects then reached sooner. A segment (`take`) is a manifest document whose rows are in the
 * order they finished, read back by `parseManifest` as any manifest; it carries `"journal": true`
 * and no `version` (a version is the digest in key order, and a segment is not a dataset).
 */
export class JournalLines {
  private bytes: Buffer;
  private fill = 0;
  private rows = 0;

  constructor(initialBytes = 64 * 1024) {
    this.bytes = Buffer.allocUnsafeSlow(initialBytes);
  }

  /** The entries added and not yet taken. */
  get size(): number {
    return this.rows;
  }

  add(key: string, e: ManifestEntry): void {
    this.append(`${JSON.stringify([key, e.size, e.sha256, e.srcEtag, e.dstEtag])},\n`);
    this.rows++;
  }

  /**
   * Takes the entries added so far as a segment's document (`lines`: its rows, for `restore`
   * when its write fails). The buffer is kept for the next ones.
   */
  take(): { document: Buffer; lines: Buffer; rows: number } | undefined {
    if (this.rows === 0) return undefined;
    const head = JSON.stringify({ format: MANIFEST_FORMAT, journal: true, objects: this.rows });
    const prefix = Buffer.from(`${head.slice(0, -1)},"entries":[\n`);
    const document = Buffer.concat([
      prefix,
      this.bytes.subarray(0, this.fill - 2), // the last row's ",\n"
      Buffer.from("\n]}\n"),
    ]);
    const taken = { document, lines: document.subarray(prefix.length, document.length - 4), rows: this.rows };
    this.fill = 0;
    this.rows = 0;
    return taken;
  }

  /** Puts back the rows of a segment whose write failed, before any added since (which win). */
  restore(taken: { lines: Buffer; rows: number }): void {
    const later = Buffer.from(this.bytes.subarray(0, this.fill));
    this.fill = 0;
    this.appendBytes(taken.lines);
    this.append(",\n");
    this.appendBytes(later);
    this.rows += taken.rows;
  }

  private append(line: string): void {
    const need = Buffer.byteLength(line);
    this.reserve(need);
    this.fill += this.bytes.write(line, this.fill);
  }

  private appendBytes(b: Buffer): void {
    this.reserve(b.length);
    this.fill += b.copy(this.bytes, this.fill);
  }

  private reserve(need: number): void {
    if (this.fill + need <= this.bytes.length) return;
    const grown = Buffer.allocUnsafeSlow(Math.max(this.bytes.length * 2, this.fill + need));
    this.bytes.copy(grown, 0, 0, this.fill);
    this.bytes = grown;
  }
}

export function parseManifest(text: string): Manifest {
  const doc = JSON.parse(text) as { format?: string; entries?: unknown[] };
  if (doc.format !== MANIFEST_FORMAT || !Array.isArray(doc.entries))
    throw new Error(`not a ${MANIFEST_FORMAT} document`);
  const m: Manifest = new Map();
  for (const row of doc.entries) {
    const [key, size, sha256, srcEtag, dstEtag] = row as [string, number, string, string, string];
    if (typeof key !== "string" || typeof size !== "number" || typeof sha256 !== "string") continue;
    m.set(key, { size, sha256, srcEtag: String(srcEtag ?? ""), dstEtag: String(dstEtag ?? "") });
  }
  return m;
}

export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c as Uint8Array));
  return Buffer.concat(chunks);
}

/**
 * Reads `stream` into `buf`, which it must fill exactly: an object (or a range of one) read into
 * a buffer of its known size. More or fewer bytes mean the source changed while it was read
 * (Transient: the caller's retry reads it again).
 */
export async function readStreamInto(stream: Readable, buf: Buffer, key: string): Promise<Buffer> {
  let fill = 0;
  for await (const c of stream as AsyncIterable<Uint8Array>) {
    if (fill + c.length > buf.length) {
      stream.destroy();
      throw new StoreError("Transient", `${key}: source changed size while it was read`);
    }
    buf.set(c, fill);
    fill += c.length;
  }
  if (fill !== buf.length) throw new StoreError("Transient", `${key}: source changed size while it was read`);
  return buf;
}

/** Loads a manifest; undefined when absent. An unreadable one counts as absent (everything is rechecked). */
export async function loadManifest(
  store: ObjectStore,
  key: string,
  signal?: AbortSignal,
): Promise<Manifest | undefined> {
  let text: string;
  try {
    text = (await readAll(await store.read(key, signal ? { signal } : {}))).toString("utf8");
  } catch (e) {
    if (e instanceof StoreError && e.code === "NotFound") return undefined;
    throw e;
  }
  try {
    return parseManifest(text);
  } catch {
    return undefined;
  }
}

export async function saveManifest(
  store: ObjectStore,
  key: string,
  m: Manifest,
  extra: Record<string, unknown> = {},
  signal?: AbortSignal,
): Promise<void> {
  await store.put(key, serialiseManifest(m, extra), {
    contentType: "application/json",
    ...(signal ? { signal } : {}),
  });
}

/** FNV-1a over the key's UTF-8 bytes: a stable, well-spread shard assignment. */
export function shardOf(key: string, count: number): number {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(key, "utf8")) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % count;
}

/**
 * After every worker of a sharded sync succeeded: merges the N shard manifests into the main
 * manifest and returns the dataset version. Throws when a shard's manifest is missing.
 */
export async function mergeShardManifests(
  store: ObjectStore,
  count: number,
  signal?: AbortSignal,
): Promise<string> {
  // A streaming k-way merge (manifest-stream.ts, which imports this module): memory does not
  // grow with the shards' object count.
  const { mergeShardManifestStreams } = await import("./manifest-stream.ts");
  return mergeShardManifestStreams(store, count, signal);
}
