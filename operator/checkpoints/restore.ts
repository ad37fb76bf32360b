/**
 * Restoring the newest committed checkpoint that verifies. Each candidate is downloaded into
 * a hidden staging directory, every chunk and every whole file checked against the manifest;
 * only a fully verified checkpoint is renamed into place. A candidate that fails (missing or
 * corrupted blob, manifest that lies about sizes or hashes, refused file name) is reported
 * and the next older committed checkpoint is tried.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdir, open, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { ObjectStore } from "../dataplane/store.ts";
import { decideResume, type ResumeDecision } from "./layout.ts";
import type { CheckpointManifest } from "./manifest.ts";
import { joinConfined, PathRefusedError } from "./paths.ts";
import {
  CheckpointRejectedError,
  type CommittedCheckpoint,
  listSteps,
  loadCommitted,
  readVerifiedChunk,
} from "./repository.ts";

export interface RejectedCheckpoint {
  step: number;
  reason:
    | "NotCommitted"
    | "InvalidManifest"
    | "Corrupt"
    | "Conflict"
    | "PathRefused"
    | "WorldSizeMismatch"
    | "RunMismatch";
  message: string;
}

/**
 * The outcome of a restore, shaped for the operator: `outcome` and `rejected` become Events
 * (`CheckpointRestored`, `CheckpointRejected`), `restored` the status' checkpoint.
 */
export interface RestoreResult {
  outcome: "Restored" | "NoCheckpoint" | "AllRejected";
  restored?: CommittedCheckpoint & { directory: string; resume: ResumeDecision };
  /** Newer committed checkpoints skipped, newest first, each with why. */
  rejected: RejectedCheckpoint[];
  /** Steps found without a commit marker (never restored). */
  uncommitted: number[];
  bytesRead: number;
  /** True when `expectStep` was given and what was restored (or nothing) is older. */
  behindExpected: boolean;
}

export interface RestoreOptions {
  /** Refuse checkpoints of another run. */
  runUid?: string;
  /** The world size the resumed run will have, checked with `decideResume`. */
  worldSize?: number;
  allowReshard?: boolean;
  /** Chunks fetched ahead while restoring (default 4). */
  concurrency?: number;
  /**
   * The step the operator expects at least (SPILLWAY_RESUME_STEP: what it replicated to this
   * store before dispatch). Restoring an older one is reported (`behindExpected`), not refused:
   * the newer one may have failed verification, and resuming older beats starting fresh.
   */
  expectStep?: number;
  /** Progress/warning lines (one per rejected checkpoint and one for the result). */
  log?: (line: string) => void;
}

/** Name of the file the restore leaves in the checkpoint path, describing what it restored. */
export const RESTORE_RECORD = ".spillway-restored.json";

export async function restoreLatest(
  store: ObjectStore,
  path: string,
  opts: RestoreOptions = {},
): Promise<RestoreResult> {
  const log = opts.log ?? (() => {});
  const { marked, unmarked } = await listSteps(store);
  const rejected: RejectedCheckpoint[] = [];
  let bytesRead = 0;
  await mkdir(path, { recursive: true });
  for (const step of marked) {
    const staging = join(path, `.spillway-restore-${step}-${randomBytes(4).toString("hex")}`);
    try {
      const loaded = await loadCommitted(store, step);
      const m = loaded.manifest;
      if (opts.runUid && m.runUid !== opts.runUid) {
        throw new RestoreRefusal(
          step,
          "RunMismatch",
          `step ${step} belongs to run ${m.runUid}, not ${opts.runUid}`,
        );
      }
      const resume = decideResume(m, opts.worldSize, { allowReshard: opts.allowReshard ?? false });
      if (!resume.allowed)
        throw new RestoreRefusal(step, "WorldSizeMismatch", `step ${step}: ${resume.reason}`);
      bytesRead += await downloadInto(store, m, staging, Math.max(1, opts.concurrency ?? 4));
      const target = joinConfined(path, m.name, "checkpoint directory name");
      await rm(target, { recursive: true, force: true });
      await rename(staging, target);
      const restored = { ...loaded.info, directory: target, resume };
      await writeFile(
        join(path, RESTORE_RECORD),
        `${JSON.stringify({ step, name: m.name, manifestDigest: loaded.info.manifestDigest }, null, 1)}\n`,
      );
      log(
        `restored checkpoint step ${step} (${m.files.length} files, ${m.totalBytes} bytes, ${loaded.info.manifestDigest.slice(0, 19)}…) into ${target}` +
          (rejected.length
            ? `; skipped newer: ${rejected.map((r) => `${r.step} (${r.reason})`).join(", ")}`
            : ""),
      );
      const behindExpected = opts.expectStep !== undefined && step < opts.expectStep;
      if (behindExpected) log(`restored step ${step} is older than the expected step ${opts.expectStep}`);
      return { outcome: "Restored", restored, rejected, uncommitted: unmarked, bytesRead, behindExpected };
    } catch (e) {
      await rm(staging, { recursive: true, force: true });
      const r = asRejection(step, e);
      if (!r) throw e;
      rejected.push(r);
      log(`checkpoint step ${step} rejected (${r.reason}): ${r.message}`);
    }
  }
  const outcome = rejected.length ? "AllRejected" : "NoCheckpoint";
  log(
    outcome === "NoCheckpoint"
      ? "no committed checkpoint in the store: starting fresh"
      : "every committed checkpoint was rejected",
  );
  return {
    outcome,
    rejected,
    uncommitted: unmarked,
    bytesRead,
    behindExpected: opts.expectStep !== undefined,
  };
}

