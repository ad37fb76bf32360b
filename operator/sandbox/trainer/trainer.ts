/**
 * The sandbox's trainer stand-in: "trains" for N steps and writes real checkpoint files every
 * K steps, in the layouts the checkpoint agent recognises:
 *
 *   step-000010/
 *     embeddings.safetensors   frozen tensors: identical in every checkpoint (deduplicated)
 *     model.safetensors        tensors of which a part change every step
 *     trainer_state.json       {"step": 10, "worldSize": 2}
 *     __0_0.distcp, __1_0.distcp   one optimizer shard per rank (PyTorch DCP naming)
 *     .metadata                written LAST, as DCP's coordinator does
 *
 * It resumes from the newest complete checkpoint in the path (e.g. one `spillway checkpoint
 * restore` put there) and continues the step counter. Runs in-process (`runTrainer`, for the
 * simulated kubelet) or as `spillway checkpoint trainer`.
 */
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { encodeSafetensors, parseSafetensors, type TensorData } from "../../checkpoints/safetensors.ts";

export interface TrainerOptions {
  /** The checkpoint path (the agent watches the same directory). */
  dir: string;
  /** Train until this step (inclusive). */
  steps: number;
  /** Write a checkpoint every this many steps (and at the last step). */
  every: number;
  /** Ranks: one `.distcp` shard each (default 2). */
  worldSize?: number;
  /** Tensors in model.safetensors (default 8) and bytes of each (default 16 KiB). */
  tensors?: number;
  tensorBytes?: number;
  /** Fraction of model tensors that change every step (default 0.25; the rest change never). */
  changingFraction?: number;
  /** Resume from the newest complete checkpoint in `dir` (default true). */
  resume?: boolean;
  /** Simulated compute time per step (default 0). */
  stepDelayMs?: number;
  /** Also write `.spillway-complete` after each checkpoint (default false: rely on DCP's `.metadata`). */
  writeReadyMarker?: boolean;
  /** Local checkpoint directories kept (older ones removed after each checkpoint; default 3). */
  keepLocal?: number;
  /** Called after each checkpoint directory is complete on disk. */
  onCheckpoint?: (step: number) => void | Promise<void>;
  log?: (line: string) => void;
  signal?: AbortSignal;
}

export interface TrainerResult {
  /** First step trained in this process (resumed step + 1, or 1). */
  startStep: number;
  /** Last step completed. */
  endStep: number;
  /** Step of the checkpoint resumed from, if any. */
  resumedFrom?: number;
  /** Steps checkpointed by this process. */
  checkpoints: number[];
}

export const checkpointName = (step: number) => `step-${String(step).padStart(6, "0")}`;

/** Deterministic bytes for (seed, version): xorshift32, so files are reproducible. */
function fill(bytes: number, seed: number): Uint8Array {
  const out = new Uint32Array(Math.ceil(bytes / 4));
  let x = (seed ^ 0x9e3779b9) >>> 0 || 1;
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x;
  }
  return new Uint8Array(out.buffer, 0, bytes);
}

/** The model's tensors at `step`: tensor i changes every step when i < changing, else never. */
export function modelTensors(
  step: number,
  opts: Pick<TrainerOptions, "tensors" | "tensorBytes" | "changingFraction">,
): Record<string, TensorData> {
  const n = opts.tensors ?? 8;
  const bytes = Math.max(4, Math.floor((opts.tensorBytes ?? 16 * 1024) / 4) * 4);
  const changing = Math.round(n * (opts.changingFraction ?? 0.25));
  const out: Record<string, TensorData> = {};
  for (let i = 0; i < n; i++) {
    const version = i < changing ? step : 0;
    const name = `layers.${String(i).padStart(3, "0")}.weight`;
    out[name] = { dtype: "F32", shape: [bytes / 4], data: fill(bytes, i * 1_000_003 + version) };
  }
  return out;
}

