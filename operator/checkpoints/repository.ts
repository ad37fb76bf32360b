/**
 * Checkpoints in an object store (see `manifest.ts` for the layout): reading what is
 * committed, writing blobs/manifest/marker in the order that makes a checkpoint appear only
 * when complete, and pruning. Everything here goes through the data plane's `ObjectStore`.
 *
 * Single writer per store prefix: one agent (or one replication) writes a run's prefix at a
 * time. Pruning deletes markers before manifests and blobs last, so a concurrent reader sees
 * a checkpoint either committed and whole, or not at all.
 */
import { createHash } from "node:crypto";
import { type ObjectStore, StoreError } from "../dataplane/store.ts";
import { backoffDelay } from "../runtime/backoff.ts";
import {
  BLOBS_PREFIX,
  blobKey,
  CHECKPOINTS_PREFIX,
  type CheckpointManifest,
  type CommitMarker,
  InvalidManifestError,
  manifestDigest,
  manifestKey,
  markerKey,
  parseCheckpointKey,
  parseManifest,
  parseMarker,
} from "./manifest.ts";

/** What the operator records in TrainingRun status for a committed checkpoint. */
export interface CommittedCheckpoint {
  step: number;
  /** `sha256:<hex>` of the manifest. */
  manifestDigest: string;
  committedAt: string;
  runUid: string;
  name: string;
  totalBytes: number;
  framework: CheckpointManifest["framework"];
  worldSize?: number;
}

export interface LoadedCheckpoint {
  info: CommittedCheckpoint;
  manifest: CheckpointManifest;
  manifestBytes: Buffer;
  markerBytes: Buffer;
}

/** A checkpoint that is not committed, or whose manifest/marker/data fails verification. */
export class CheckpointRejectedError extends Error {
  constructor(
    readonly step: number,
    readonly reason: "NotCommitted" | "InvalidManifest" | "Corrupt",
    message: string,
  ) {
    super(message);
    this.name = "CheckpointRejectedError";
  }
}

/** Retries retryable store errors (throttling, transient) with backoff; others throw at once. */
export async function withRetry<T>(what: string, fn: () => Promise<T>, attempts = 5): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof StoreError) || !e.retryable || i >= attempts) throw e;
      const wait = e.retryAfterMs ?? backoffDelay(i, { baseMs: 200, maxMs: 10_000 });
      await new Promise((r) => setTimeout(r, wait));
      void what;
    }
  }
}

/** Reads a whole object into memory (manifests, markers, chunks: all bounded in size). */
export async function readAll(store: ObjectStore, key: string, limit: number): Promise<Buffer> {
  return withRetry(`read ${key}`, async () => {
    const stream = await store.read(key);
    const parts: Buffer[] = [];
    let n = 0;
    for await (const c of stream) {
      const b = Buffer.isBuffer(c) ? c : Buffer.from(c as Uint8Array);
      n += b.length;
      if (n > limit) {
        stream.destroy();
        throw new CheckpointRejectedError(
          -1,
          "Corrupt",
          `object ${key} is larger than expected (${limit} bytes)`,
        );
      }
      parts.push(b);
    }
    return Buffer.concat(parts, n);
  });
}

/** Reads a chunk blob and checks its size and sha256 against what the manifest says. */
export async function readVerifiedChunk(
  store: ObjectStore,
  chunk: { sha256: string; size: number },
  where: { step: number; file: string; index: number },
): Promise<Buffer> {
  let data: Buffer;
  try {
    data = await readAll(store, blobKey(chunk.sha256), chunk.size);
  } catch (e) {
    if (e instanceof StoreError && e.code === "NotFound") {
      throw new CheckpointRejectedError(
        where.step,
        "Corrupt",
        `step ${where.step}: ${where.file} chunk ${where.index} (blob ${chunk.sha256.slice(0, 12)}…) is missing from the store`,
      );
    }
    if (e instanceof CheckpointRejectedError) {
      throw new CheckpointRejectedError(
        where.step,
        "Corrupt",
        `step ${where.step}: ${where.file} chunk ${where.index} is larger than the manifest's ${chunk.size} bytes`,
      );
    }
    throw e;
  }
  if (data.length !== chunk.size) {
    throw new CheckpointRejectedError(
      where.step,
      "Corrupt",
      `step ${where.step}: ${where.file} chunk ${where.index} is ${data.length} bytes, manifest says ${chunk.size}`,
    );
  }
  const got = createHash("sha256").update(data).digest("hex");
  if (got !== chunk.sha256) {
    throw new CheckpointRejectedError(
      where.step,
      "Corrupt",
      `step ${where.step}: ${where.file} chunk ${where.index} sha256 mismatch (manifest ${chunk.sha256.slice(0, 12)}…, stored data ${got.slice(0, 12)}…)`,
    );
  }
  return data;
}