/** What an init container hands the operator (Kubernetes caps a termination message at 4096 bytes). */
export interface RestoreSummary {
  outcome: RestoreResult["outcome"];
  step?: number;
  digest?: string;
  behindExpected: boolean;
  /** Newest first, at most 8, messages cut to 240 characters. */
  rejected: Array<{ step: number; reason: RejectedCheckpoint["reason"]; message: string }>;
  uncommitted: number;
  bytesRead: number;
}

/** A restore result small enough for `/dev/termination-log`, from which the operator makes Events. */
export function summarizeRestore(r: RestoreResult): RestoreSummary {
  return {
    outcome: r.outcome,
    ...(r.restored ? { step: r.restored.step, digest: r.restored.manifestDigest } : {}),
    behindExpected: r.behindExpected,
    rejected: r.rejected.slice(0, 8).map((x) => ({
      step: x.step,
      reason: x.reason,
      message: x.message.length > 240 ? `${x.message.slice(0, 239)}…` : x.message,
    })),
    uncommitted: r.uncommitted.length,
    bytesRead: r.bytesRead,
  };
}

class RestoreRefusal extends Error {
  constructor(
    readonly step: number,
    readonly reason: RejectedCheckpoint["reason"],
    message: string,
  ) {
    super(message);
  }
}

function asRejection(step: number, e: unknown): RejectedCheckpoint | undefined {
  if (e instanceof RestoreRefusal) return { step, reason: e.reason, message: e.message };
  if (e instanceof CheckpointRejectedError) return { step, reason: e.reason, message: e.message };
  if (e instanceof PathRefusedError)
    return { step, reason: "PathRefused", message: `step ${step}: ${e.message}` };
  return undefined;
}

/**
 * Downloads every file of a manifest into `dir`, verifying chunks and whole files. Up to
 * `concurrency` chunks are fetched ahead of the one being written, and written in order (so the
 * whole-file hash is computed on the way): memory stays at `concurrency` chunks.
 */
async function downloadInto(
  store: ObjectStore,
  m: CheckpointManifest,
  dir: string,
  concurrency: number,
): Promise<number> {
  let bytes = 0;
  await mkdir(dir, { recursive: true });
  for (const f of m.files) {
    const target = joinConfined(dir, f.path, "manifest file name");
    await mkdir(dirname(target), { recursive: true });
    const fh = await open(target, "wx");
    const hash = createHash("sha256");
    let size = 0;
    const fetches: Array<Promise<Buffer>> = [];
    const fetchAt = (index: number) => {
      const chunk = f.chunks[index];
      if (!chunk) return;
      const p = readVerifiedChunk(store, chunk, { step: m.step, file: f.path, index });
      p.catch(() => {}); // awaited in order below; this only silences an early rejection
      fetches[index] = p;
    };
    try {
      for (let i = 0; i < Math.min(concurrency, f.chunks.length); i++) fetchAt(i);
      for (let index = 0; index < f.chunks.length; index++) {
        const data = await fetches[index]!;
        delete fetches[index];
        fetchAt(index + concurrency);
        hash.update(data);
        size += data.length;
        bytes += data.length;
        await fh.write(data);
      }
      await fh.sync();
    } finally {
      await fh.close();
      // Let prefetches still in flight settle before the staging directory is removed.
      await Promise.allSettled(fetches.filter(Boolean));
    }
    const got = hash.digest("hex");
    if (size !== f.size || got !== f.sha256) {
      throw new CheckpointRejectedError(
        m.step,
        "Corrupt",
        `step ${m.step}: ${f.path} restored as ${size} bytes sha256 ${got.slice(0, 12)}…, manifest says ${f.size} bytes sha256 ${f.sha256.slice(0, 12)}…`,
      );
    }
  }
  return bytes;
}
