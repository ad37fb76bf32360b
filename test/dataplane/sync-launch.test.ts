/**
 * How `spillway sync` starts: the launcher (bin/spillway.mjs) gives the process its V8 flags,
 * and the bundle the image ships (bin/sync-runtime.mjs, `npm run build`) runs a real sync.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  bundleSync,
  missingSyncFlags,
  SYNC_MALLOC_TUNABLES,
  SYNC_NODE_FLAGS,
  syncEnvironment,
} from "../../bin/sync-runtime.mjs";
import {
  lowerOldGenerationLimit,
  oldGenerationGrowthFlag,
  scavengeReadBuffers,
  unpoolSmallBuffers,
} from "../../operator/cli/commands/sync.ts";
import { readAll } from "../../operator/dataplane/manifest.ts";
import { contents, type Emulators, putAll, runNode, startEmulators } from "./fixtures.ts";

const root = join(fileURLToPath(import.meta.url), "..", "..", "..");

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}
function run(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Result> {
  return runNode(args, { env });
}

let emu: Emulators;
let tmp: string;
beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), "spillway-launch-"));
  emu = await startEmulators();
  await emu.containers("launch");
});
afterAll(async () => {
  await emu?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

describe("spillway sync's process", () => {
  it("lacks only the flags not already given, on the command line or in NODE_OPTIONS", () => {
    expect(SYNC_NODE_FLAGS.length).toBeGreaterThan(0);
    expect(missingSyncFlags([], {})).toEqual(SYNC_NODE_FLAGS);
    const names = SYNC_NODE_FLAGS.map((f) => `${f.split("=")[0]}=7`);
    expect(missingSyncFlags(names, {})).toEqual([]);
    expect(missingSyncFlags([], { NODE_OPTIONS: `--trace-warnings ${names.join(" ")}` })).toEqual([]);
  });

  it("adds malloc's tunables to GLIBC_TUNABLES, keeping the ones given", () => {
    expect(SYNC_MALLOC_TUNABLES.length).toBeGreaterThan(0);
    expect(syncEnvironment({}).GLIBC_TUNABLES).toBe(SYNC_MALLOC_TUNABLES.join(":"));
    expect(syncEnvironment({ GLIBC_TUNABLES: "glibc.malloc.arena_max=2" }).GLIBC_TUNABLES).toBe(
      ["glibc.malloc.arena_max=2", ...SYNC_MALLOC_TUNABLES].join(":"),
    );
    const own = { GLIBC_TUNABLES: "glibc.malloc.top_pad=0", PATH: "/bin" };
    expect(syncEnvironment(own)).toBe(own);
  });

  it("started without the launcher, sets the same old-generation growing factor at run time, unless given", () => {
    const launcher = SYNC_NODE_FLAGS.find((f) => f.startsWith("--heap-growing-percent="));
    expect(launcher).toBeDefined();
    expect(oldGenerationGrowthFlag([], {})).toBe(launcher);
    expect(oldGenerationGrowthFlag(["--heap-growing-percent=30"], {})).toBeUndefined();
    expect(oldGenerationGrowthFlag([], { NODE_OPTIONS: "--heap-growing-percent=30" })).toBeUndefined();
    expect(oldGenerationGrowthFlag([], { SPILLWAY_SYNC_HEAP_GROWING_PERCENT: "0" })).toBeUndefined();
    expect(oldGenerationGrowthFlag([], { SPILLWAY_SYNC_HEAP_GROWING_PERCENT: "50" })).toBe(
      "--heap-growing-percent=50",
    );
  });

  it("runs the lower old-generation limit only when asked (SPILLWAY_SYNC_OLD_GENERATION_FLOOR_MIB)", () => {
    expect(lowerOldGenerationLimit({})).toBeUndefined();
    expect(lowerOldGenerationLimit({ SPILLWAY_SYNC_OLD_GENERATION_FLOOR_MIB: "0" })).toBeUndefined();
    expect(lowerOldGenerationLimit({ SPILLWAY_SYNC_OLD_GENERATION_FLOOR_MIB: "sixteen" })).toBeUndefined();
    const limit = lowerOldGenerationLimit({ SPILLWAY_SYNC_OLD_GENERATION_FLOOR_MIB: "16" });
    try {
      expect(limit?.limit).toBe(16 * 2 ** 20);
    } finally {
      limit?.stop();
    }
  });

  it("gives small Buffers memory of their own during a sync (no shared pool slab), restored after", () => {
    const before = Buffer.poolSize;
    const pooled = Buffer.from("a canonical request of a few hundred bytes");
    expect(pooled.buffer.byteLength).toBeGreaterThan(pooled.length); // a slice of Node's slab
    const restore = unpoolSmallBuffers({});
    try {
      const own = Buffer.from("a canonical request of a few hundred bytes");
      expect(own.buffer.byteLength).toBe(own.length);
      expect(Buffer.allocUnsafe(100).buffer.byteLength).toBe(100);
    } finally {
      restore();
    }
    expect(Buffer.poolSize).toBe(before);
    for (const [value, size] of [
      ["8192", 8192],
      ["none", before],
    ] as const) {
      const r = unpoolSmallBuffers({ SPILLWAY_SYNC_BUFFER_POOL_BYTES: value });
      expect(Buffer.poolSize).toBe(size);
      r();
    }
    expect(Buffer.poolSize).toBe(before);
  });

  it("scavenges read buffers by default, at the MiB asked, fed by the stores' real socket reads", async () => {
    for (const off of ["0", "sixteen", "-4"])
      expect(scavengeReadBuffers({ SPILLWAY_SYNC_SCAVENGE_EVERY_MIB: off }).scavenger).toBeUndefined();
    const byDefault = scavengeReadBuffers({});
    byDefault.stop();
    expect(byDefault.scavenger).toBeDefined();
    // 1 MiB: a 3 MiB object read back from S3 through the transport crosses it (reads that come
    // in while a GC waits to run are folded into it, so at least one GC).
    const src = await emu.open(emu.s3Uri("launch", "scavenge"));
    await putAll(src, { "big.bin": Buffer.alloc(3 * 2 ** 20, 5) });
    const { scavenger, stop } = scavengeReadBuffers({ SPILLWAY_SYNC_SCAVENGE_EVERY_MIB: "1" });
    try {
      expect((await readAll(await src.read("big.bin"))).length).toBe(3 * 2 ** 20);
      await new Promise((r) => setImmediate(r));
      expect(scavenger!.collections).toBeGreaterThanOrEqual(1);
    } finally {
      stop();
    }
    // Stopped: reads no longer reach it.
    const before = scavenger!.collections;
    await readAll(await src.read("big.bin"));
    await new Promise((r) => setImmediate(r));
    expect(scavenger!.collections).toBe(before);
  });

  it("the launcher starts `spillway sync` with them (the same process, re-executed)", async () => {
    const src = await emu.open(emu.fileUri("flags/src"));
    await putAll(src, { "a.txt": "alpha" });
    // A preload that reports each start's V8 flags: the first without them, the second with.
    const report = `data:text/javascript,process.stderr.write("execArgv="+JSON.stringify(process.execArgv.filter(a=>!a.startsWith("--import")&&!a.startsWith("data:")))+" tunables="+(process.env.GLIBC_TUNABLES??"")+"\\n")`;
    const r = await run([
      "--import",
      report,
      join(root, "bin", "spillway.mjs"),
      "sync",
      emu.fileUri("flags/src"),
      emu.fileUri("flags/dst"),
      "--json",
    ]);
    expect(r.code).toBe(0);
    const starts = r.stderr
      .split("\n")
      .filter((l) => l.startsWith("execArgv="))
      .map((l) => {
        const [flags, tunables] = l.slice("execArgv=".length).split(" tunables=");
        return { flags: JSON.parse(flags!) as string[], tunables };
      });
    expect(starts).toEqual([
      { flags: [], tunables: "" },
      { flags: SYNC_NODE_FLAGS, tunables: SYNC_MALLOC_TUNABLES.join(":") },
    ]);
    expect(JSON.parse(r.stdout)).toMatchObject({ complete: true, copied: { objects: 1 } });
  });

  it("runs from its bundle: Azure Blob to S3 and back, the SDKs loaded from the bundle's chunks", async () => {
    const bundle = await bundleSync(join(tmp, "bundle"));
    const env = {
      ...process.env,
      AZURE_STORAGE_KEY: emu.azurite.accountKey,
      AWS_ACCESS_KEY_ID: emu.s3.accessKeyId,
      AWS_SECRET_ACCESS_KEY: emu.s3.secretAccessKey,
    };
    const src = await emu.open(emu.azUri("launch", "src"));
    await putAll(src, { "a.txt": "alpha", "b/c.bin": Buffer.alloc(70_000, 7) });
    const there = await run(
      [...SYNC_NODE_FLAGS, bundle, "sync", emu.azUri("launch", "src"), emu.s3Uri("launch", "mid"), "--json"],
      env,
    );
    expect(there.code).toBe(0);
    expect(JSON.parse(there.stdout)).toMatchObject({ complete: true, copied: { objects: 2, bytes: 70_005 } });
    const back = await run(
      [bundle, "sync", emu.s3Uri("launch", "mid"), emu.azUri("launch", "back"), "--json"],
      env,
    );
    expect(back.code).toBe(0);
    const got = await contents(await emu.open(emu.azUri("launch", "back")));
    expect([...got.keys()]).toEqual(["a.txt", "b/c.bin"]);
    expect(got.get("b/c.bin")?.equals(Buffer.alloc(70_000, 7))).toBe(true);
    // Bad input still exits 2 with one line from the bundle.
    const bad = await run([bundle, "sync", "ftp://host/x", emu.fileUri("never")], env);
    expect({ code: bad.code, lines: bad.stderr.trim().split("\n").length }).toEqual({ code: 2, lines: 1 });
  });
});
