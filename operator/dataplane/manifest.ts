/**
 * The manifest Spillway keeps beside the data at a destination (`.spillway/manifest.json`):
 * one entry per object — key, size, content sha256, the source's etag it was copied from and
 * the destination's etag it was written as. A rerun compares the source listing with it
 * instead of listing or HEADing the destination. The dataset version is its digest.
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

export function journalKey(shard?: ShardSpec): string {
  return shard && shard.count > 1
    ? `${META_PREFIX}shards/${shard.count}/${shard.index}/journal.json`
    : `${META_PREFIX}journal.json`;
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** `sha256:<hex>` over the sorted `key \t size \t sha256` lines: equal content ⇔ equal version. */
export function manifestDigest(m: Manifest): string {
  const h = createHash("sha256");
  for (const key of [...m.keys()].sort(cmp)) {
    const e = m.get(key)!;
    h.update(`${key}\t${e.size}\t${e.sha256}\n`);
  }
  return `sha256:${h.digest("hex")}`;
}

export function serialiseManifest(m: Manifest, extra: Record<string, unknown> = {}): Buffer {
  const keys = [...m.keys()].sort(cmp);
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
  const merged: Manifest = new Map();
  for (let index = 0; index < count; index++) {
    const m = await loadManifest(store, manifestKey({ index, count }), signal);
    if (!m) throw new StoreError("NotFound", `shard ${index}/${count} has no committed manifest`);
    for (const [k, e] of m) merged.set(k, e);
  }
  await saveManifest(store, manifestKey(), merged, {}, signal);
  return manifestDigest(merged);
}