export interface StepListing {
  /** Steps with a manifest and a marker (not yet verified), newest first. */
  marked: number[];
  /** Steps with objects but no marker: in progress, or abandoned. */
  unmarked: number[];
}

/** Lists the steps present under `checkpoints/`, split by whether they carry a commit marker. */
export async function listSteps(store: ObjectStore): Promise<StepListing> {
  const leaves = new Map<number, Set<string>>();
  for await (const o of store.list({ prefix: CHECKPOINTS_PREFIX })) {
    const k = parseCheckpointKey(o.key);
    if (!k) continue;
    const s = leaves.get(k.step) ?? new Set<string>();
    s.add(k.leaf);
    leaves.set(k.step, s);
  }
  const marked: number[] = [];
  const unmarked: number[] = [];
  for (const [step, s] of leaves) {
    if (s.has("COMMITTED") && s.has("manifest.json")) marked.push(step);
    else unmarked.push(step);
  }
  const desc = (a: number, b: number) => b - a;
  return { marked: marked.sort(desc), unmarked: unmarked.sort(desc) };
}

/**
 * Loads a committed checkpoint's manifest and marker and checks that they agree (the marker
 * names the manifest's digest). Throws CheckpointRejectedError when it is not committed or
 * its manifest is invalid. Data blobs are not read here.
 */
export async function loadCommitted(store: ObjectStore, step: number): Promise<LoadedCheckpoint> {
  let markerBytes: Buffer;
  try {
    markerBytes = await readAll(store, markerKey(step), 64 * 1024);
  } catch (e) {
    if (e instanceof StoreError && e.code === "NotFound") {
      throw new CheckpointRejectedError(
        step,
        "NotCommitted",
        `step ${step} has no commit marker: not committed`,
      );
    }
    throw e;
  }
  let manifestBytes: Buffer;
  try {
    manifestBytes = await readAll(store, manifestKey(step), 64 * 1024 * 1024);
  } catch (e) {
    if (e instanceof StoreError && e.code === "NotFound") {
      throw new CheckpointRejectedError(
        step,
        "InvalidManifest",
        `step ${step} has a commit marker but no manifest`,
      );
    }
    throw e;
  }
  try {
    const marker: CommitMarker = parseMarker(markerBytes, step);
    const digest = manifestDigest(manifestBytes);
    if (digest !== marker.manifestDigest) {
      throw new InvalidManifestError(
        `step ${step}: manifest digest ${digest.slice(0, 19)}… does not match the commit marker's ${marker.manifestDigest.slice(0, 19)}…`,
      );
    }
    const manifest = parseManifest(manifestBytes, step);
    return {
      info: {
        step,
        manifestDigest: digest,
        committedAt: marker.committedAt,
        runUid: manifest.runUid,
        name: manifest.name,
        totalBytes: manifest.totalBytes,
        framework: manifest.framework,
        ...(manifest.worldSize !== undefined ? { worldSize: manifest.worldSize } : {}),
      },
      manifest,
      manifestBytes,
      markerBytes,
    };
  } catch (e) {
    if (e instanceof InvalidManifestError)
      throw new CheckpointRejectedError(step, "InvalidManifest", e.message);
    throw e;
  }
}

export interface CommittedListing {
  /** Committed checkpoints whose manifest and marker verify, newest first. */
  committed: CommittedCheckpoint[];
  /** Steps that carry a marker but failed verification, with why. */
  invalid: Array<{ step: number; reason: string }>;
  /** Steps without a marker (partial uploads). */
  uncommitted: number[];
}

/** Every checkpoint in the store, committed (verified manifest + marker) or not. */
export async function listCheckpoints(store: ObjectStore): Promise<CommittedListing> {
  const { marked, unmarked } = await listSteps(store);
  const committed: CommittedCheckpoint[] = [];
  const invalid: Array<{ step: number; reason: string }> = [];
  for (const step of marked) {
    try {
      committed.push((await loadCommitted(store, step)).info);
    } catch (e) {
      if (!(e instanceof CheckpointRejectedError)) throw e;
      invalid.push({ step, reason: e.message });
    }
  }
  return { committed, invalid, uncommitted: unmarked };
}

/**
 * The newest committed checkpoint (manifest and marker verified; data blobs not read), or
 * undefined when the store holds none. What the operator puts in TrainingRun status.
 */
