/**
 * The operator's narrow view of checkpoints (what the TrainingRun controller needs for
 * mirroring, failover and failback), over store URIs so the controller never handles a
 * manifest:
 *
 * - `latestCommitted(storeUri, runPrefix)`: the newest committed checkpoint of a run in a
 *   store (manifest and marker verified; data not read) → status `checkpoint.step/digest`,
 *   and the step to resume from after a move.
 * - `replicate(fromUri, toUri, runPrefix, step?)`: copies one committed checkpoint (default:
 *   the newest) to another store: to the primary's store as checkpoints are committed, and to
 *   a move's target before the Job is dispatched there. Idempotent; bytes already present are
 *   not sent again.
 *
 * A run's checkpoints live under `<store URI prefix>/<runPrefix>/` (`runCheckpointUri`); that
 * full URI is what the remote Job receives as SPILLWAY_CHECKPOINT_STORE (see README.md).
 */
import { credentialsFromEnv } from "../dataplane/credentials.ts";
import { type ObjectStore, openStore } from "../dataplane/store.ts";
import { type ReplicateOptions, type ReplicationResult, replicateCheckpoint } from "./replicate.ts";
import { type CommittedCheckpoint, latestCommitted, listCheckpoints } from "./repository.ts";

export interface CheckpointRef extends CommittedCheckpoint {
  /** The run's checkpoint store URI (credentials redacted). */
  uri: string;
}

export interface CheckpointCatalog {
  latestCommitted(storeUri: string, runPrefix: string): Promise<CheckpointRef | undefined>;
  /**
   * Copies the committed checkpoint `step` (default: the source's newest) from one store to
   * another. Undefined when the source holds no committed checkpoint. Throws
   * CheckpointRejectedError when `step` is not committed in the source or fails verification.
   */
  replicate(
    fromUri: string,
    toUri: string,
    runPrefix: string,
    step?: number,
    options?: ReplicateOptions,
  ): Promise<ReplicationResult | undefined>;
  /** Steps committed in a store, newest first (for status and `spillway checkpoint list`). */
  committedSteps(storeUri: string, runPrefix: string): Promise<number[]>;
}

/** The conventional run prefix: `spillway/runs/<uid>` (beside datasets in the same bucket). */
export const runPrefixFor = (runUid: string): string => `spillway/runs/${runUid}`;

/**
 * Appends a run prefix to a store URI's path, keeping its query (`endpoint`, `region`, …):
 * `s3://b/ckpt?endpoint=…` + `runs/u1` → `s3://b/ckpt/runs/u1?endpoint=…`.
 */
export function runCheckpointUri(storeUri: string, runPrefix: string): string {
  const clean = runPrefix.replace(/^\/+|\/+$/g, "");
  if (clean === "" || clean.split("/").some((s) => s === "" || s === "." || s === "..")) {
    throw new Error(`run prefix ${JSON.stringify(runPrefix)} is not a plain relative path`);
  }
  const q = storeUri.indexOf("?");
  const base = q < 0 ? storeUri : storeUri.slice(0, q);
  const query = q < 0 ? "" : storeUri.slice(q);
  return `${base.replace(/\/+$/, "")}/${clean}${query}`;
}

export type StoreOpener = (uri: string) => Promise<ObjectStore>;

/** The real catalog. `open` defaults to each SDK's usual environment credentials. */
export function createCheckpointCatalog(
  open: StoreOpener = (uri) => openStore(uri, credentialsFromEnv()),
): CheckpointCatalog {
  const openRun = (uri: string, runPrefix: string) => open(runCheckpointUri(uri, runPrefix));
  return {
    async latestCommitted(storeUri, runPrefix) {
      const store = await openRun(storeUri, runPrefix);
      const latest = await latestCommitted(store);
      return latest && { ...latest, uri: store.displayUri };
    },
    async replicate(fromUri, toUri, runPrefix, step, options) {
      const src = await openRun(fromUri, runPrefix);
      const dst = await openRun(toUri, runPrefix);
      const at = step ?? (await latestCommitted(src))?.step;
      if (at === undefined) return undefined;
      return replicateCheckpoint(src, dst, at, options);
    },
    async committedSteps(storeUri, runPrefix) {
      const listing = await listCheckpoints(await openRun(storeUri, runPrefix));
      return listing.committed.map((c) => c.step);
    },
  };
}
