/** The checkpoint format on its own: safetensors headers, manifests, chunking, resume rules, env. */
import { mkdtempSync, rmSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  decideResume,
  encodeSafetensors,
  parseManifest,
  parseSafetensors,
  SafetensorsError,
  summarizeRestore,
} from "../../operator/checkpoints/index.ts";
import { encodeManifest } from "../../operator/checkpoints/manifest.ts";
import { tensorAlignedPlan } from "../../operator/checkpoints/upload.ts";
import { workloadFromEnv } from "../../operator/sandbox/trainer/workload.ts";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "spillway-ckfmt-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A safetensors file whose 8-byte length prefix and JSON header are given verbatim. */
function rawSafetensors(headerLength: bigint | undefined, header: string, data = 0): Buffer {
  const json = Buffer.from(header);
  const out = Buffer.alloc(8 + json.length + data);
  out.writeBigUInt64LE(headerLength ?? BigInt(json.length), 0);
  json.copy(out, 8);
  return out;
}

describe("safetensors headers are untrusted input", () => {
  it("reads back what it wrote: names, dtypes, shapes, offsets and metadata", () => {
    const file = encodeSafetensors(
      {
        b: { dtype: "F16", shape: [2, 3], data: new Uint8Array(12) },
        a: { dtype: "I64", shape: [1], data: new Uint8Array(8) },
      },
      { step: "7" },
    );
    const h = parseSafetensors(file);
    expect(h.metadata).toEqual({ step: "7" });
    expect(h.tensors.map((t) => [t.name, t.dtype, t.shape, t.begin, t.end])).toEqual([
      ["a", "I64", [1], 0, 8],
      ["b", "F16", [2, 3], 8, 20],
    ]);
    expect(h.dataStart % 8).toBe(0);
  });

  it.each([
    ["a header length that overflows the file", rawSafetensors(1000n, "{}"), "overflows the file"],
    [
      "a header length past 2^63",
      rawSafetensors(0xffff_ffff_ffff_fff0n, "{}"),
      "exceeds the 100000000-byte cap",
    ],
    ["a file shorter than the length prefix", Buffer.alloc(5), "too short"],
    [
      "offsets past the data section",
      rawSafetensors(undefined, '{"t":{"dtype":"U8","shape":[4],"data_offsets":[0,400]}}   ', 4),
      "run past the data section",
    ],
    [
      "a shape that disagrees with the byte span",
      rawSafetensors(undefined, '{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}} ', 4),
      "is 8 bytes but data_offsets span 4",
    ],
    [
      "a shape whose element count overflows",
      rawSafetensors(
        undefined,
        '{"t":{"dtype":"F64","shape":[9007199254740991,9007199254740991],"data_offsets":[0,8]}} ',
        8,
      ),
      "data_offsets span 8",
    ],
    [
      "overlapping tensors",
      rawSafetensors(
        undefined,
        '{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}',
        4,
      ),
      "overlaps the previous tensor",
    ],
    [
      "an unknown dtype",
      rawSafetensors(undefined, '{"t":{"dtype":"Q7","shape":[],"data_offsets":[0,0]}}'),
      'unknown dtype "Q7"',
    ],
  ])("refuses %s", (_what, file, message) => {
    expect(() => parseSafetensors(file)).toThrow(SafetensorsError);
    expect(() => parseSafetensors(file)).toThrow(message);
  });
});

describe("tensor-aligned chunks", () => {
  it("cut at tensor starts, never exceed the chunk size, and cover the whole file", async () => {
    const mib = 1024 * 1024;
    const tensors = {
      big: { dtype: "U8", shape: [5 * mib], data: new Uint8Array(5 * mib) },
      small1: { dtype: "U8", shape: [100], data: new Uint8Array(100) },
      small2: { dtype: "U8", shape: [200], data: new Uint8Array(200) },
      mid: { dtype: "U8", shape: [1.5 * mib], data: new Uint8Array(1.5 * mib) },
    };
    const file = join(dir, "model.safetensors");
    const bytes = encodeSafetensors(tensors);
    await writeFile(file, bytes);
    const h = parseSafetensors(bytes);
    const plan = await tensorAlignedPlan(file, 2 * mib);
    expect(plan.reduce((a, b) => a + b, 0)).toBe(bytes.length);
    expect(Math.max(...plan)).toBeLessThanOrEqual(2 * mib);
    const cuts = new Set(plan.map((_, i) => plan.slice(0, i).reduce((a, b) => a + b, 0)));
    // Each tensor that does not fit in the chunk before it starts a chunk of its own.
    const startOf = (name: string) => h.dataStart + h.tensors.find((t) => t.name === name)!.begin;
    expect(cuts.has(startOf("big"))).toBe(true);
    expect(cuts.has(startOf("mid"))).toBe(true);
    // Small neighbours share a chunk rather than making tiny blobs.
    expect(cuts.has(startOf("small2"))).toBe(false);
  });

  it("falls back to fixed chunks when the header is unreadable", async () => {
    const file = join(dir, "broken.safetensors");
    await writeFile(file, "not a safetensors file");
    expect(await tensorAlignedPlan(file, 1024)).toEqual([]);
  });
});