export async function latestCommitted(store: ObjectStore): Promise<CommittedCheckpoint | undefined> {
  const { marked } = await listSteps(store);
  for (const step of marked) {
    try {
      return (await loadCommitted(store, step)).info;
    } catch (e) {
      if (!(e instanceof CheckpointRejectedError)) throw e;
    }
  }
  return undefined;
}

/** True when the store already holds a blob of this hash and size. */
export async function hasBlob(store: ObjectStore, chunk: { sha256: string; size: number }): Promise<boolean> {
  const h = await withRetry("head blob", () => store.head(blobKey(chunk.sha256)));
  return h !== undefined && h.size === chunk.size;
}

/** Writes a blob (content-addressed: an existing one is left as is) and checks what landed. */
export async function putBlob(store: ObjectStore, sha256: string, data: Uint8Array): Promise<void> {
  const key = blobKey(sha256);
  await withRetry(`put ${key}`, () =>
    store.put(key, data, { sha256, contentType: "application/octet-stream" }),
  );
  const h = await withRetry(`head ${key}`, () => store.head(key));
  if (!h || h.size !== data.length || (h.sha256 !== undefined && h.sha256 !== sha256)) {
    throw new CheckpointRejectedError(
      -1,
      "Corrupt",
      `blob ${sha256.slice(0, 12)}… did not land intact (stored size ${h?.size ?? "none"}, sent ${data.length})`,
    );
  }
}

/** Writes manifest then marker — the marker last, so the checkpoint appears only when whole. */
export async function commitManifest(
  store: ObjectStore,
  manifestBytes: Uint8Array,
  markerBytes: Uint8Array,
  step: number,
): Promise<void> {
  const mkey = manifestKey(step);
  await withRetry(`put ${mkey}`, () =>
    store.put(mkey, manifestBytes, {
      sha256: createHash("sha256").update(manifestBytes).digest("hex"),
      contentType: "application/json",
    }),
  );
  const back = await readAll(store, mkey, manifestBytes.length);
  if (!back.equals(Buffer.from(manifestBytes))) {
    throw new CheckpointRejectedError(
      step,
      "Corrupt",
      `step ${step}: manifest read back differs from what was written`,
    );
  }
  const k = markerKey(step);
  await withRetry(`put ${k}`, () => store.put(k, markerBytes, { contentType: "application/json" }));
}

export interface PruneResult {
  removedSteps: number[];
  removedBlobs: number;
}

/**
 * Keeps the `keep` newest committed checkpoints. Older committed ones lose their marker first
 * (so they stop being committed), then their manifest; partial uploads older than the newest
 * committed one are removed too; then blobs no remaining manifest references are deleted.
 * `protect` names steps never removed (e.g. one being uploaded).
 */
export async function pruneCheckpoints(
  store: ObjectStore,
  keep: number,
  protect: number[] = [],
): Promise<PruneResult> {
  if (!Number.isInteger(keep) || keep < 1) throw new Error(`keep must be at least 1, got ${keep}`);
  const listing = await listCheckpoints(store);
  const kept = listing.committed.slice(0, keep).map((c) => c.step);
  const newest = kept[0];
  const doomed = [
    ...listing.committed.slice(keep).map((c) => c.step),
    ...listing.invalid.map((i) => i.step).filter((s) => newest !== undefined && s < newest),
    ...listing.uncommitted.filter((s) => newest !== undefined && s < newest),
  ].filter((s) => !protect.includes(s));
  for (const step of doomed) {
    await withRetry("delete marker", () => store.delete(markerKey(step)));
    await withRetry("delete manifest", () => store.delete(manifestKey(step)));
  }
  // Blobs referenced by any manifest still present (committed, or an upload in progress) live.
  const live = new Set<string>();
  const { marked, unmarked } = await listSteps(store);
  for (const step of [...marked, ...unmarked]) {
    let bytes: Buffer;
    try {
      bytes = await readAll(store, manifestKey(step), 64 * 1024 * 1024);
    } catch (e) {
      if (e instanceof StoreError && e.code === "NotFound") continue;
      throw e;
    }
    let m: CheckpointManifest;
    try {
      m = parseManifest(bytes);
    } catch {
      continue;
    }
    for (const f of m.files) for (const c of f.chunks) live.add(c.sha256);
  }
  let removedBlobs = 0;
  const dead: string[] = [];
  for await (const o of store.list({ prefix: BLOBS_PREFIX })) {
    const hash = o.key.slice(BLOBS_PREFIX.length);
    if (!live.has(hash)) dead.push(o.key);
  }
  for (const key of dead) {
    await withRetry("delete blob", () => store.delete(key));
    removedBlobs++;
  }
  return { removedSteps: doomed.sort((a, b) => a - b), removedBlobs };
}
