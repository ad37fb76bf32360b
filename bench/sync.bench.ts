/**
 * `npm run bench -- sync`: Spillway's sync engine against rclone (the peer users reach for) on
 * the same emulators in one run, Azurite (Azure Blob) → s3rver (S3-compatible, OCI's route):
 *
 *   (a) cold copy of 200 × 1 MiB + 2 × 100 MiB
 *   (b) cold copy of 5,000 × 4 KiB
 *   (c) no-op resync of (b)
 *   (d) resync of (b) after 50 objects changed at the source
 *
 * Both tools run as separate processes, timed the same way (wall clock of the process, peak
 * RSS from /usr/bin/time). Spillway runs with `--concurrency 16`, rclone with
 * `--transfers 16` (and `--checkers 16`); (c) is shown for rclone's default (size + modtime,
 * which needs a HEAD per S3 object) and `--checksum` (MD5 from both listings). Both emulators
 * are single-threaded Node servers: on 2 cores they, not the clients, set the ceiling, so only
 * the comparison within this run means anything. Never fails on a time.
 *
 * `SYNC_BENCH_SMALL=N` changes the object count of (b) (default 5000);
 * `SYNC_BENCH_ONLY=a` (or `b`, comma-separated `a,b`) runs only the large or the small scenarios;
 * `SYNC_BENCH_PROFILE=DIR` writes a V8 CPU profile of every Spillway run to DIR;
 * `SYNC_BENCH_ARGS="--upload-cutoff 0"` adds options to every Spillway run;
 * `SYNC_BENCH_SDK=1` adds, to (a) and (b), a Spillway run with the stores' object requests sent
 * through the SDKs as before the raw routes (`SPILLWAY_STORE_SDK_ONLY=1`): before/after in one run;
 * `SYNC_BENCH_NODE_FLAGS="--max-semi-space-size=16"` adds V8 flags to every Spillway process
 * (after the launcher's own, bin/sync-runtime.mjs, replacing one of the same name);
 * `SYNC_BENCH_HEAP_DEFAULTS=1` adds, to (m), Spillway runs with V8's own heap sizing (no launcher
 * flags, the sync command's young-generation cap and growing factor off):
 * before/after in one run; `SYNC_BENCH_OLD_LIMIT=16` adds, to (m), a cold copy with the sync
 * command's opt-in old-generation limit (`SPILLWAY_SYNC_OLD_GENERATION_FLOOR_MIB=16`);
 * `SYNC_BENCH_REPEAT=N` repeats (a), the tools' order rotating per round, after
 * `SYNC_BENCH_WARMUP` (default 1) unrecorded rounds that warm the emulators.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  ContainerSASPermissions,
  generateBlobSASQueryParameters,
  SASProtocol,
  StorageSharedKeyCredential,
} from "@azure/storage-blob";
import { bundleSync, missingSyncFlags, syncEnvironment } from "../bin/sync-runtime.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..");

interface Run {
  seconds: number;
  peakRssMiB?: number;
  /** User + system CPU seconds of the process: steadier than wall time on a shared machine. */
  cpuSeconds?: number;
  /** CPU seconds both emulators spent serving the run (how hard the tool's requests are to serve). */
  emulatorCpuSeconds?: number;
  ok: boolean;
  detail: string;
  /** The process's whole stdout (`detail` keeps only its end). */
  stdout: string;
  /** For a repeated scenario: the median of the runs' seconds (the run kept is the best). */
  medianSeconds?: number;
}

const MiB = 1024 * 1024;

function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv): Run {
  // The previous run's writes (400 MiB in (a)) are flushed first, so the kernel's write-back of
  // one tool's output is not paid during the next tool's run.
  spawnSync("sync");
  const useTime = existsSync("/usr/bin/time");
  const t0 = process.hrtime.bigint();
  const r = useTime
    ? spawnSync("/usr/bin/time", ["-f", "__RSS_KB__ %M %U %S", cmd, ...args], { env, encoding: "utf8" })
    : spawnSync(cmd, args, { env, encoding: "utf8" });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const rss = /__RSS_KB__ (\d+) ([\d.]+) ([\d.]+)/.exec(r.stderr ?? "");
  const detail = `${r.stdout ?? ""}${(r.stderr ?? "").replace(/__RSS_KB__ [\d. ]+\s*/, "")}`.trim();
  return {
    seconds,
    ...(rss ? { peakRssMiB: Number(rss[1]) / 1024, cpuSeconds: Number(rss[2]) + Number(rss[3]) } : {}),
    ok: r.status === 0,
    detail: detail.slice(-600),
    stdout: r.stdout ?? "",
  };
}

