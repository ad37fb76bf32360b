/**
 * The data and checkpoint sides of a placement, as the TrainingRun controller sees them.
 * Implemented by `operator/dataplane` (dataset staging) and `operator/checkpoints`
 * (checkpoint locations); the controller never touches object stores itself.
 */
import type { CloudProvider, DataSet, TrainingRun } from "../api/v1alpha1/index.ts";

export interface StagingStatus {
  phase: "Pending" | "Syncing" | "Ready" | "Failed";
  /** The dataset version (manifest digest) present at the target, when known. */
  version?: string;
  /** Where the version is at the target (URI without credentials), once Ready. */
  uri?: string;
  objectsSynced?: number;
  objectsTotal?: number;
  bytesSynced?: number;
  bytesTotal?: number;
  /** Human-readable; never contains credentials. */
  message: string;
}

export interface DataStager {
  /**
   * Makes sure the dataset's current version is present in the target provider's store,
   * starting (or continuing) a sync when it is not. Idempotent; cheap when already staged.
   */
  stage(
    run: TrainingRun,
    dataset: DataSet,
    target: CloudProvider,
    signal?: AbortSignal,
  ): Promise<StagingStatus>;
}

export interface CheckpointLocation {
  /** Store URI (no credentials) where the run's checkpoints live at the target. */
  uri: string;
  /** The committed step to resume from, if any. */
  resumeStep?: number;
  digest?: string;
  committedAt?: string;
  /** Providers whose stores hold the resume checkpoint. */
  replicatedTo?: string[];
}

export interface CheckpointPlanner {
  /**
   * Where the run's checkpoints go on `target`, and the latest committed checkpoint to resume
   * from — replicated to the target's store first when it was written elsewhere.
   */
  prepare(run: TrainingRun, target: CloudProvider, signal?: AbortSignal): Promise<CheckpointLocation>;
  /**
   * Copies the run's newest committed checkpoint to the primary's store (the system of
   * record), so a move can resume from it even when the cloud it was written on is lost.
   * Undefined when the run has no committed checkpoint yet.
   */
  mirror?(
    run: TrainingRun,
    signal?: AbortSignal,
  ): Promise<{ step: number; digest: string; committedAt: string; replicatedTo: string[] } | undefined>;
}
