/**
 * Checkpoints in an object store (see `manifest.ts` for the layout): reading what is
 * committed, writing blobs/manifest/marker in the order that makes a checkpoint appear only
 * when complete, and pruning. Everything here goes through the data plane's `ObjectStore`.
 *
 * Writers: one agent per run prefix is the normal case, but a second writer (a zombie agent on
 * a cluster declared lost, a replication racing an agent) must not make a committed checkpoint
 * lie. Hence: blobs are content-addressed (rewriting one is harmless), manifests are named by
 * their digest (never overwritten), the marker is created first-writer-wins and read back,
 * every blob is checked present before the marker is written, and pruning deletes a marker
 * before its manifests and spares blobs younger than a grace period (they may belong to an
 * upload whose manifest is not written yet).
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
  digestOfManifestLeaf,
  InvalidManifestError,
  MARKER_LEAF,
  manifestDigest,
  manifestKey,
  markerKey,
  parseCheckpointKey,
  parseManifest,
  parseMarker,
  stepDir,
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
    readonly reason: "NotCommitted" | "InvalidManifest" | "Corrupt" | "Conflict",
    message: string,
  ) {
    super(message);
    this.name = "CheckpointRejectedError";
  }
}

/** Largest manifest read (a manifest lists every chunk: 64 MiB is millions of chunks). */
export const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;

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

/**
 * Reads a whole object into memory (manifests, markers, chunks: all bounded in size). With
 * `exact`, the buffer is allocated once at `limit` bytes and filled in place (a chunk is held
 * once, not once per network packet plus a concatenated copy).
 */
export async function readAll(
  store: ObjectStore,
  key: string,
  limit: number,
  exact = false,
): Promise<Buffer> {
  return withRetry(`read ${key}`, async () => {
    const stream = await store.read(key);
    const tooLarge = () => {
      stream.destroy();
      return new CheckpointRejectedError(
        -1,
        "Corrupt",
        `object ${key} is larger than expected (${limit} bytes)`,
      );
    };
    if (exact) {
      const out = Buffer.allocUnsafe(limit);
      let n = 0;
      for await (const c of stream) {
        const b = c as Uint8Array;
        if (n + b.length > limit) throw tooLarge();
        out.set(b, n);
        n += b.length;
      }
      return out.subarray(0, n);
    }
    const parts: Buffer[] = [];
    let n = 0;
    for await (const c of stream) {
      const b = Buffer.isBuffer(c) ? c : Buffer.from(c as Uint8Array);
      n += b.length;
      if (n > limit) throw tooLarge();
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
    data = await readAll(store, blobKey(chunk.sha256), chunk.size, true);
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
  /** Steps with a commit marker (not yet verified), newest first. */
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
    if (s.has(MARKER_LEAF)) marked.push(step);
    else unmarked.push(step);
  }
  const desc = (a: number, b: number) => b - a;
  return { marked: marked.sort(desc), unmarked: unmarked.sort(desc) };
}

/** Reads a commit marker; undefined when there is none. Throws InvalidManifestError when malformed. */
export async function readMarker(store: ObjectStore, step: number): Promise<CommitMarker | undefined> {
  let bytes: Buffer;
  try {
    bytes = await readAll(store, markerKey(step), 64 * 1024);
  } catch (e) {
    if (e instanceof StoreError && e.code === "NotFound") return undefined;
    throw e;
  }
  return parseMarker(bytes, step);
}

/**
 * Loads a committed checkpoint's marker and the manifest it names, and checks that they agree
 * (the manifest's bytes hash to the marker's digest). Throws CheckpointRejectedError when it
 * is not committed or its manifest is invalid. Data blobs are not read here.
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
  try {
    const marker: CommitMarker = parseMarker(markerBytes, step);
    let manifestBytes: Buffer;
    try {
      manifestBytes = await readAll(store, manifestKey(step, marker.manifestDigest), MAX_MANIFEST_BYTES);
    } catch (e) {
      if (e instanceof StoreError && e.code === "NotFound") {
        throw new InvalidManifestError(
          `step ${step}: the commit marker names manifest ${marker.manifestDigest.slice(0, 19)}…, which is missing`,
        );
      }
      if (e instanceof CheckpointRejectedError) throw new InvalidManifestError(`step ${step}: ${e.message}`);
      throw e;
    }
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

/**
 * Writes a blob (content-addressed: rewriting one is harmless) and checks what landed. Azure
 * and S3 adapters send the body's MD5 and compare the one the service computed (`partChecksum:
 * "md5"`): that is the end-to-end check. Stores without it (files) are read back by size and
 * sha256 metadata with a HEAD.
 */
export async function putBlob(store: ObjectStore, sha256: string, data: Uint8Array): Promise<void> {
  const key = blobKey(sha256);
  await withRetry(`put ${key}`, () =>
    store.put(key, data, { sha256, contentType: "application/octet-stream" }),
  );
  if (store.capabilities.partChecksum === "md5") return;
  const h = await withRetry(`head ${key}`, () => store.head(key));
  if (!h || h.size !== data.length || (h.sha256 !== undefined && h.sha256 !== sha256)) {
    throw new CheckpointRejectedError(
      -1,
      "Corrupt",
      `blob ${sha256.slice(0, 12)}… did not land intact (stored size ${h?.size ?? "none"}, sent ${data.length})`,
    );
  }
}

/** Every blob a store holds, hash → size (one paged listing instead of a HEAD per blob). */
export async function listBlobs(store: ObjectStore): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const o of store.list({ prefix: BLOBS_PREFIX }))
    out.set(o.key.slice(BLOBS_PREFIX.length), o.size);
  return out;
}

