/**
 * Checkpoint throughput and memory on the real emulators (Azurite = Azure, s3rver = OCI's S3
 * API), ours against the plain SDK route in the same run:
 *
 * 1. One checkpoint of CKPT_BENCH_MIB (default 256 MiB: a safetensors model of 8 MiB tensors):
 *    write+commit to Azure, replicate Azure → OCI, restore from OCI (verified, bit-exact).
 *    Peer: the SDKs' own parallel upload to Azurite, a streamed Azurite → s3rver copy
 *    (download piped into @aws-sdk/lib-storage's Upload), a streamed download to a file.
 * 2. CKPT_BENCH_SERIES (default 10) successive checkpoints of CKPT_BENCH_SERIES_MIB (default
 *    256 MiB) where 10 % of the tensors change each time: bytes sent and time, against
 *    uploading each checkpoint whole with the SDK. (The issue's 2 GiB model:
 *    CKPT_BENCH_SERIES_MIB=2048; on two cores the emulators make that take several minutes.)
 *
 * Memory: peak live memory (JS heap + buffers) during each phase, above the level before it
 * after a GC (sampled every 20 ms; `npm run bench` runs with --expose-gc). Both emulators are single-threaded Node servers on the same two cores: they,
 * not the client, set the ceiling, so compare the columns, not the absolute figures.
 */
