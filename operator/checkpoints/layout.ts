/**
 * Recognising what a checkpoint directory holds, so the manifest records it and a resume on a
 * different world size is refused or allowed knowingly.
 *
 * - PyTorch Distributed Checkpoint (DCP): `__<rank>_<n>.distcp` shards plus a `.metadata`
 *   file the coordinator writes last. `.metadata` is a pickle, which we do not parse; the world
 *   size comes from the shard names (ranks 0..N-1).
 * - safetensors: every `*.safetensors` file's header is parsed and validated; tensor names,
 *   dtypes and shapes are recorded.
 */
import { join } from "node:path";
import { readSafetensorsHeader } from "./safetensors.ts";

export type Framework = "pytorch-dcp" | "safetensors" | "unknown";

export interface DcpLayout {
  /** Directory of the shards, relative to the checkpoint directory ("" = top level). */
  dir: string;
  worldSize: number;
  shards: string[];
  hasMetadata: boolean;
  /** Ranks missing from 0..worldSize-1 (a torn or foreign layout). */
  missingRanks: number[];
}

export interface SafetensorsFileLayout {
  file: string;
  tensors: Array<{ name: string; dtype: string; shape: number[] }>;
  metadata: Record<string, string>;
}

export interface CheckpointLayout {
  /** The framework the checkpoint is resumed by (DCP wins when both are present). */
  framework: Framework;
  /** Known when a DCP layout is present. */
  worldSize?: number;
  dcp: DcpLayout[];
  safetensors: SafetensorsFileLayout[];
}

const DCP_SHARD = /^__(\d+)_(\d+)\.distcp$/;

/**
 * Describes a checkpoint from its file list (paths relative to `dir`, `/`-separated).
 * Safetensors headers are read from disk and validated; an invalid one throws.
 */
export async function describeLayout(dir: string, files: string[]): Promise<CheckpointLayout> {
  const byDir = new Map<string, string[]>();
  for (const f of files) {
    const slash = f.lastIndexOf("/");
    const d = slash < 0 ? "" : f.slice(0, slash);
    const list = byDir.get(d) ?? [];
    list.push(slash < 0 ? f : f.slice(slash + 1));
    byDir.set(d, list);
  }
  const dcp: DcpLayout[] = [];
  for (const [d, names] of [...byDir.entries()].sort()) {
    const shards = names.filter((n) => DCP_SHARD.test(n)).sort();
    if (shards.length === 0) continue;
    const ranks = new Set(shards.map((s) => Number(DCP_SHARD.exec(s)![1])));
    const worldSize = Math.max(...ranks) + 1;
    const missingRanks: number[] = [];
    for (let r = 0; r < worldSize; r++) if (!ranks.has(r)) missingRanks.push(r);
    dcp.push({ dir: d, worldSize, shards, hasMetadata: names.includes(".metadata"), missingRanks });
  }
  const safetensors: SafetensorsFileLayout[] = [];
  for (const f of files.filter((x) => x.endsWith(".safetensors")).sort()) {
    const h = await readSafetensorsHeader(join(dir, f));
    safetensors.push({
      file: f,
      tensors: h.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape })),
      metadata: h.metadata,
    });
  }
  const framework: Framework =
    dcp.length > 0 ? "pytorch-dcp" : safetensors.length > 0 ? "safetensors" : "unknown";
  const worldSizes = new Set(dcp.map((d) => d.worldSize));
  const worldSize =
    worldSizes.size === 1 ? [...worldSizes][0] : dcp.length ? Math.max(...worldSizes) : undefined;
  return { framework, ...(worldSize !== undefined ? { worldSize } : {}), dcp, safetensors };
}

/** True when the framework has finished writing: every DCP directory has its `.metadata`. */
export function dcpComplete(layout: CheckpointLayout): boolean {
  return layout.dcp.every((d) => d.hasMetadata && d.missingRanks.length === 0);
}

export interface ResumeDecision {
  allowed: boolean;
  reason: string;
}

export interface ResumeOptions {
  /** Allow a DCP checkpoint to be loaded on a different world size (DCP reshards on load). */
  allowReshard?: boolean;
}

/**
 * May a checkpoint be resumed by `targetWorldSize` workers? Same world size, or an unknown
 * one, is allowed; DCP reshards on load, so a different world size is allowed only when the
 * caller opts in; a full (unsharded) safetensors state dict loads anywhere.
 */
export function decideResume(
  checkpoint: { framework: Framework; worldSize?: number },
  targetWorldSize: number | undefined,
  opts: ResumeOptions = {},
): ResumeDecision {
  if (targetWorldSize === undefined)
    return { allowed: true, reason: "target world size not given; not checked" };
  if (checkpoint.worldSize === undefined) {
    return checkpoint.framework === "safetensors"
      ? { allowed: true, reason: "a full (unsharded) safetensors state dict loads on any world size" }
      : { allowed: true, reason: "the checkpoint's world size is unknown; not checked" };
  }
  if (checkpoint.worldSize === targetWorldSize) {
    return { allowed: true, reason: `same world size (${targetWorldSize})` };
  }
  if (checkpoint.framework === "pytorch-dcp" && opts.allowReshard) {
    return {
      allowed: true,
      reason: `PyTorch DCP checkpoint written by ${checkpoint.worldSize} ranks will be resharded on load by ${targetWorldSize}`,
    };
  }
  return {
    allowed: false,
    reason:
      `checkpoint was written by ${checkpoint.worldSize} ranks but the run has ${targetWorldSize}` +
      (checkpoint.framework === "pytorch-dcp" ? " (allow resharding to resume a DCP checkpoint anyway)" : ""),
  };
}
