/**
 * The trainer stand-in as a TrainingRun's container, in the shape a real cluster runs:
 * `standInContainer()` is only the trainer (`spillway checkpoint trainer`: it writes real
 * checkpoints at steps and resumes from the newest complete one in the checkpoint path, as a
 * real trainer's `load_checkpoint` would). The remote Job adds Spillway's own containers
 * beside it (operator/controllers/remote/manifests.ts): the `spillway-restore` init container
 * puts the last committed checkpoint in the path first, and the `spillway-checkpoint-agent`
 * native sidecar uploads, commits and prunes what the trainer writes, draining on SIGTERM
 * once the trainer has exited. The simulated kubelet runs all three as processes.
 *
 * `allInOneStandInContainer()` is the older one-process form (`spillway checkpoint workload`:
 * restore → agent → trainer); a pod with it gets no Spillway containers. Used by the demo and
 * the tests.
 */
import {
  AGENT_CONTAINER,
  RESTORE_CONTAINER,
  TRAINER_STAND_IN_COMMAND,
} from "../../controllers/remote/manifests.ts";

/** The Spillway image (its entrypoint is the `spillway` CLI). */
export const SPILLWAY_IMAGE = "ghcr.io/spillway/spillway:sandbox";

/** The trainer stand-in's command (the split form). */
export const TRAINER_COMMAND = ["spillway", "checkpoint", "trainer"] as const;

export interface StandInOptions {
  /** Train until this step. */
  steps: number;
  /** Checkpoint every this many steps. */
  every: number;
  /** Simulated compute per step, e.g. "100ms". */
  stepDelay: string;
  /** Bytes per model tensor (8 tensors; default the trainer's 16 KiB). */
  tensorBytes?: number;
  /**
   * Local checkpoint directories the trainer keeps (default 3). The split form has no
   * back-pressure from the agent (the all-in-one waits for each commit, like DCP's async
   * save), so a test that wants every step committed on a loaded machine keeps more.
   */
  keepLocal?: number;
}

export type StandInContainer = {
  name: string;
  image: string;
  command: string[];
  args?: string[];
  env: Array<{ name: string; value: string }>;
};

/**
 * The trainer alone: its checkpoint path and world size come from the environment contract
 * (`SPILLWAY_CHECKPOINT_DIR`, `SPILLWAY_NNODES`); it needs no store credentials. JSON events
 * (`checkpoint`, `finished`) on stdout.
 */
export function standInContainer(opts: StandInOptions): StandInContainer {
  return {
    name: "trainer",
    image: SPILLWAY_IMAGE,
    command: [...TRAINER_COMMAND],
    args: [
      "--steps",
      String(opts.steps),
      "--every",
      String(opts.every),
      "--step-delay",
      opts.stepDelay,
      ...(opts.tensorBytes !== undefined ? ["--tensor-bytes", String(opts.tensorBytes)] : []),
      ...(opts.keepLocal !== undefined ? ["--keep-local", String(opts.keepLocal)] : []),
      "--events",
    ],
    env: [],
  };
}

/** The one-process form: restore, agent and trainer in `spillway checkpoint workload`. */
export function allInOneStandInContainer(opts: StandInOptions): StandInContainer {
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

export type StandInEvent = {
  event: string;
  step?: number;
  resumedFrom?: number;
  behindExpected?: boolean;
  rejected?: number[];
};

/** The JSON event lines of a container's log (workload.ts `WorkloadEvent` and the CLI's `--events`). */
export function parseWorkloadEvents(logs: string): StandInEvent[] {
  const out: StandInEvent[] = [];
  for (const line of logs.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      const e = JSON.parse(line) as { event?: unknown };
      if (typeof e.event === "string") out.push(e as StandInEvent);
    } catch {
      // a log line that merely starts with a brace
    }
  }
  return out;
}

/**
 * One pod's events across its containers, in the order they tell the story: the restore
 * (`restored`/`fresh`), the trainer (`checkpoint`…, `finished`), then the agent (`committed`…).
 */
export function podEvents(
  runs: Array<{ uid: string; container: string; logs: string }>,
  uid: string,
): StandInEvent[] {
  const mine = runs.filter((r) => r.uid === uid);
  const rank = (c: string) => (c === RESTORE_CONTAINER ? 0 : c === AGENT_CONTAINER ? 2 : 1);
  return mine
    .sort((a, b) => rank(a.container) - rank(b.container))
    .flatMap((r) => parseWorkloadEvents(r.logs));
}