/**
 * Checks that every distinct blob a manifest references (except `skip`) is in the store, with
 * its size; throws Corrupt naming the first missing one. A few blobs are HEADed; many are
 * checked against one paged listing.
 */
export async function assertBlobsPresent(
  store: ObjectStore,
  manifest: CheckpointManifest,
  skip: ReadonlySet<string> = new Set(),
): Promise<void> {
  const unique = new Map<string, { sha256: string; size: number; file: string }>();
  for (const f of manifest.files)
    for (const c of f.chunks) if (!skip.has(c.sha256)) unique.set(c.sha256, { ...c, file: f.path });
  if (unique.size === 0) return;
  const missing = (c: { sha256: string; file: string }) =>
    new CheckpointRejectedError(
      manifest.step,
      "Corrupt",
      `step ${manifest.step}: blob ${c.sha256.slice(0, 12)}… of ${c.file} is not in the store; not committing`,
    );
  if (unique.size <= 8) {
    const found = await Promise.all(
      [...unique.values()].map(async (c) => ({ c, ok: await hasBlob(store, c) })),
    );
    const bad = found.find((f) => !f.ok);
    if (bad) throw missing(bad.c);
    return;
  }
  const present = await listBlobs(store);
  for (const c of unique.values()) if (present.get(c.sha256) !== c.size) throw missing(c);
}

export interface CommitOutcome {
  /** `committed`: our marker is in place; `alreadyCommitted`: an identical one was. */
  outcome: "committed" | "alreadyCommitted";
  /** The digest our marker replaced (only with `replace`). */
  replacedDigest?: string;
}

/**
 * Writes the manifest (under its digest), then the marker — the marker last, so the checkpoint
 * appears only when whole. Without `replace`, the marker is created only if absent; when
 * another writer's marker (another digest) is there, throws CheckpointRejectedError
 * "Conflict". With `replace` (the operator's replication, which is authoritative) it is
 * overwritten; readers see either marker, each naming a whole manifest.
 */
export async function commitManifest(
  store: ObjectStore,
  manifestBytes: Uint8Array,
  markerBytes: Uint8Array,
  step: number,
  opts: {
    replace?: boolean;
    /**
     * Runs after the manifest is stored and before the marker: the place to check that every
     * blob is present (from here on a pruner counts the manifest's blobs as live).
     */
    beforeMarker?: () => Promise<void>;
  } = {},
): Promise<CommitOutcome> {
  const digest = manifestDigest(manifestBytes);
  const mkey = manifestKey(step, digest);
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
  await opts.beforeMarker?.();
  const k = markerKey(step);
  const existing = await readMarker(store, step).catch((e: unknown) => {
    // A malformed marker is treated as absent: ours replaces it.
    if (e instanceof InvalidManifestError) return undefined;
    throw e;
  });
  if (existing?.manifestDigest === digest) return { outcome: "alreadyCommitted" };
  if (existing && !opts.replace) throw conflict(step, existing.manifestDigest);
  try {
    await withRetry(`put ${k}`, () =>
      store.put(k, markerBytes, {
        contentType: "application/json",
        ...(existing || opts.replace ? {} : { ifNoneMatch: "*" as const }),
      }),
    );
  } catch (e) {
    if (e instanceof StoreError && e.code === "PreconditionFailed") {
      const winner = await readMarker(store, step);
      if (winner?.manifestDigest === digest) return { outcome: "alreadyCommitted" };
      throw conflict(step, winner?.manifestDigest ?? "unknown");
    }
    throw e;
  }
  // Stores that do not enforce If-None-Match (s3rver, older S3 APIs): last writer wins; the
  // read-back tells a writer it lost.
  const now = await readMarker(store, step);
  if (now?.manifestDigest !== digest) throw conflict(step, now?.manifestDigest ?? "none");
  return existing
    ? { outcome: "committed", replacedDigest: existing.manifestDigest }
    : { outcome: "committed" };
}