describe("manifests read back from a store are validated", () => {
  const good = () => ({
    kind: "SpillwayCheckpoint" as const,
    version: 1 as const,
    runUid: "u",
    step: 5,
    name: "step-000005",
    createdAt: "2026-01-01T00:00:00Z",
    chunkSize: 4,
    framework: "unknown" as const,
    layout: { framework: "unknown" as const, dcp: [], safetensors: [] },
    files: [
      {
        path: "a/b",
        size: 6,
        sha256: "a".repeat(64),
        chunks: [
          { sha256: "b".repeat(64), size: 4 },
          { sha256: "c".repeat(64), size: 2 },
        ],
      },
    ],
    totalBytes: 6,
  });

  it("accepts a consistent manifest", () => {
    expect(parseManifest(encodeManifest(good()), 5).files[0]?.path).toBe("a/b");
  });

  it.each([
    ["a step other than its key's", (m: ReturnType<typeof good>) => m, 6, "stored under 6"],
    [
      "a chunk larger than the chunk size",
      (m: ReturnType<typeof good>) => {
        m.files[0]!.chunks[0]!.size = 5;
        m.files[0]!.size = 7;
        m.totalBytes = 7;
        return m;
      },
      5,
      "outside 1..4",
    ],
    [
      "a malformed hash",
      (m: ReturnType<typeof good>) => {
        m.files[0]!.sha256 = "xyz";
        return m;
      },
      5,
      "not 64 hex digits",
    ],
    [
      "a file listed twice",
      (m: ReturnType<typeof good>) => {
        m.files.push({ ...m.files[0]! });
        m.totalBytes = 12;
        return m;
      },
      5,
      "listed twice",
    ],
    [
      "a file that is also a directory",
      (m: ReturnType<typeof good>) => {
        m.files.push({ ...m.files[0]!, path: "a" });
        m.totalBytes = 12;
        return m;
      },
      5,
      "is also a directory",
    ],
    [
      "an absolute path",
      (m: ReturnType<typeof good>) => {
        m.files[0]!.path = "/etc/passwd";
        return m;
      },
      5,
      "absolute path",
    ],
    [
      "a total that does not add up",
      (m: ReturnType<typeof good>) => {
        m.totalBytes = 1;
        return m;
      },
      5,
      "files add up to 6",
    ],
    [
      "a directory name with a slash",
      (m: ReturnType<typeof good>) => {
        m.name = "a/b";
        return m;
      },
      5,
      "single safe path segment",
    ],
  ])("refuses %s", (_what, mutate, step, message) => {
    expect(() => parseManifest(encodeManifest(mutate(good())), step)).toThrow(message);
  });

  it("refuses bytes that are not JSON", () => {
    expect(() => parseManifest(Buffer.from("{nope"))).toThrow("manifest is not JSON");
  });
});

describe("resume across world sizes", () => {
  it("allows the same or an unknown world size and full safetensors anywhere", () => {
    expect(decideResume({ framework: "pytorch-dcp", worldSize: 4 }, 4).allowed).toBe(true);
    expect(decideResume({ framework: "safetensors" }, 8).allowed).toBe(true);
    expect(decideResume({ framework: "pytorch-dcp", worldSize: 4 }, undefined).allowed).toBe(true);
  });
  it("refuses a DCP checkpoint of another world size unless resharding is allowed", () => {
    const refused = decideResume({ framework: "pytorch-dcp", worldSize: 4 }, 2);
    expect(refused).toEqual({
      allowed: false,
      reason:
        "checkpoint was written by 4 ranks but the run has 2 (allow resharding to resume a DCP checkpoint anyway)",
    });
    expect(decideResume({ framework: "pytorch-dcp", worldSize: 4 }, 2, { allowReshard: true }).allowed).toBe(
      true,
    );
  });
});

describe("the trainer container's environment", () => {
  it("reads the contract the remote Job carries", () => {
    expect(
      workloadFromEnv({
        SPILLWAY_CHECKPOINT_DIR: "/checkpoints",
        SPILLWAY_CHECKPOINT_STORE: "s3://b/runs/u",
        SPILLWAY_RESUME_STEP: "120",
        SPILLWAY_RUN_UID: "u",
        SPILLWAY_NNODES: "4",
      }),
    ).toEqual({
      checkpointDir: "/checkpoints",
      storeUri: "s3://b/runs/u",
      runUid: "u",
      resumeStep: 120,
      worldSize: 4,
      steps: 100,
      every: 10,
      stepDelayMs: 0,
    });
  });
  it("names the variable at fault", () => {
    expect(() => workloadFromEnv({ SPILLWAY_CHECKPOINT_STORE: "s3://b/x" })).toThrow(
      "SPILLWAY_CHECKPOINT_DIR is required",
    );
    expect(() =>
      workloadFromEnv({
        SPILLWAY_CHECKPOINT_DIR: "/c",
        SPILLWAY_CHECKPOINT_STORE: "s3://b/x",
        SPILLWAY_RESUME_STEP: "ten",
      }),
    ).toThrow("SPILLWAY_RESUME_STEP must be a non-negative integer, got ten");
  });
});

describe("the restore summary for the termination log", () => {
  it("stays under Kubernetes' 4096-byte cap however many checkpoints were rejected", () => {
    const rejected = Array.from({ length: 50 }, (_, i) => ({
      step: 1000 - i,
      reason: "Corrupt" as const,
      message: `step ${1000 - i}: ${"x".repeat(2000)}`,
    }));
    const summary = summarizeRestore({
      outcome: "AllRejected",
      rejected,
      uncommitted: [1001, 1002],
      bytesRead: 0,
      behindExpected: true,
    });
    expect(Buffer.byteLength(JSON.stringify(summary))).toBeLessThan(4096);
    expect(summary.rejected).toHaveLength(8);
    expect(summary.rejected[0]?.message).toMatch(/^step 1000: x+…$/);
    expect(summary).toMatchObject({ outcome: "AllRejected", uncommitted: 2, behindExpected: true });
  });
});
