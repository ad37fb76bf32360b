/**
 * Copying committed checkpoints between stores (the operator's side: to the primary's store,
 * the system of record, as they are committed; to a move's target store before it starts).
 * Only a committed checkpoint is copied; each blob is verified against its hash as it is read
 * from the source; blobs the destination already holds are skipped; the manifest (the exact
 * bytes, so its digest is unchanged) and then the marker are written last.
 */
import type { ObjectStore } from "../dataplane/store.ts";
import {
  assertBlobsPresent,
  CheckpointRejectedError,
  type CommittedCheckpoint,
  commitManifest,
  latestCommitted,
  listBlobs,
  loadCommitted,
  putBlob,
  readVerifiedChunk,
} from "./repository.ts";

export interface ReplicationResult extends CommittedCheckpoint {
  /** Blob bytes sent to the destination. */
  bytesCopied: number;
  blobsCopied: number;
  /** Blobs the destination already held. */
  blobsSkipped: number;
  /** True when the destination already had this checkpoint committed with the same digest. */
  alreadyPresent: boolean;
  /** The digest of another writer's checkpoint at this step that the destination held and this replaced. */
  replacedDigest?: string;
}

export interface ReplicateOptions {
  /** Blobs in flight at once (default 4). */
  concurrency?: number;
}

/**
 * Copies the committed checkpoint `step` from `src` to `dst`. Throws CheckpointRejectedError
 * when it is not committed in `src` (a partial upload is never replicated) or fails
 * verification there.
 */
export async function replicateCheckpoint(
  src: ObjectStore,
  dst: ObjectStore,
  step: number,
  opts: ReplicateOptions = {},
): Promise<ReplicationResult> {
  const loaded = await loadCommitted(src, step);
  try {
    const there = await loadCommitted(dst, step);
    if (there.info.manifestDigest === loaded.info.manifestDigest) {
      return { ...loaded.info, bytesCopied: 0, blobsCopied: 0, blobsSkipped: 0, alreadyPresent: true };
    }
  } catch (e) {
    if (!(e instanceof CheckpointRejectedError)) throw e;
  }
  const unique = new Map<string, { sha256: string; size: number; file: string; index: number }>();
  for (const f of loaded.manifest.files) {
    f.chunks.forEach((c, index) => {
      if (!unique.has(c.sha256)) unique.set(c.sha256, { ...c, file: f.path, index });
    });
  }
  let bytesCopied = 0;
  let blobsCopied = 0;
  let blobsSkipped = 0;
  const queue = [...unique.values()];
  // One listing of the destination's blobs instead of a HEAD per blob.
  const present = await listBlobs(dst);
  const worker = async () => {
    for (let c = queue.shift(); c; c = queue.shift()) {
      if (present.get(c.sha256) === c.size) {
        blobsSkipped++;
        continue;
      }
      const data = await readVerifiedChunk(src, c, { step, file: c.file, index: c.index });
      await putBlob(dst, c.sha256, data);
      bytesCopied += data.length;
      blobsCopied++;
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, opts.concurrency ?? 4) }, worker));
  // The operator's replication is authoritative for the destination: it replaces a marker
  // another writer left for this step (each marker names a whole manifest, so readers are safe).
  const skipped = new Set([...unique.keys()].filter((h) => present.get(h) !== undefined));
  const commit = await commitManifest(dst, loaded.manifestBytes, loaded.markerBytes, step, {
    replace: true,
    // Blobs skipped because the listing showed them: still there now that the manifest protects them?
    beforeMarker: () =>
      assertBlobsPresent(dst, loaded.manifest, new Set([...unique.keys()].filter((h) => !skipped.has(h)))),
  });
  return {
    ...loaded.info,
    bytesCopied,
    blobsCopied,
    blobsSkipped,
    alreadyPresent: false,
    ...(commit.replacedDigest ? { replacedDigest: commit.replacedDigest } : {}),
  };
}

/**
 * Replicates the source's newest committed checkpoint to `dst` unless `dst` already holds it
 * (or a newer one). Returns undefined when the source has no committed checkpoint. The
 * operator calls this as checkpoints are committed (to the primary) and before a move (to the
 * target), then records the result in TrainingRun status.
 */
export async function replicateLatest(
  src: ObjectStore,
  dst: ObjectStore,
  opts: ReplicateOptions = {},
): Promise<ReplicationResult | undefined> {
  const latest = await latestCommitted(src);
  if (!latest) return undefined;
  return replicateCheckpoint(src, dst, latest.step, opts);
}