function conflict(step: number, theirs: string): CheckpointRejectedError {
  return new CheckpointRejectedError(
    step,
    "Conflict",
    `step ${step} was committed by another writer (manifest ${theirs.slice(0, 19)}…); this upload is not the committed one`,
  );
}

export interface PruneResult {
  removedSteps: number[];
  removedBlobs: number;
}

export interface PruneOptions {
  /** Steps never removed (e.g. one being uploaded). */
  protect?: number[];
  /**
   * Blobs modified less than this long ago are kept even when no manifest references them:
   * they may belong to an upload whose manifest is not written yet (default 1 h).
   */
  blobGraceMs?: number;
  now?: () => number;
}

/**
 * Keeps the `keep` newest committed checkpoints. Older committed ones lose their marker first
 * (so they stop being committed), then their manifests; partial uploads older than the newest
 * committed one are removed too; then blobs no remaining manifest references (and older than
 * the grace period) are deleted.
 */
export async function pruneCheckpoints(
  store: ObjectStore,
  keep: number,
  opts: PruneOptions = {},
): Promise<PruneResult> {
  if (!Number.isInteger(keep) || keep < 1) throw new Error(`keep must be at least 1, got ${keep}`);
  const protect = opts.protect ?? [];
  // Verify markers newest first only until `keep` committed ones are found: everything older
  // goes whatever its state, so it need not be read. Manifests read here are reused below.
  const { marked, unmarked } = await listSteps(store);
  const loaded = new Map<string, CheckpointManifest>();
  const kept: number[] = [];
  const doomed: number[] = [];
  for (const step of marked) {
    if (kept.length >= keep) {
      doomed.push(step);
      continue;
    }
    try {
      const c = await loadCommitted(store, step);
      loaded.set(c.info.manifestDigest, c.manifest);
      kept.push(step);
    } catch (e) {
      if (!(e instanceof CheckpointRejectedError)) throw e;
      // An invalid marker newer than every committed checkpoint may be a replace in progress.
      if (kept.length > 0) doomed.push(step);
    }
  }
  const newest = kept[0];
  if (newest !== undefined) doomed.push(...unmarked.filter((s) => s < newest));
  const removed = doomed.filter((s) => !protect.includes(s));
  // Nothing removed: nothing became garbage (orphans of crashed uploads wait for the next prune).
  if (removed.length === 0) return { removedSteps: [], removedBlobs: 0 };
  for (const step of removed) {
    await withRetry("delete marker", () => store.delete(markerKey(step)));
    const rest: string[] = [];
    for await (const o of store.list({ prefix: `${stepDir(step)}/` })) rest.push(o.key);
    for (const key of rest) await withRetry("delete manifest", () => store.delete(key));
  }
  // Blobs referenced by any manifest still present (committed, or an upload in progress) live.
  const live = new Set<string>();
  for await (const o of store.list({ prefix: CHECKPOINTS_PREFIX })) {
    const k = parseCheckpointKey(o.key);
    const digest = k ? digestOfManifestLeaf(k.leaf) : undefined;
    if (!digest) continue;
    let m = loaded.get(digest);
    if (!m) {
      let bytes: Buffer;
      try {
        bytes = await readAll(store, o.key, MAX_MANIFEST_BYTES);
        m = parseManifest(bytes);
      } catch (e) {
        if (e instanceof StoreError && e.code === "NotFound") continue;
        if (e instanceof CheckpointRejectedError || e instanceof InvalidManifestError) continue;
        throw e;
      }
    }
    for (const f of m.files) for (const c of f.chunks) live.add(c.sha256);
  }
  const graceMs = opts.blobGraceMs ?? 60 * 60 * 1000;
  const now = (opts.now ?? Date.now)();
  let removedBlobs = 0;
  const dead: string[] = [];
  for await (const o of store.list({ prefix: BLOBS_PREFIX })) {
    const hash = o.key.slice(BLOBS_PREFIX.length);
    if (live.has(hash)) continue;
    // No timestamp: treat as young, i.e. keep (never delete what might be in use).
    const age = o.lastModified ? now - o.lastModified.getTime() : -1;
    if (age >= graceMs) dead.push(o.key);
  }
  for (const key of dead) {
    await withRetry("delete blob", () => store.delete(key));
    removedBlobs++;
  }
  return { removedSteps: removed.sort((a, b) => a - b), removedBlobs };
}