import { createHash, randomFillSync } from "node:crypto";
import { createReadStream, createWriteStream, mkdtempSync, rmSync } from "node:fs";
import { copyFile, mkdir, open, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { GetObjectCommand } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { replicateCheckpoint } from "../operator/checkpoints/replicate.ts";
import { restoreLatest } from "../operator/checkpoints/restore.ts";
import { uploadCheckpoint } from "../operator/checkpoints/upload.ts";
import { openStore } from "../operator/dataplane/store.ts";
import { AZURITE_ACCOUNT, AzuriteEmulator, S3rverEmulator } from "../operator/sandbox/emulators/index.ts";

const MiB = 1024 * 1024;
const envInt = (name: string, fallback: number) => {
  const n = Number(process.env[name] ?? fallback);
  return Number.isInteger(n) && n > 0 ? n : fallback;
};
const SIZE_MIB = envInt("CKPT_BENCH_MIB", 256);
const SERIES = envInt("CKPT_BENCH_SERIES", 10);
const SERIES_MIB = envInt("CKPT_BENCH_SERIES_MIB", 256);
const TENSOR_MIB = 8;
const CONTAINER = "bench-checkpoints";
const BUCKET = "bench-checkpoints";

interface Figure {
  what: string;
  who: "spillway" | "sdk";
  bytes: number;
  seconds: number;
  peakMemMiB: number;
}
const figures: Figure[] = [];

/** Live memory: JS heap plus buffers outside it (RSS never shrinks back, so it hides peaks). */
const liveMemory = () => {
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
};

/** Runs `fn`, recording time and peak live memory above the level before it. */
async function measure<T>(what: string, who: Figure["who"], bytes: number, fn: () => Promise<T>): Promise<T> {
  (globalThis as { gc?: () => void }).gc?.();
  const base = liveMemory();
  let peak = base;
  const sampler = setInterval(() => {
    peak = Math.max(peak, liveMemory());
  }, 20);
  const t0 = performance.now();
  try {
    const out = await fn();
    const seconds = (performance.now() - t0) / 1000;
    peak = Math.max(peak, liveMemory());
    const f = { what, who, bytes, seconds, peakMemMiB: (peak - base) / MiB };
    figures.push(f);
    console.log(
      `  ${who.padEnd(8)} ${what.padEnd(34)} ${(bytes / MiB).toFixed(0).padStart(6)} MiB ${seconds.toFixed(2).padStart(7)} s ${(bytes / MiB / seconds).toFixed(1).padStart(7)} MiB/s  peak memory +${f.peakMemMiB.toFixed(0)} MiB`,
    );
    return out;
  } finally {
    clearInterval(sampler);
  }
}

/**
 * Writes a safetensors file of `tensors` U8 tensors of TENSOR_MIB each, streaming (never the
 * whole file in memory). Tensor i's bytes come from `seedOf(i)`: the same seed, the same bytes.
 */
async function writeModel(path: string, tensors: number, seedOf: (i: number) => number): Promise<void> {
  const size = TENSOR_MIB * MiB;
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  for (let i = 0; i < tensors; i++) {
    header[`layers.${String(i).padStart(4, "0")}.weight`] = {
      dtype: "U8",
      shape: [size],
      data_offsets: [i * size, (i + 1) * size],
    };
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const fh = await open(path, "w");
  try {
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(json.length));
    await fh.write(prefix);
    await fh.write(Buffer.from(json));
    const buf = Buffer.allocUnsafe(size);
    for (let i = 0; i < tensors; i++) {
      await fh.write(tensorBytes(buf, seedOf(i)));
    }
  } finally {
    await fh.close();
  }
}

/** Rewrites tensor `i` of a model file written by writeModel, in place. */
async function rewriteTensor(path: string, i: number, seed: number, dataStart: number): Promise<void> {
  const fh = await open(path, "r+");
  try {
    await fh.write(
      tensorBytes(Buffer.allocUnsafe(TENSOR_MIB * MiB), seed),
      0,
      TENSOR_MIB * MiB,
      dataStart + i * TENSOR_MIB * MiB,
    );
  } finally {
    await fh.close();
  }
}

/** Pseudo-random bytes for a seed: one random 64 KiB block, each 64 KiB stamped with (seed, index). */
function tensorBytes(buf: Buffer, seed: number): Buffer {
  const block = Buffer.allocUnsafe(64 * 1024);
  randomFillSync(block);
  for (let off = 0; off < buf.length; off += block.length) {
    block.writeUInt32LE(seed >>> 0, 0);
    block.writeUInt32LE(off / block.length, 4);
    block.copy(buf, off);
  }
  return buf;
}

async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const c of createReadStream(path, { highWaterMark: 4 * MiB })) h.update(c as Buffer);
  return h.digest("hex");
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "spillway-ckpt-bench-"));
  const [azurite, s3rver] = await Promise.all([
    AzuriteEmulator.start({ dir: join(dir, "azurite"), containers: [CONTAINER] }),
    S3rverEmulator.start({ dir: join(dir, "s3rver"), buckets: [BUCKET] }),
  ]);
  const credentials = {
    azure: { connectionString: azurite.connectionString },
    s3: { accessKeyId: s3rver.accessKeyId, secretAccessKey: s3rver.secretAccessKey },
  };
  const azureUri = (p: string) =>
    `azblob://${AZURITE_ACCOUNT}/${CONTAINER}/${p}?endpoint=${encodeURIComponent(azurite.blobEndpoint)}`;
  const s3Uri = (p: string) => `s3://${BUCKET}/${p}?endpoint=${encodeURIComponent(s3rver.endpoint)}`;
  const container = azurite.client().getContainerClient(CONTAINER);
  const s3 = s3rver.client();
  try {
    // ---- 1. one checkpoint: write, replicate across clouds, restore ----
    const tensors = Math.max(1, Math.round(SIZE_MIB / TENSOR_MIB));
    const ckpt = join(dir, "work", "step-000100");
    await mkdir(ckpt, { recursive: true });
    const model = join(ckpt, "model.safetensors");
    await writeModel(model, tensors, (i) => i);
    await writeFile(join(ckpt, "trainer_state.json"), '{"step":100}\n');
    const bytes = (await stat(model)).size;
    const want = await sha256File(model);
    console.log(
      `checkpoint: ${(bytes / MiB).toFixed(0)} MiB safetensors (${tensors} tensors of ${TENSOR_MIB} MiB)`,
    );

    const azure = await openStore(azureUri("run-1"), credentials);
    const oci = await openStore(s3Uri("run-1"), credentials);
    const up = await measure("write+commit → Azure", "spillway", bytes, () =>
      uploadCheckpoint(azure, ckpt, "step-000100", { runUid: "bench", step: 100 }),
    );
    await measure("upload → Azure (uploadFile)", "sdk", bytes, () =>
      container
        .getBlockBlobClient("peer/model.safetensors")
        .uploadFile(model, { blockSize: 16 * MiB, concurrency: 4 }),
    );
    const rep = await measure("replicate Azure → OCI", "spillway", bytes, () =>
      replicateCheckpoint(azure, oci, 100),
    );
    await measure("copy Azure → OCI (stream+Upload)", "sdk", bytes, async () => {
      const dl = await container.getBlobClient("peer/model.safetensors").download();
      const upload = new Upload({
        client: s3,
        params: { Bucket: BUCKET, Key: "peer/model.safetensors", Body: dl.readableStreamBody as Readable },
        partSize: 16 * MiB,
        queueSize: 4,
      });
      await upload.done();
    });
    const out = join(dir, "restore");
    const restored = await measure("restore ← OCI (verified)", "spillway", bytes, () =>
      restoreLatest(oci, out),
    );
    await measure("download ← OCI (GetObject)", "sdk", bytes, async () => {
      const got = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: "peer/model.safetensors" }));
      await pipeline(got.Body as Readable, createWriteStream(join(dir, "peer-download.safetensors")));
    });
    const got = await sha256File(join(out, "step-000100", "model.safetensors"));
    console.log(
      `  committed ${up.manifestDigest.slice(0, 19)}…, replicated ${rep.blobsCopied} blobs, restored step ${restored.restored?.step}: ${got === want ? "bit-exact" : "MISMATCH"}`,
    );
    if (got !== want) process.exitCode = 1;
    await rm(join(dir, "work"), { recursive: true, force: true });
    await rm(out, { recursive: true, force: true });

    // ---- 2. successive checkpoints, 10 % of the tensors changing each time ----
    const sTensors = Math.max(10, Math.round(SERIES_MIB / TENSOR_MIB));
    const changing = Math.max(1, Math.round(sTensors / 10));
    console.log(
      `\nseries: ${SERIES} checkpoints of ${(sTensors * TENSOR_MIB).toFixed(0)} MiB (${sTensors} tensors), ${changing} tensors (10 %) change each time`,
    );
    const seriesStore = await openStore(azureUri("run-series"), credentials);
    const seeds = Array.from({ length: sTensors }, (_, i) => 1000 + i);
    const known = new Set<string>();
    let oursBytes = 0;
    let oursSeconds = 0;
    let peerBytes = 0;
    let peerSeconds = 0;
    let oursPeak = 0;
    let peerPeak = 0;
    let prev: string | undefined;
    for (let k = 1; k <= SERIES; k++) {
      const d = join(dir, "series", `step-${String(k).padStart(6, "0")}`);
      await mkdir(d, { recursive: true });
      const file = join(d, "model.safetensors");
      if (prev === undefined) await writeModel(file, sTensors, (i) => seeds[i]!);
      else {
        await copyFile(prev, file);
        const fh = await open(file, "r");
        const { buffer } = await fh.read(Buffer.alloc(8), 0, 8, 0);
        await fh.close();
        const dataStart = 8 + Number(buffer.readBigUInt64LE(0));
        for (let j = 0; j < changing; j++) {
          const i = ((k - 1) * changing + j) % sTensors;
          seeds[i] = seeds[i]! + 100_000;
          await rewriteTensor(file, i, seeds[i]!, dataStart);
        }
      }
      const size = (await stat(file)).size;
      const r = await quietly(() =>
        measure(`checkpoint ${k}`, "spillway", size, () =>
          uploadCheckpoint(seriesStore, d, `step-${k}`, { runUid: "bench", step: k, knownBlobs: known }),
        ),
      );
      oursBytes += r.value.bytesSent;
      oursSeconds += r.figure.seconds;
      oursPeak = Math.max(oursPeak, r.figure.peakMemMiB);
      const p = await quietly(() =>
        measure(`whole ${k}`, "sdk", size, () =>
          container.getBlockBlobClient(`peer-series/${k}/model.safetensors`).uploadFile(file, {
            blockSize: 16 * MiB,
            concurrency: 4,
          }),
        ),
      );
      peerBytes += size;
      peerSeconds += p.figure.seconds;
      peerPeak = Math.max(peerPeak, p.figure.peakMemMiB);
      if (prev) await rm(join(prev, ".."), { recursive: true, force: true });
      prev = file;
    }
    console.log(
      `  spillway  sent ${(oursBytes / MiB).toFixed(0)} MiB in ${oursSeconds.toFixed(1)} s (peak memory +${oursPeak.toFixed(0)} MiB)`,
    );
    console.log(
      `  sdk whole sent ${(peerBytes / MiB).toFixed(0)} MiB in ${peerSeconds.toFixed(1)} s (peak memory +${peerPeak.toFixed(0)} MiB)`,
    );
    console.log(
      `  → ${((1 - oursBytes / peerBytes) * 100).toFixed(0)} % fewer bytes, ${(peerSeconds / oursSeconds).toFixed(1)}× the speed`,
    );
  } finally {
    s3.destroy();
    await Promise.all([azurite.stop(), s3rver.stop()]);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs a measured step without its per-line print (the series prints totals). */
async function quietly<T>(fn: () => Promise<T>): Promise<{ value: T; figure: Figure }> {
  const log = console.log;
  console.log = () => {};
  try {
    const value = await fn();
    return { value, figure: figures.at(-1)! };
  } finally {
    console.log = log;
  }
}

await main();
