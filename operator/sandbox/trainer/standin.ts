/**
 * The trainer stand-in as a TrainingRun's container: the Spillway image running
 * `spillway checkpoint workload` (restore → checkpoint agent → trainer in one process). The
 * simulated kubelet runs it for real; the remote Job gives it the environment contract of
 * operator/checkpoints/README.md and a checkpoint volume. Used by the demo and the tests.
 */
import { TRAINER_STAND_IN_COMMAND } from "../../controllers/remote/manifests.ts";

/** The Spillway image (its entrypoint is the `spillway` CLI). */
export const SPILLWAY_IMAGE = "ghcr.io/spillway/spillway:sandbox";

export interface StandInOptions {
  /** Train until this step. */
  steps: number;
  /** Checkpoint every this many steps. */
  every: number;
  /** Simulated compute per step, e.g. "100ms". */
  stepDelay: string;
  /** Bytes per model tensor (8 tensors; default the trainer's 16 KiB). */
  tensorBytes?: number;
}

export type StandInContainer = {
  name: string;
  image: string;
  command: string[];
  env: Array<{ name: string; value: string }>;
};

export function standInContainer(opts: StandInOptions): StandInContainer {
  return {
    name: "trainer",
    image: SPILLWAY_IMAGE,
    command: [...TRAINER_STAND_IN_COMMAND],
    env: [
      { name: "SPILLWAY_TRAINER_STEPS", value: String(opts.steps) },
      { name: "SPILLWAY_TRAINER_EVERY", value: String(opts.every) },
      { name: "SPILLWAY_TRAINER_STEP_DELAY", value: opts.stepDelay },
      ...(opts.tensorBytes !== undefined
        ? [{ name: "SPILLWAY_TRAINER_TENSOR_BYTES", value: String(opts.tensorBytes) }]
        : []),
    ],
  };
}

/** One JSON event line of the stand-in's stdout (workload.ts `WorkloadEvent`), or undefined. */
export function parseWorkloadEvents(
  logs: string,
): Array<{ event: string; step?: number; resumedFrom?: number }> {
  const out: Array<{ event: string; step?: number; resumedFrom?: number }> = [];
  for (const line of logs.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      const e = JSON.parse(line) as { event?: unknown };
      if (typeof e.event === "string") out.push(e as { event: string; step?: number });
    } catch {
      // a log line that merely starts with a brace
    }
  }
  return out;
}