/** utime + stime of a process, in seconds (0 when unreadable). */
function cpuOf(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

/**
 * The `spillway sync` command as the container image runs it: the bundle `npm run build`
 * makes (bin/sync-runtime.mjs: our code and its packages in one ESM file plus lazy chunks),
 * started with the V8 flags the launcher gives it — not TypeScript through tsx, whose
 * per-start transpiling would be measured otherwise. Falls back to tsx without esbuild.
 */
async function bundleWorker(): Promise<string[]> {
  const self = fileURLToPath(import.meta.url);
  try {
    return [await bundleSync(join(root, ".spillway", "bench", "sync"))];
  } catch (e) {
    console.log(`(esbuild unavailable, running through tsx: ${(e as Error).message.split("\n")[0]})`);
    return [join(root, "bin", "run-ts.mjs"), self, "--worker"];
  }
}

async function main(): Promise<void> {
  const { AzuriteEmulator, S3rverEmulator } = await import("../operator/sandbox/emulators/index.ts");
  const dir = mkdtempSync(join(tmpdir(), "spillway-bench-sync-"));
  const smallCount = Number(process.env.SYNC_BENCH_SMALL ?? 5000);
  const only = (process.env.SYNC_BENCH_ONLY ?? "a,b").split(",").map((s) => s.trim());
  const runLarge = only.includes("a");
  const runSmall = only.includes("b");
  // m: memory in the object count — a cold copy of the small objects and a no-op resync, with
  // rclone's --checksum no-op over the same copy (its default mode would re-touch every object
  // we wrote, as they lack its mtime metadata). Run it at SYNC_BENCH_SMALL=5000 and 50000.
  const runMemory = only.includes("m");
  const [az, s3] = await Promise.all([
    AzuriteEmulator.start({ dir: join(dir, "azurite"), containers: ["large", "small"] }),
    S3rverEmulator.start({ dir: join(dir, "s3rver"), buckets: ["ours", "rclone", "sdk", "floor"] }),
  ]);
  try {
    const rcloneAvailable = spawnSync("rclone", ["version"], { encoding: "utf8" }).status === 0;
    console.log(
      `node ${process.version}; Azurite ${az.blobEndpoint}; s3rver ${s3.endpoint}; rclone: ${rcloneAvailable ? spawnSync("rclone", ["version"], { encoding: "utf8" }).stdout.split("\n")[0] : "not installed (apt-get install rclone)"}`,
    );

    // ── populate the source ─────────────────────────────────────────────────────────────
    const svc = az.client();
    const put = async (container: string, entries: [string, Buffer][], concurrency = 16) => {
      const c = svc.getContainerClient(container);
      let i = 0;
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (i < entries.length) {
            const [k, v] = entries[i++]!;
            await c.getBlockBlobClient(k).uploadData(v, { blockSize: 8 * MiB, concurrency: 4 });
          }
        }),
      );
    };
    const t0 = Date.now();
    const fill = (n: number, size: number, seed: number) => {
      const b = Buffer.allocUnsafe(size);
      for (let i = 0; i < size; i += 4)
        b.writeUInt32LE((Math.imul(i + 1, 2654435761) ^ (n * 7919 + seed)) >>> 0, i);
      return b;
    };
    if (runLarge)
      await put("large", [
        ...Array.from({ length: 200 }, (_, n): [string, Buffer] => [
          `mid/${String(n).padStart(4, "0")}.bin`,
          fill(n, MiB, 1),
        ]),
        ["big/0.bin", fill(1, 100 * MiB, 2)],
        ["big/1.bin", fill(2, 100 * MiB, 3)],
      ]);
    if (runSmall || runMemory)
      await put(
        "small",
        Array.from({ length: smallCount }, (_, n): [string, Buffer] => [
          `s/${String(n).padStart(5, "0")}.dat`,
          fill(n, 4096, 4),
        ]),
        32,
      );
    console.log(`source populated in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    // ── the two tools ───────────────────────────────────────────────────────────────────
    const worker = await bundleWorker();
    const benchNodeFlags = (process.env.SYNC_BENCH_NODE_FLAGS ?? "").split(/\s+/).filter(Boolean);
    const enc = encodeURIComponent;
    const oursExtra = (process.env.SYNC_BENCH_ARGS ?? "").split(/\s+/).filter(Boolean);
    const ours = (container: string, prefix: string, extra: string[] = []): Run =>
      measured(() => oursRaw(container, prefix, extra));
    const sdkToo = process.env.SYNC_BENCH_SDK === "1";
    // Into its own bucket (s3rver slows as a bucket fills), run after the two tools.
    const oursSdk = (container: string, prefix: string): Run =>
      measured(() => oursRaw(container, prefix, [], { SPILLWAY_STORE_SDK_ONLY: "1" }, "sdk"));
    const oursRaw = (
      container: string,
      prefix: string,
      extra: string[] = [],
      env: NodeJS.ProcessEnv = {},
      bucket = "ours",
      v8: "launcher" | "defaults" = "launcher",
    ): Run => {
      const src = `azblob://${az.accountName}/${container}/?endpoint=${enc(az.blobEndpoint)}`;
      const dst = `s3://${bucket}/${prefix}?endpoint=${enc(s3.endpoint)}&region=${s3.region}`;
      const profile = [
        ...(process.env.SYNC_BENCH_PROFILE
          ? ["--cpu-prof", "--cpu-prof-dir", process.env.SYNC_BENCH_PROFILE]
          : []),
        // The launcher's V8 flags (bin/sync-runtime.mjs), then SYNC_BENCH_NODE_FLAGS, which
        // replace a launcher flag of the same name (e.g. "--max-semi-space-size=16").
        ...(v8 === "launcher" ? missingSyncFlags(benchNodeFlags, {}) : []),
        ...benchNodeFlags,
      ];
      const r = timed(
        process.execPath,
        [...profile, ...worker, "sync", src, dst, "--json", "--concurrency", "16", ...extra, ...oursExtra],
        // The launcher's environment too (malloc's tunables), as for its V8 flags.
        (v8 === "launcher" ? syncEnvironment : (e: NodeJS.ProcessEnv) => e)({
          ...process.env,
          AZURE_STORAGE_KEY: az.accountKey,
          AWS_ACCESS_KEY_ID: s3.accessKeyId,
          AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
          ...env,
        }),
      );
      // From the whole stdout: a long summary does not fit `detail`'s last 600 characters.
      const json = r.stdout.split("\n").find((l) => l.startsWith("{"));
      if (json) {
        const s = JSON.parse(json) as {
          copied: { objects: number; bytes: number };
          skipped: { objects: number };
          durationMs: number;
        };
        r.detail = `copied ${s.copied.objects}, unchanged ${s.skipped.objects}; engine ${(s.durationMs / 1000).toFixed(2)} s`;
      }
      return r;
    };
    const sas = (container: string) =>
      generateBlobSASQueryParameters(
        {
          containerName: container,
          permissions: ContainerSASPermissions.parse("rl"),
          expiresOn: new Date(Date.now() + 3600_000),
          protocol: SASProtocol.HttpsAndHttp,
        },
        new StorageSharedKeyCredential(az.accountName, az.accountKey),
      ).toString();
    const rcloneConfig = join(dir, "rclone.conf");
    writeFileSync(rcloneConfig, "");
    const { AWS_CA_BUNDLE: _drop, ...rcloneEnv } = process.env;
    const rclone = (container: string, prefix: string, extra: string[] = []): Run =>
      measured(() => rcloneRaw(container, "rclone", prefix, extra));
    const rcloneAt = (container: string, bucket: string, prefix: string, extra: string[] = []): Run =>
      measured(() => rcloneRaw(container, bucket, prefix, extra));
    const rcloneRaw = (container: string, bucket: string, prefix: string, extra: string[] = []): Run => {
      const src = `:azureblob,sas_url='${az.blobEndpoint}/${container}?${sas(container)}':${container}`;
      const dst = `:s3,provider=Other,access_key_id=${s3.accessKeyId},secret_access_key=${s3.secretAccessKey},endpoint='${s3.endpoint}',force_path_style=true,no_check_bucket=true:${bucket}/${prefix}`;
      return timed("rclone", ["sync", src, dst, "--config", rcloneConfig, "--stats", "0", ...extra], {
        ...rcloneEnv,
      });
    };

    // The Node floor of (a) (bench/lib/node-floor.mjs): the same copy with no engine, by the
    // same Node with the same V8 flags; with `sha256` every byte is hashed as Spillway does.
    const largeObjects: [string, number][] = [
      ["big/0.bin", 100 * MiB],
      ["big/1.bin", 100 * MiB],
      ...Array.from({ length: 200 }, (_, n): [string, number] => [
        `mid/${String(n).padStart(4, "0")}.bin`,
        MiB,
      ]),
    ];
    const floor = (prefix: string, sha256: boolean): Run =>
      measured(() => {
        const config = {
          blobBase: `${az.blobEndpoint}/large`,
          sas: sas("large"),
          s3: {
            endpoint: s3.endpoint,
            bucket: "floor",
            prefix,
            region: s3.region,
            accessKeyId: s3.accessKeyId,
            secretAccessKey: s3.secretAccessKey,
          },
          objects: largeObjects,
          concurrency: 16,
        };
        const r = timed(
          process.execPath,
          [...missingSyncFlags(benchNodeFlags, {}), ...benchNodeFlags, join(here, "lib", "node-floor.mjs")],
          syncEnvironment({
            ...process.env,
            FLOOR_CONFIG: JSON.stringify(config),
            FLOOR_SHA256: sha256 ? "1" : "0",
          }),
        );
        r.detail = r.ok ? "" : r.detail;
        return r;
      });

    const rows: { scenario: string; tool: string; run: Run; bytes: number; objects: number; load: number }[] =
      [];
    // The 1-minute load average after each run: other work on a shared machine moves the figures.
    const emuCpu = () => cpuOf(az.pid) + cpuOf(s3.pid);
    const measured = (f: () => Run): Run => {
      const before = emuCpu();
      const r = f();
      r.emulatorCpuSeconds = emuCpu() - before;
      return r;
    };
    const record = (scenario: string, tool: string, run: Run, objects: number, bytes: number) => {
      rows.push({ scenario, tool, run, objects, bytes, load: loadavg()[0]! });
      if (!run.ok) console.log(`  ! ${tool} ${scenario} failed: ${run.detail}`);
    };
    const largeBytes = 200 * MiB + 200 * MiB;
    const smallBytes = smallCount * 4096;
    const t16 = ["--transfers", "16", "--checkers", "16"];

    // (a) is repeated SYNC_BENCH_REPEAT times (default 1), the two tools alternating, each time
    // into a fresh prefix; the best run of each is kept (figures vary with other load).
    const repeat = Math.max(1, Number(process.env.SYNC_BENCH_REPEAT ?? 1));
    const best = (runs: Run[]): Run => {
      const b = runs.reduce((x, y) => (y.ok && (!x.ok || y.seconds < x.seconds) ? y : x));
      if (runs.length > 1) {
        b.detail += `; runs ${runs.map((r) => r.seconds.toFixed(1)).join(", ")} s`;
        const ok = runs.filter((r) => r.ok).map((r) => r.seconds);
        ok.sort((x, y) => x - y);
        const mid = ok.length >> 1;
        if (ok.length > 0) b.medianSeconds = ok.length % 2 ? ok[mid]! : (ok[mid - 1]! + ok[mid]!) / 2;
      }
      return b;
    };
    if (runLarge) {
      const mine: Run[] = [];
      const viaSdk: Run[] = [];
      const peer: Run[] = [];
      const bare: Run[] = [];
      const bareHashed: Run[] = [];
      // The emulators are Node processes: their first runs of a scenario are slower (JIT,
      // caches) for every tool alike. One warm-up round per tool (SYNC_BENCH_WARMUP, default 1;
      // not recorded) leaves the measured rounds to compare the tools, not the warming.
      const dropOutput = (prefix: string) => {
        for (const bucket of ["ours", "rclone", "floor", "sdk"])
          rmSync(join(dir, "s3rver", bucket, prefix), { recursive: true, force: true });
      };
      const warmup = Math.max(0, Number(process.env.SYNC_BENCH_WARMUP ?? 1));
      for (let i = 0; i < warmup; i++) {
        const prefix = `warm${i}/`;
        ours("large", prefix);
        if (rcloneAvailable) rclone("large", prefix, t16);
        floor(`${prefix}sha/`, true);
        dropOutput(prefix);
      }
      for (let i = 0; i < repeat; i++) {
        const prefix = repeat === 1 ? "a/" : `a${i}/`;
        // The order rotates from one repetition to the next: no tool always runs first (after
        // the source's population) or always after the same one.
        const runs = [
          () => mine.push(ours("large", prefix)),
          () => rcloneAvailable && peer.push(rclone("large", prefix, t16)),
          () => bare.push(floor(`${prefix}plain/`, false)),
          () => bareHashed.push(floor(`${prefix}sha/`, true)),
          () => sdkToo && viaSdk.push(oursSdk("large", prefix)),
        ];
        for (let k = 0; k < runs.length; k++) runs[(i + k) % runs.length]!();
        // Each round's 1.6 GB is not kept (disk space, and the next round's write-back).
        dropOutput(prefix);
      }
      record("(a) cold 200×1MiB+2×100MiB", "spillway", best(mine), 202, largeBytes);
      if (sdkToo) record("(a) cold 200×1MiB+2×100MiB", "spillway SDK route", best(viaSdk), 202, largeBytes);
      if (rcloneAvailable)
        record("(a) cold 200×1MiB+2×100MiB", "rclone --transfers 16", best(peer), 202, largeBytes);
      record("(a) cold 200×1MiB+2×100MiB", "node floor", best(bare), 202, largeBytes);
      record("(a) cold 200×1MiB+2×100MiB", "node floor + sha256", best(bareHashed), 202, largeBytes);
    }
    if (runMemory) {
      record(`(m) cold ${smallCount}×4KiB`, "spillway", ours("small", "m/"), smallCount, smallBytes);
      record(`(m) no-op resync, ${smallCount}`, "spillway", ours("small", "m/"), smallCount, 0);
      const oldLimit = process.env.SYNC_BENCH_OLD_LIMIT;
      if (oldLimit) {
        // The cold copy with the sync command's opt-in old-generation limit
        // (`lowerOldGenerationLimit`): memory and CPU against the default, in the same run.
        const on = { SPILLWAY_SYNC_OLD_GENERATION_FLOOR_MIB: oldLimit };
        const run = measured(() => oursRaw("small", "m1/", [], on));
        record(`(m) cold ${smallCount}×4KiB`, `spillway, old ≤${oldLimit}MiB`, run, smallCount, smallBytes);
      }
      if (process.env.SYNC_BENCH_HEAP_DEFAULTS === "1") {
        // The same runs with V8's own heap sizing: no launcher flags, the sync command's
        // run-time young-generation cap and growing factor off.
        const v8Defaults = {
          SPILLWAY_SYNC_SEMI_SPACE_CAP_MIB: "0",
          SPILLWAY_SYNC_HEAP_GROWING_PERCENT: "0",
        };
        const off = () => measured(() => oursRaw("small", "m0/", [], v8Defaults, "ours", "defaults"));
        record(`(m) cold ${smallCount}×4KiB`, "spillway, V8 defaults", off(), smallCount, smallBytes);
        record(`(m) no-op resync, ${smallCount}`, "spillway, V8 defaults", off(), smallCount, 0);
      }
      if (rcloneAvailable)
        record(
          `(m) no-op resync, ${smallCount}`,
          "rclone --checksum",
          rcloneAt("small", "ours", "m/", ["--checksum", "--exclude", ".spillway/**", ...t16]),
          smallCount,
          0,
        );
    }
    if (runSmall) {
      record(`(b) cold ${smallCount}×4KiB`, "spillway", ours("small", "b/"), smallCount, smallBytes);
      if (rcloneAvailable)
        record(
          `(b) cold ${smallCount}×4KiB`,
          "rclone --transfers 16",
          rclone("small", "b/", t16),
          smallCount,
          smallBytes,
        );
      if (sdkToo)
        record(
          `(b) cold ${smallCount}×4KiB`,
          "spillway SDK route",
          oursSdk("small", "b/"),
          smallCount,
          smallBytes,
        );
      record("(c) no-op resync of (b)", "spillway", ours("small", "b/"), smallCount, 0);
      if (rcloneAvailable) {
        record("(c) no-op resync of (b)", "rclone (default)", rclone("small", "b/"), smallCount, 0);
        record(
          "(c) no-op resync of (b)",
          "rclone --checksum",
          rclone("small", "b/", ["--checksum", ...t16]),
          smallCount,
          0,
        );
      }
      // 50 objects change (same size, new content).
      await put(
        "small",
        Array.from({ length: 50 }, (_, i): [string, Buffer] => {
          const n = Math.floor((i * smallCount) / 50);
          return [`s/${String(n).padStart(5, "0")}.dat`, fill(n, 4096, 99)];
        }),
      );
      record("(d) resync of (b), 50 changed", "spillway", ours("small", "b/"), 50, 50 * 4096);
      if (rcloneAvailable)
        record("(d) resync of (b), 50 changed", "rclone (default)", rclone("small", "b/"), 50, 50 * 4096);
      // Verification of the copies: Spillway's second run compares every object's size and etag.
      const verifyRun = ours("small", "b/", ["--verify", "list"]);
      record("(e) resync of (b) with --verify list", "spillway", verifyRun, smallCount, 0);
    }

    // ── table ──────────────────────────────────────────────────────────────────────────
    const pad = (s: string, n: number) => s.padEnd(n);
    console.log(
      `\n${pad("scenario", 36)}${pad("tool", 24)}${pad("seconds", 10)}${pad("MB/s", 9)}${pad("objects/s", 11)}${pad("CPU s", 7)}${pad("emu CPU", 9)}${pad("peak RSS", 10)}${pad("load", 6)}detail`,
    );
    for (const r of rows) {
      const s = r.run.seconds;
      console.log(
        pad(r.scenario, 36) +
          pad(r.tool, 24) +
          pad(s.toFixed(2), 10) +
          pad(r.bytes ? (r.bytes / 1e6 / s).toFixed(1) : "-", 9) +
          pad((r.objects / s).toFixed(0), 11) +
          pad(r.run.cpuSeconds !== undefined ? r.run.cpuSeconds.toFixed(1) : "?", 7) +
          pad(r.run.emulatorCpuSeconds !== undefined ? r.run.emulatorCpuSeconds.toFixed(1) : "?", 9) +
          pad(r.run.peakRssMiB ? `${r.run.peakRssMiB.toFixed(0)} MiB` : "?", 10) +
          pad(r.load.toFixed(1), 6) +
          (r.run.ok
            ? r.tool.startsWith("spillway") || r.run.detail.startsWith(";")
              ? r.run.detail
              : ""
            : "FAILED"),
      );
    }
    const find = (sc: string, tool: string) =>
      rows.find((r) => r.scenario.startsWith(sc) && r.tool === tool)?.run;
    const ratio = (sc: string, peer: string) => {
      const a = find(sc, "spillway");
      const b = find(sc, peer);
      return a && b && a.ok && b.ok ? `${(a.seconds / b.seconds).toFixed(2)}× ${peer}'s time` : "n/a";
    };
    console.log(`\n(a) spillway: ${ratio("(a)", "rclone --transfers 16")} (target ≤ 1)`);
    const medians = (tool: string) => {
      const a = find("(a)", "spillway")?.medianSeconds;
      const b = find("(a)", tool)?.medianSeconds;
      return a && b ? `${(a / b).toFixed(2)}×` : undefined;
    };
    if (medians("rclone --transfers 16"))
      console.log(`    on the medians of the ${repeat} runs: ${medians("rclone --transfers 16")} rclone's`);
    const floorOf = (tool: string) => {
      const f = find("(a)", tool);
      const p = find("(a)", "rclone --transfers 16");
      return f?.ok && p?.ok ? `${(f.seconds / p.seconds).toFixed(2)}×` : "n/a";
    };
    if (runLarge)
      console.log(
        `    the Node floor (no engine) is ${floorOf("node floor")} rclone's time, ${floorOf("node floor + sha256")} with Spillway's sha256 of every byte`,
      );
    console.log(`(b) spillway: ${ratio("(b)", "rclone --transfers 16")} (target ≤ 1)`);
    console.log(
      `(c) spillway: ${ratio("(c)", "rclone (default)")} (target ≤ 0.2); ${ratio("(c)", "rclone --checksum")} (target ≤ 1)`,
    );
    console.log(`(d) spillway: ${ratio("(d)", "rclone (default)")} (target ≤ 0.5)`);
  } finally {
    await Promise.all([az.stop(), s3.stop()]);
    rmSync(dir, { recursive: true, force: true });
  }
}

// Worker mode: this file re-run as `… sync.bench.ts --worker sync SRC DST …` is the
// `spillway sync` command alone (the CLI's other commands are not loaded, as in a sync Job).
if (process.argv[2] === "--worker") {
  const { Command } = await import("commander");
  const { register } = await import("../operator/cli/commands/sync.ts");
  const program = new Command().name("spillway").exitOverride((e) => process.exit(e.exitCode === 0 ? 0 : 2));
  register(program);
  await program.parseAsync([process.argv[0]!, process.argv[1]!, ...process.argv.slice(3)]);
} else {
  await main();
}
