/**
 * What runs in a sandbox training pod, as one unit: restore (the init step), the checkpoint
 * agent (the native sidecar) and the trainer stand-in. It reads the environment contract the
 * remote Job carries (operator/controllers/remote/manifests.ts; operator/checkpoints/README.md):
 *
 *   SPILLWAY_CHECKPOINT_DIR    checkpoint path in the container (required)
 *   SPILLWAY_CHECKPOINT_STORE  store URI of this run's checkpoints (required)
 *   SPILLWAY_RESUME_STEP       step the operator replicated there for this attempt (optional)
 *   SPILLWAY_RUN_UID           recorded in every manifest; other runs' checkpoints are refused
 *   SPILLWAY_NNODES            world size (default 2)
 *   SPILLWAY_CHECKPOINT_KEEP   committed checkpoints kept in the store (spec.checkpoints.keep; default 3)
 *   SPILLWAY_TRAINER_STEPS / _EVERY / _STEP_DELAY / _TENSOR_BYTES (stand-in only; tensors of
 *   2 MiB or more get chunks of their own, so only the changed quarter of the model is resent)
 *
 * Killing the process (SIGKILL, a lost cluster) leaves only committed checkpoints behind in
 * the store; a later run of the workload anywhere resumes from the newest of them.
 */

import { CheckpointAgent } from "../../checkpoints/agent.ts";
import { type RestoreResult, restoreLatest } from "../../checkpoints/restore.ts";
import { credentialsFromEnv } from "../../dataplane/credentials.ts";
import { type ObjectStore, openStore } from "../../dataplane/store.ts";
import { parseDuration } from "../../util/duration.ts";
import { runTrainer, type TrainerResult } from "./trainer.ts";

export interface WorkloadOptions {
  checkpointDir: string;
  storeUri: string;
  runUid: string;
  resumeStep?: number;
  worldSize: number;
  steps: number;
  every: number;
  stepDelayMs: number;
  /** Committed checkpoints kept in the store (default 3). */
  keep?: number;
  /** Tensors per model file and bytes per tensor (defaults of the trainer). */
  tensors?: number;
  tensorBytes?: number;
}

/** One line of the workload's progress (printed as JSON by main.ts; what tests and the demo read). */
export type WorkloadEvent =
  | { event: "restored"; step: number; digest: string; behindExpected: boolean; rejected: number[] }
  | { event: "fresh"; rejected: number[] }
  | { event: "checkpoint"; step: number }
  | { event: "committed"; step: number; bytesSent: number; bytesDeduplicated: number }
  | { event: "finished"; step: number; resumedFrom?: number };

export interface WorkloadResult {
  restore: RestoreResult;
  trainer: TrainerResult;
  committed: number[];
}

function intFrom(env: NodeJS.ProcessEnv, name: string, fallback?: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") {
    if (fallback === undefined) throw new Error(`${name} is required`);
    return fallback;
  }
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 0)
    throw new Error(`${name} must be a non-negative integer, got ${raw}`);
  return n;
}

/** Reads the environment contract; throws one clear line naming the variable at fault. */
export function workloadFromEnv(env: NodeJS.ProcessEnv = process.env): WorkloadOptions {
  const checkpointDir = env.SPILLWAY_CHECKPOINT_DIR;
  const storeUri = env.SPILLWAY_CHECKPOINT_STORE;
  if (!checkpointDir) throw new Error("SPILLWAY_CHECKPOINT_DIR is required");
  if (!storeUri) throw new Error("SPILLWAY_CHECKPOINT_STORE is required");
  const resume = env.SPILLWAY_RESUME_STEP;
  return {
    checkpointDir,
    storeUri,
    runUid: env.SPILLWAY_RUN_UID || "sandbox-run",
    ...(resume !== undefined && resume !== "" ? { resumeStep: intFrom(env, "SPILLWAY_RESUME_STEP") } : {}),
    worldSize: Math.max(1, intFrom(env, "SPILLWAY_NNODES", 2)),
    steps: intFrom(env, "SPILLWAY_TRAINER_STEPS", 100),
    every: Math.max(1, intFrom(env, "SPILLWAY_TRAINER_EVERY", 10)),
    stepDelayMs: parseDuration(env.SPILLWAY_TRAINER_STEP_DELAY || "0ms"),
    ...(env.SPILLWAY_CHECKPOINT_KEEP ? { keep: Math.max(1, intFrom(env, "SPILLWAY_CHECKPOINT_KEEP")) } : {}),
    ...(env.SPILLWAY_TRAINER_TENSOR_BYTES
      ? { tensorBytes: Math.max(4, intFrom(env, "SPILLWAY_TRAINER_TENSOR_BYTES")) }
      : {}),
  };
}

