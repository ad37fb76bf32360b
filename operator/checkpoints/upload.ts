/**
 * Uploading one finished checkpoint directory: hash every file in chunks while reading it,
 * send only the chunks the store does not hold yet, then the manifest, then the marker.
 * The hash of a chunk is computed on the very bytes that are sent, so a file rewritten under
 * our feet yields a manifest that matches what was uploaded, never a mix.
 */
import { createHash } from "node:crypto";
import { lstat, open, readdir, realpath, stat } from "node:fs/promises";
import { join, relative, sep } from "node:path";
import type { ObjectStore } from "../dataplane/store.ts";
import { describeLayout } from "./layout.ts";
import {
  type CheckpointManifest,
  type CommitMarker,
  DEFAULT_CHUNK_SIZE,
  encodeManifest,
  MANIFEST_KIND,
  MANIFEST_VERSION,
  type ManifestFile,
  manifestDigest,
  parseManifest,
} from "./manifest.ts";
import { isWithin, PathRefusedError } from "./paths.ts";
import {
  assertBlobsPresent,
  type CommittedCheckpoint,
  commitManifest,
  hasBlob,
  putBlob,
} from "./repository.ts";
import { readSafetensorsHeader } from "./safetensors.ts";

/** Files a trainer may write to say "this checkpoint is complete"; never uploaded. */
export const READY_MARKERS = [".spillway-complete", "SPILLWAY_COMPLETE"];

export interface UploadOptions {
  runUid: string;
  step: number;
  /** Default 16 MiB. */
  chunkSize?: number;
  /** Chunks in flight at once (default 4). */
  concurrency?: number;
  /**
   * Hashes of blobs known to be in the store already (e.g. from previous manifests); they are
   * not even asked about. Updated with every blob this upload writes or finds.
   */
  knownBlobs?: Set<string>;
  /** Confinement: every file (after resolving symlinks) must lie under this directory. */
  root?: string;
  now?: () => Date;
}

export interface UploadResult extends CommittedCheckpoint {
  files: number;
  /** Chunk bytes actually sent to the store (manifest and marker excluded). */
  bytesSent: number;
  /** Bytes not sent because the store already held identical chunks. */
  bytesDeduplicated: number;
  chunksSent: number;
  chunksDeduplicated: number;
  /** Manifest + marker bytes. */
  metadataBytes: number;
  /** The store already held this exact checkpoint committed (same manifest digest). */
  alreadyCommitted: boolean;
}

/** Lists the regular files of a checkpoint directory (relative, `/`-separated, sorted). */
export async function listCheckpointFiles(dir: string, root: string = dir): Promise<string[]> {
  const realRoot = await realpath(root);
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const full = join(d, e.name);
      const rel = relative(dir, full).split(sep).join("/");
      if (e.isSymbolicLink()) {
        const target = await realpath(full);
        if (!isWithin(realRoot, target)) {
          throw new PathRefusedError(
            `checkpoint file ${rel} is a symlink to ${target}, outside ${realRoot}: refused`,
          );
        }
        const st = await stat(full);
        if (st.isDirectory()) {
          throw new PathRefusedError(`checkpoint entry ${rel} is a symlinked directory: refused`);
        }
        if (st.isFile() && !READY_MARKERS.includes(e.name)) out.push(rel);
      } else if (e.isDirectory()) {
        await walk(full);
      } else if (e.isFile()) {
        if (!READY_MARKERS.includes(e.name) || d !== dir) out.push(rel);
      }
    }
  };
  const st = await lstat(dir);
  if (!st.isDirectory()) throw new PathRefusedError(`checkpoint ${dir} is not a directory`);
  await walk(dir);
  return out.sort();
}

/**
 * Chunk sizes for a safetensors file, cut at tensor boundaries. A tensor of at least an eighth
 * of `chunkSize` gets chunks of its own (split in `chunkSize` pieces from its start when
 * larger); smaller tensors (biases, norms) share chunks with their neighbours, up to
 * `chunkSize`, rather than becoming thousands of tiny blobs. When training changes some
 * tensors, only those tensors' chunks change: fixed-size chunks would straddle tensors (the
 * header shifts every offset) and resend their neighbours too. Empty (fixed-size chunks) when
 * the header cannot be read; the layout check reports why.
 */
export async function tensorAlignedPlan(file: string, chunkSize: number): Promise<number[]> {
  let header: Awaited<ReturnType<typeof readSafetensorsHeader>>;
  let fileSize: number;
  try {
    header = await readSafetensorsHeader(file);
    fileSize = (await stat(file)).size;
  } catch {
    return [];
  }
  const large = Math.max(1, Math.floor(chunkSize / 8));
  const sizes: number[] = [];
  let start = 0;
  const cutAt = (at: number) => {
    if (at > start) sizes.push(at - start);
    start = at;
  };
  for (const t of [...header.tensors].sort((a, b) => a.begin - b.begin)) {
    const a = header.dataStart + t.begin;
    const b = header.dataStart + t.end;
    if (b - a >= large) {
      cutAt(a);
      while (b - start > chunkSize) cutAt(start + chunkSize);
      cutAt(b);
    } else if (b - start > chunkSize) {
      cutAt(a);
    }
  }
  // The header stays with the first small tensors; the tail (if any) is one last chunk.
  while (fileSize - start > chunkSize) cutAt(start + chunkSize);
  cutAt(fileSize);
  return sizes;
}

