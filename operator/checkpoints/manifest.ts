/**
 * The Spillway checkpoint manifest and commit marker, and where they live in a store.
 *
 * Store layout (the store URI points at one run's checkpoint prefix):
 *
 *   blobs/<sha256>                                      content-addressed chunks, shared by checkpoints
 *   checkpoints/<step, 12 digits>/manifest-<sha256>.json  the manifest, named by its own digest
 *   checkpoints/<step, 12 digits>/COMMITTED             written last; names the manifest's digest
 *
 * Each file of a checkpoint is split into fixed-size chunks (default 16 MiB) stored under
 * their sha256, so a file, or a part of a file, that did not change since a previous
 * checkpoint is not uploaded again (safetensors keeps tensors at fixed offsets when only their
 * values change, so a changed tensor dirties only the chunks it spans). A checkpoint is
 * committed only when its marker exists AND the manifest it names exists with that digest: a
 * torn write, a stale manifest or a lost marker all read as "not committed".
 *
 * Why the manifest is named by its digest: two writers of one step (a zombie agent on a lost
 * cluster and the agent of the new attempt, or an agent and a replication) can never clobber
 * each other's manifest, and whichever marker survives names a manifest that is whole. The
 * marker is created with `If-None-Match: *` (first writer wins where the store enforces it)
 * and read back (where it does not), so a writer learns when it lost.
 */
import { createHash } from "node:crypto";
import type { CheckpointLayout, Framework } from "./layout.ts";
import { unsafeRelativePath } from "./paths.ts";

export const MANIFEST_KIND = "SpillwayCheckpoint";
export const MANIFEST_VERSION = 1;
export const DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024;
/** Largest chunk a manifest may declare: chunks are held in memory while verified. */
export const MAX_CHUNK_SIZE = 256 * 1024 * 1024;

export interface ChunkRef {
  sha256: string;
  size: number;
}

export interface ManifestFile {
  /** Relative to the checkpoint directory, `/`-separated. */
  path: string;
  size: number;
  sha256: string;
  chunks: ChunkRef[];
}

export interface CheckpointManifest {
  kind: typeof MANIFEST_KIND;
  version: typeof MANIFEST_VERSION;
  runUid: string;
  step: number;
  /** Directory name the trainer wrote (e.g. `step-000100`); restored under the same name. */
  name: string;
  createdAt: string;
  chunkSize: number;
  framework: Framework;
  worldSize?: number;
  layout: CheckpointLayout;
  files: ManifestFile[];
  totalBytes: number;
}

export interface CommitMarker {
  runUid: string;
  step: number;
  /** `sha256:<hex>` of the manifest.json bytes. */
  manifestDigest: string;
  committedAt: string;
}

export class InvalidManifestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidManifestError";
  }
}

const HEX64 = /^[0-9a-f]{64}$/;

export const stepDir = (step: number) => `checkpoints/${String(step).padStart(12, "0")}`;
/** `digest` is `sha256:<hex>` or the bare hex of the manifest bytes. */
export const manifestKey = (step: number, digest: string) =>
  `${stepDir(step)}/manifest-${digest.replace(/^sha256:/, "")}.json`;
export const markerKey = (step: number) => `${stepDir(step)}/COMMITTED`;
export const blobKey = (sha256: string) => `blobs/${sha256}`;
export const CHECKPOINTS_PREFIX = "checkpoints/";
export const BLOBS_PREFIX = "blobs/";

export const MARKER_LEAF = "COMMITTED";
const MANIFEST_LEAF = /^manifest-([0-9a-f]{64})\.json$/;

/** The digest (`sha256:<hex>`) a manifest leaf name carries, or undefined. */
export function digestOfManifestLeaf(leaf: string): string | undefined {
  const m = MANIFEST_LEAF.exec(leaf);
  return m ? `sha256:${m[1]}` : undefined;
}

/** Parses `checkpoints/<12 digits>/<leaf>` keys; undefined for anything else. */
export function parseCheckpointKey(key: string): { step: number; leaf: string } | undefined {
  const m = /^checkpoints\/(\d{12})\/([^/]+)$/.exec(key);
  return m ? { step: Number(m[1]), leaf: m[2]! } : undefined;
}

