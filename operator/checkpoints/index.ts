/**
 * Portable checkpoints: format (manifest + commit marker over content-addressed chunks),
 * framework layouts (PyTorch DCP, safetensors), the agent beside the trainer, restore, and
 * the operator's replication between stores. See README.md here (layout, guarantees, the
 * trainer container's environment contract); the controller uses `CheckpointCatalog`.
 */
export { type AgentOptions, CheckpointAgent } from "./agent.ts";
export {
  type CheckpointCatalog,
  type CheckpointRef,
  createCheckpointCatalog,
  runCheckpointUri,
  runPrefixFor,
  type StoreOpener,
} from "./catalog.ts";
export {
  type CheckpointLayout,
  decideResume,
  describeLayout,
  type Framework,
  type ResumeDecision,
  type ResumeOptions,
} from "./layout.ts";
export {
  type CheckpointManifest,
  type CommitMarker,
  DEFAULT_CHUNK_SIZE,
  InvalidManifestError,
  type ManifestFile,
  parseManifest,
  stepFromName,
} from "./manifest.ts";
export { confineCheckpointPath, PathRefusedError } from "./paths.ts";
export {
  type CheckpointMirror,
  checkpointUri,
  type PlannedLocation,
  type PlannerResolver,
  StoreCheckpointPlanner,
} from "./planner.ts";
export {
  type ReplicateOptions,
  type ReplicationResult,
  replicateCheckpoint,
  replicateLatest,
} from "./replicate.ts";
export {
  CheckpointRejectedError,
  type CommitOutcome,
  type CommittedCheckpoint,
  type CommittedListing,
  latestCommitted,
  listCheckpoints,
  loadCommitted,
  type PruneOptions,
  type PruneResult,
  pruneCheckpoints,
} from "./repository.ts";
export {
  RESTORE_RECORD,
  type RejectedCheckpoint,
  type RestoreOptions,
  type RestoreResult,
  type RestoreSummary,
  restoreLatest,
  summarizeRestore,
} from "./restore.ts";
export {
  encodeSafetensors,
  parseSafetensors,
  readSafetensorsHeader,
  SafetensorsError,
  type SafetensorsHeader,
} from "./safetensors.ts";
export { READY_MARKERS, type UploadOptions, type UploadResult, uploadCheckpoint } from "./upload.ts";