/** Runs `fn` over items with at most `limit` at once; rejects on the first failure. */
async function pool<T>(
  items: AsyncIterable<T>,
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  const running = new Set<Promise<void>>();
  let failure: unknown;
  for await (const item of items) {
    if (failure) break;
    const p: Promise<void> = fn(item).then(
      () => {
        running.delete(p);
      },
      (e) => {
        running.delete(p);
        failure ??= e;
      },
    );
    running.add(p);
    if (running.size >= limit) await Promise.race(running);
  }
  await Promise.all(running);
  if (failure) throw failure;
}

/**
 * Uploads a checkpoint directory and commits it (manifest, then marker). Returns what was
 * committed and the bytes sent vs. deduplicated.
 */
export async function uploadCheckpoint(
  store: ObjectStore,
  dir: string,
  name: string,
  opts: UploadOptions,
): Promise<UploadResult> {
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const known = opts.knownBlobs ?? new Set<string>();
  const paths = await listCheckpointFiles(dir, opts.root ?? dir);
  const layout = await describeLayout(dir, paths);
  let bytesSent = 0;
  let bytesDeduplicated = 0;
  let chunksSent = 0;
  let chunksDeduplicated = 0;
  const inFlight = new Map<string, Promise<void>>();
  /** Blobs headed or written by this upload; the others (skipped on `knownBlobs`) are checked before the commit. */
  const checked = new Set<string>();

  // Files are read one after the other (the disk reads sequentially anyway) but their chunks
  // share one pool: the next file's first chunks upload while this one's last ones finish,
  // which matters for DCP's many shard files. Each file's hash is updated in read order.
  const files: ManifestFile[] = paths.map((path) => ({ path, size: 0, sha256: "", chunks: [] }));
  async function* readChunks(): AsyncGenerator<{ file: number; index: number; data: Buffer }> {
    for (const [file, path] of paths.entries()) {
      const plan = path.endsWith(".safetensors") ? await tensorAlignedPlan(join(dir, path), chunkSize) : [];
      const fileHash = createHash("sha256");
      let size = 0;
      const fh = await open(join(dir, path), "r");
      try {
        for (let index = 0; ; index++) {
          const want = plan[index] ?? chunkSize;
          const buf = Buffer.allocUnsafe(want);
          let filled = 0;
          while (filled < want) {
            const { bytesRead } = await fh.read(buf, filled, want - filled, null);
            if (bytesRead === 0) break;
            filled += bytesRead;
          }
          if (filled === 0) break;
          const data = buf.subarray(0, filled);
          fileHash.update(data);
          size += filled;
          yield { file, index, data };
          if (filled < want) break;
        }
      } finally {
        await fh.close();
      }
      files[file]!.size = size;
      files[file]!.sha256 = fileHash.digest("hex");
    }
  }
  await pool(readChunks(), opts.concurrency ?? 4, async ({ file, index, data }) => {
    const sha256 = createHash("sha256").update(data).digest("hex");
    files[file]!.chunks[index] = { sha256, size: data.length };
    const pending = inFlight.get(sha256);
    if (known.has(sha256) || pending) {
      await pending;
      bytesDeduplicated += data.length;
      chunksDeduplicated++;
      return;
    }
    const work = (async () => {
      if (await hasBlob(store, { sha256, size: data.length })) {
        bytesDeduplicated += data.length;
        chunksDeduplicated++;
      } else {
        await putBlob(store, sha256, data);
        bytesSent += data.length;
        chunksSent++;
      }
      known.add(sha256);
      checked.add(sha256);
    })();
    inFlight.set(sha256, work);
    try {
      await work;
    } finally {
      inFlight.delete(sha256);
    }
  });

  const now = (opts.now ?? (() => new Date()))();
  const manifest: CheckpointManifest = {
    kind: MANIFEST_KIND,
    version: MANIFEST_VERSION,
    runUid: opts.runUid,
    step: opts.step,
    name,
    createdAt: now.toISOString(),
    chunkSize,
    framework: layout.framework,
    ...(layout.worldSize !== undefined ? { worldSize: layout.worldSize } : {}),
    layout,
    files,
    totalBytes: files.reduce((n, f) => n + f.size, 0),
  };
  const manifestBytes = encodeManifest(manifest);
  parseManifest(manifestBytes, opts.step); // what we write must pass what readers check
  const digest = manifestDigest(manifestBytes);
  const marker: CommitMarker = {
    runUid: opts.runUid,
    step: opts.step,
    manifestDigest: digest,
    committedAt: new Date().toISOString(),
  };
  const markerBytes = Buffer.from(`${JSON.stringify(marker)}\n`);
  // A blob known from an earlier manifest may have been pruned since (by another writer):
  // check those once, so a marker never names a manifest whose data is gone.
  const commit = await commitManifest(store, manifestBytes, markerBytes, opts.step, {
    beforeMarker: () => assertBlobsPresent(store, manifest, checked),
  });
  return {
    alreadyCommitted: commit.outcome === "alreadyCommitted",
    step: opts.step,
    manifestDigest: digest,
    committedAt: marker.committedAt,
    runUid: opts.runUid,
    name,
    totalBytes: manifest.totalBytes,
    framework: manifest.framework,
    ...(manifest.worldSize !== undefined ? { worldSize: manifest.worldSize } : {}),
    files: files.length,
    bytesSent,
    bytesDeduplicated,
    chunksSent,
    chunksDeduplicated,
    metadataBytes: manifestBytes.length + markerBytes.length,
  };
}