export function sha256Hex(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

export function manifestDigest(bytes: Uint8Array): string {
  return `sha256:${sha256Hex(bytes)}`;
}

/** Canonical bytes of a manifest (what is stored and hashed). */
export function encodeManifest(m: CheckpointManifest): Buffer {
  return Buffer.from(`${JSON.stringify(m, null, 1)}\n`, "utf8");
}

/** The step a checkpoint directory's name carries: its last run of digits (`step-000100` → 100). */
export function stepFromName(name: string): number | undefined {
  const m = /(\d+)(?!.*\d)/.exec(name);
  if (!m) return undefined;
  const n = Number(m[1]);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * Validates a manifest read back from a store (untrusted): shape, safe file names, unique
 * paths, sizes that add up, well-formed hashes, chunks within the declared chunk size.
 */
export function parseManifest(bytes: Uint8Array, expectStep?: number): CheckpointManifest {
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch (e) {
    throw new InvalidManifestError(`manifest is not JSON: ${(e as Error).message}`);
  }
  const bad = (msg: string): never => {
    throw new InvalidManifestError(
      `manifest${expectStep !== undefined ? ` of step ${expectStep}` : ""}: ${msg}`,
    );
  };
  if (!raw || typeof raw !== "object") bad("not an object");
  const m = raw as Partial<CheckpointManifest>;
  if (m.kind !== MANIFEST_KIND || m.version !== MANIFEST_VERSION) {
    bad(`unsupported kind/version ${JSON.stringify(m.kind)}/${JSON.stringify(m.version)}`);
  }
  if (typeof m.runUid !== "string" || m.runUid.length === 0) bad("runUid missing");
  if (!Number.isSafeInteger(m.step) || (m.step as number) < 0) bad("step is not a non-negative integer");
  if (expectStep !== undefined && m.step !== expectStep)
    bad(`says step ${m.step}, stored under ${expectStep}`);
  if (typeof m.name !== "string" || unsafeRelativePath(m.name) || m.name.includes("/")) {
    bad(`directory name ${JSON.stringify(m.name)} is not a single safe path segment`);
  }
  if (
    !Number.isSafeInteger(m.chunkSize) ||
    (m.chunkSize as number) < 1 ||
    (m.chunkSize as number) > MAX_CHUNK_SIZE
  ) {
    bad(`chunkSize ${m.chunkSize} outside 1..${MAX_CHUNK_SIZE}`);
  }
  if (!Array.isArray(m.files)) bad("files is not an array");
  const seen = new Set<string>();
  let total = 0;
  for (const f of m.files as ManifestFile[]) {
    const why = unsafeRelativePath(f?.path);
    if (why) bad(`file name ${JSON.stringify(f?.path)} refused: ${why}`);
    if (seen.has(f.path)) bad(`file ${f.path} listed twice`);
    seen.add(f.path);
    if (!Number.isSafeInteger(f.size) || f.size < 0)
      bad(`file ${f.path}: size ${f.size} is not a byte count`);
    if (typeof f.sha256 !== "string" || !HEX64.test(f.sha256))
      bad(`file ${f.path}: sha256 is not 64 hex digits`);
    if (!Array.isArray(f.chunks)) bad(`file ${f.path}: chunks missing`);
    let sum = 0;
    for (const c of f.chunks) {
      if (typeof c?.sha256 !== "string" || !HEX64.test(c.sha256))
        bad(`file ${f.path}: a chunk sha256 is malformed`);
      if (!Number.isSafeInteger(c.size) || c.size < 1 || c.size > (m.chunkSize as number)) {
        bad(`file ${f.path}: chunk size ${c.size} outside 1..${m.chunkSize}`);
      }
      sum += c.size;
    }
    if (sum !== f.size) bad(`file ${f.path}: size ${f.size} but its chunks add up to ${sum}`);
    total += f.size;
  }
  // Paths must not collide as file vs directory (a/b and a/b/c).
  for (const p of seen) {
    for (let i = p.indexOf("/"); i > 0; i = p.indexOf("/", i + 1)) {
      if (seen.has(p.slice(0, i))) bad(`file ${p.slice(0, i)} is also a directory of ${p}`);
    }
  }
  if (m.totalBytes !== total) bad(`totalBytes ${m.totalBytes} but files add up to ${total}`);
  return m as CheckpointManifest;
}

export function parseMarker(bytes: Uint8Array, expectStep: number): CommitMarker {
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch (e) {
    throw new InvalidManifestError(
      `commit marker of step ${expectStep} is not JSON: ${(e as Error).message}`,
    );
  }
  const m = raw as Partial<CommitMarker>;
  if (
    !m ||
    m.step !== expectStep ||
    typeof m.manifestDigest !== "string" ||
    !/^sha256:[0-9a-f]{64}$/.test(m.manifestDigest) ||
    typeof m.committedAt !== "string"
  ) {
    throw new InvalidManifestError(`commit marker of step ${expectStep} is malformed`);
  }
  return m as CommitMarker;
}