/** The newest checkpoint in `dir` that the trainer finished writing (its `.metadata` exists). */
export async function findResumePoint(dir: string): Promise<{ step: number; name: string } | undefined> {
  let names: string[];
  try {
    names = (await readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch {
    return undefined;
  }
  const candidates = names
    .map((name) => ({ name, m: /^step-(\d+)$/.exec(name) }))
    .filter((c) => c.m)
    .map((c) => ({ name: c.name, step: Number(c.m![1]) }))
    .sort((a, b) => b.step - a.step);
  for (const c of candidates) {
    const ok = await stat(join(dir, c.name, ".metadata")).then(
      () => true,
      () => false,
    );
    if (!ok) continue;
    const state = JSON.parse(await readFile(join(dir, c.name, "trainer_state.json"), "utf8")) as {
      step: number;
    };
    const model = parseSafetensors(await readFile(join(dir, c.name, "model.safetensors")));
    if (state.step !== c.step || model.metadata.step !== String(c.step)) {
      throw new Error(
        `checkpoint ${c.name} is inconsistent: trainer_state says ${state.step}, model ${model.metadata.step}`,
      );
    }
    return { step: c.step, name: c.name };
  }
  return undefined;
}

/** Keeps the `keep` newest local `step-*` directories, as a framework's own rotation does. */
async function pruneLocal(dir: string, keep: number): Promise<void> {
  const steps = (await readdir(dir, { withFileTypes: true }))
    .filter((e) => e.isDirectory() && /^step-\d+$/.test(e.name))
    .map((e) => e.name)
    .sort((a, b) => Number(b.slice(5)) - Number(a.slice(5)));
  for (const name of steps.slice(Math.max(1, keep)))
    await rm(join(dir, name), { recursive: true, force: true });
}

async function writeCheckpoint(dir: string, step: number, opts: TrainerOptions): Promise<void> {
  const worldSize = opts.worldSize ?? 2;
  const final = join(dir, checkpointName(step));
  // A rerun of a step replaces its directory; the agent sees a fresh write.
  await rm(final, { recursive: true, force: true });
  await mkdir(final, { recursive: true });
  const embeddings = {
    "embed.weight": { dtype: "F16", shape: [64, 64], data: fill(64 * 64 * 2, 7) },
  };
  await writeFile(join(final, "embeddings.safetensors"), encodeSafetensors(embeddings, { frozen: "true" }));
  await writeFile(
    join(final, "model.safetensors"),
    encodeSafetensors(modelTensors(step, opts), { step: String(step), format: "pt" }),
  );
  await writeFile(join(final, "trainer_state.json"), `${JSON.stringify({ step, worldSize })}\n`);
  for (let rank = 0; rank < worldSize; rank++) {
    await writeFile(join(final, `__${rank}_0.distcp`), fill(8 * 1024, step * 131 + rank));
  }
  // DCP's coordinator writes .metadata after every rank's shard: it marks the checkpoint complete.
  const tmp = join(final, ".metadata.tmp");
  await writeFile(tmp, `${JSON.stringify({ format: "spillway-trainer-stand-in", step, worldSize })}\n`);
  await rename(tmp, join(final, ".metadata"));
  if (opts.writeReadyMarker) await writeFile(join(final, ".spillway-complete"), "");
}

/** Trains (pretends to), checkpointing every `every` steps; resumes from `dir` when it can. */
export async function runTrainer(opts: TrainerOptions): Promise<TrainerResult> {
  const log = opts.log ?? ((line: string) => console.log(line));
  if (!Number.isInteger(opts.steps) || opts.steps < 0)
    throw new Error(`steps must be ≥ 0, got ${opts.steps}`);
  if (!Number.isInteger(opts.every) || opts.every < 1)
    throw new Error(`every must be ≥ 1, got ${opts.every}`);
  await mkdir(opts.dir, { recursive: true });
  const resumed = opts.resume === false ? undefined : await findResumePoint(opts.dir);
  const startStep = (resumed?.step ?? 0) + 1;
  if (resumed) log(`resuming from checkpoint ${resumed.name} (step ${resumed.step})`);
  else log("starting fresh at step 1");
  const checkpoints: number[] = [];
  let endStep = resumed?.step ?? 0;
  for (let step = startStep; step <= opts.steps; step++) {
    opts.signal?.throwIfAborted();
    if (opts.stepDelayMs) await sleep(opts.stepDelayMs, undefined, { signal: opts.signal });
    endStep = step;
    if (step % opts.every === 0 || step === opts.steps) {
      await writeCheckpoint(opts.dir, step, opts);
      checkpoints.push(step);
      await pruneLocal(opts.dir, opts.keepLocal ?? 3);
      await opts.onCheckpoint?.(step);
      log(
        `step ${step}/${opts.steps} loss=${(2 / Math.sqrt(step)).toFixed(4)} checkpoint ${checkpointName(step)}`,
      );
    }
  }
  log(`finished at step ${endStep}`);
  return { startStep, endStep, ...(resumed ? { resumedFrom: resumed.step } : {}), checkpoints };
}
