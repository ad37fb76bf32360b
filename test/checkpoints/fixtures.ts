/** Checkpoint directories and store wrappers shared by the checkpoint tests. */
import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join, relative } from "node:path";
import type { ObjectStore, PutResult, WriteOptions } from "../../operator/dataplane/store.ts";
import { checkpointName, runTrainer } from "../../operator/sandbox/trainer/trainer.ts";

/** Writes the trainer stand-in's checkpoint for `step` (and only it) into `dir`; returns its path. */
export async function trainerCheckpoint(
  dir: string,
  step: number,
  opts: { tensors?: number; tensorBytes?: number; worldSize?: number } = {},
): Promise<string> {
  // resume:false + every=step writes exactly one checkpoint, at `step`.
  await runTrainer({ dir, steps: step, every: step, resume: false, keepLocal: 100, log: () => {}, ...opts });
  return join(dir, checkpointName(step));
}

/** sha256 of every file under `dir`, keyed by relative path (what "bit-exact" compares). */
export async function digestTree(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const full = join(d, e.name);
      if (e.isDirectory()) await walk(full);
      else
        out[relative(dir, full)] = createHash("sha256")
          .update(await readFile(full))
          .digest("hex");
    }
  };
  await walk(dir);
  return out;
}

/**
 * A store that "crashes" (throws, as a killed process would stop) when a key matching `at` is
 * about to be written: the writes before it landed, nothing after it happens.
 */
export function crashingStore(inner: ObjectStore, at: RegExp): ObjectStore {
  return new Proxy(inner, {
    get(target, prop, receiver) {
      if (prop === "put") {
        return (key: string, body: Uint8Array, options?: WriteOptions): Promise<PutResult> => {
          if (at.test(key)) return Promise.reject(new Error(`simulated crash before writing ${key}`));
          return target.put(key, body, options);
        };
      }
      const v = Reflect.get(target, prop, receiver);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

/** Counts chunk-blob bytes written through a store (the bytes a checkpoint really sent). */
export function countingStore(inner: ObjectStore): { store: ObjectStore; blobBytes: () => number } {
  let n = 0;
  const store = new Proxy(inner, {
    get(target, prop, receiver) {
      if (prop === "put") {
        return (key: string, body: Uint8Array, options?: WriteOptions): Promise<PutResult> => {
          if (key.startsWith("blobs/")) n += body.length;
          return target.put(key, body, options);
        };
      }
      const v = Reflect.get(target, prop, receiver);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return { store, blobBytes: () => n };
}