/**
 * Restore → agent → train → drain. Each checkpoint is uploaded by the agent as soon as the
 * trainer finishes writing it (the trainer writes DCP's `.metadata` last); the store trails
 * the trainer by at most one checkpoint.
 */
export async function runWorkload(
  opts: WorkloadOptions,
  store: ObjectStore,
  emit: (e: WorkloadEvent) => void = () => {},
  signal?: AbortSignal,
  log: (line: string) => void = () => {},
): Promise<WorkloadResult> {
  const restore = await restoreLatest(store, opts.checkpointDir, {
    runUid: opts.runUid,
    worldSize: opts.worldSize,
    ...(opts.resumeStep !== undefined ? { expectStep: opts.resumeStep } : {}),
    log,
  });
  const rejected = restore.rejected.map((r) => r.step);
  if (restore.outcome === "AllRejected") {
    // Starting fresh when committed checkpoints exist but none verifies would lose work silently.
    throw new Error(
      `every committed checkpoint was rejected: ${restore.rejected.map((r) => `${r.step} (${r.reason})`).join(", ")}`,
    );
  }
  if (restore.restored) {
    emit({
      event: "restored",
      step: restore.restored.step,
      digest: restore.restored.manifestDigest,
      behindExpected: restore.behindExpected,
      rejected,
    });
  } else emit({ event: "fresh", rejected });

  const agent = new CheckpointAgent({
    path: opts.checkpointDir,
    store,
    runUid: opts.runUid,
    keep: opts.keep ?? 3,
    log,
    onCommitted: (r) =>
      emit({
        event: "committed",
        step: r.step,
        bytesSent: r.bytesSent,
        bytesDeduplicated: r.bytesDeduplicated,
      }),
  });
  await agent.start();
  let previous: number | undefined;
  let trainer: TrainerResult;
  try {
    trainer = await runTrainer({
      dir: opts.checkpointDir,
      steps: opts.steps,
      every: opts.every,
      worldSize: opts.worldSize,
      stepDelayMs: opts.stepDelayMs,
      ...(opts.tensors !== undefined ? { tensors: opts.tensors } : {}),
      ...(opts.tensorBytes !== undefined ? { tensorBytes: opts.tensorBytes } : {}),
      onCheckpoint: async (step) => {
        emit({ event: "checkpoint", step });
        // At most one checkpoint in flight, as DCP's async save: training goes on while this
        // one uploads, but the next waits until it is committed.
        if (previous !== undefined) await agent.waitForCommitted(previous, signal);
        previous = step;
      },
      log,
      ...(signal ? { signal } : {}),
    });
  } finally {
    // Graceful end (finished, or SIGTERM): upload what is complete before exiting.
    await agent.stop(true);
  }
  emit({
    event: "finished",
    step: trainer.endStep,
    ...(trainer.resumedFrom !== undefined ? { resumedFrom: trainer.resumedFrom } : {}),
  });
  return { restore, trainer, committed: agent.committed.map((c) => c.step) };
}

/**
 * The workload as a process body: environment in, JSON events on stdout, logs on stderr.
 * Resolves to the exit code: 0 finished, 1 failed, 143 stopped by SIGTERM/SIGINT (after the
 * agent drained).
 */
export async function workloadProcess(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const log = (line: string) => process.stderr.write(`${new Date().toISOString()} trainer: ${line}\n`);
  const stop = new AbortController();
  const onSignal = () => stop.abort(new Error("stopped by signal"));
  process.once("SIGTERM", onSignal);
  process.once("SIGINT", onSignal);
  try {
    const opts = workloadFromEnv(env);
    const store = await openStore(opts.storeUri, credentialsFromEnv(env));
    await runWorkload(opts, store, (e) => process.stdout.write(`${JSON.stringify(e)}\n`), stop.signal, log);
    return 0;
  } catch (e) {
    if (stop.signal.aborted) {
      log("stopped; complete checkpoints were uploaded");
      return 143;
    }
    log(`failed: ${(e as Error).message}`);
    return 1;
  } finally {
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
  }
}
