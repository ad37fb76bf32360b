/** `spillway sync` as a user runs it: a child process, environment credentials, exit codes. */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { contents, type Emulators, putAll, startEmulators } from "./fixtures.ts";

const root = join(fileURLToPath(import.meta.url), "..", "..", "..");
// The sync command on its own (the entry of the bundle the image ships).
const entry = join(root, "operator", "cli", "sync-main.ts");

let emu: Emulators;
let env: NodeJS.ProcessEnv;
beforeAll(async () => {
  emu = await startEmulators();
  await emu.containers("data");
  // Only what a user would set: the Azure account key and the AWS pair.
  const {
    AZURE_STORAGE_CONNECTION_STRING: _a,
    AWS_ACCESS_KEY_ID: _b,
    AWS_SECRET_ACCESS_KEY: _c,
    ...rest
  } = process.env;
  env = {
    ...rest,
    AZURE_STORAGE_KEY: emu.azurite.accountKey,
    AWS_ACCESS_KEY_ID: emu.s3.accessKeyId,
    AWS_SECRET_ACCESS_KEY: emu.s3.secretAccessKey,
  };
});
afterAll(async () => {
  await emu?.stop();
});

function start(args: string[], childEnv = env): ChildProcess & { out: Promise<Result> } {
  const child = spawn(process.execPath, [join(root, "bin", "run-ts.mjs"), entry, "sync", ...args], {
    env: childEnv,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr!.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const out = new Promise<Result>((resolve) =>
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
  return Object.assign(child, { out });
}
interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}
const run = (args: string[], childEnv = env) => start(args, childEnv).out;

describe("spillway sync", () => {
  it("copies Azure Blob to S3 with environment credentials and prints a JSON summary; a rerun copies nothing", async () => {
    const src = await emu.open(emu.azUri("data", "cli/src"));
    await putAll(src, { "a.txt": "alpha", "b/c.txt": "gamma", zero: Buffer.alloc(0) });
    const args = [emu.azUri("data", "cli/src"), emu.s3Uri("data", "cli/dst"), "--json"];
    const first = await run(args);
    expect(first.code).toBe(0);
    const summary = JSON.parse(first.stdout);
    expect(summary).toMatchObject({ complete: true, copied: { objects: 3, bytes: 10 } });
    expect(summary.version).toMatch(/^sha256:/);
    const again = JSON.parse((await run(args)).stdout);
    expect(again).toMatchObject({
      copied: { objects: 0 },
      skipped: { objects: 3 },
      version: summary.version,
    });
    expect((await contents(await emu.open(emu.s3Uri("data", "cli/dst")))).get("a.txt")?.toString()).toBe(
      "alpha",
    );
  });

  it("rejects bad input with one clear line, exit code 2, and nothing written", async () => {
    const target = join(emu.dir, "files", "never");
    const dst = `file://${target}`;
    const noAws = { ...env, AWS_ACCESS_KEY_ID: "", AWS_SECRET_ACCESS_KEY: "" };
    const cases: [string[], NodeJS.ProcessEnv, RegExp][] = [
      [["azblob://devstoreaccount1/no container!/x", dst], env, /invalid container|malformed/],
      [["ftp://host/path", dst], env, /unknown scheme 'ftp'/],
      [[emu.s3Uri("data", "x"), dst], noAws, /no S3 credentials.*AWS_ACCESS_KEY_ID/],
      [[emu.s3Uri("no-such-bucket", "x"), dst], env, /bucket not found: s3:\/\/no-such-bucket/],
      [[emu.azUri("data", "x"), dst, "--part-size", "lots"], env, /--part-size: not a size/],
      [[emu.azUri("data", "x"), dst, "--shard", "3/2"], env, /--shard wants i\/N/],
    ];
    const results = await Promise.all(cases.map(([args, e]) => run(args, e)));
    results.forEach((r, i) => {
      expect({ code: r.code, lines: r.stderr.trim().split("\n").length }).toEqual({ code: 2, lines: 1 });
      expect(r.stderr).toMatch(cases[i]![2]);
    });
    expect(existsSync(target)).toBe(false);
  });

  it("never prints a SAS token", async () => {
    const r = await run([
      `azblob://devstoreaccount1/nocontainer/x?sas=sv%3Dsecret-token&endpoint=http%3A%2F%2F127.0.0.1%3A1`,
      "file:///tmp/x",
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).not.toContain("secret-token");
  });

  it("killed mid-way (SIGKILL) and rerun, ends complete and correct", async () => {
    const src = await emu.open(emu.azUri("data", "kill/src"));
    const files = Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`k/${i}.txt`, `object ${i}`]));
    await Promise.all(Object.entries(files).map(([k, v]) => src.put(k, Buffer.from(v))));
    const dir = fileURLToPath(emu.fileUri("killed"));
    const args = [emu.azUri("data", "kill/src"), emu.fileUri("killed"), "--concurrency", "1", "--json"];
    const child = start(args);
    // Kill as soon as some objects landed: mid-way by construction.
    while (!(existsSync(join(dir, "k")) && readdirSync(join(dir, "k")).length >= 10))
      await new Promise((r) => setTimeout(r, 10));
    child.kill("SIGKILL");
    const killed = await child.out;
    expect(killed.signal).toBe("SIGKILL");
    expect(existsSync(join(dir, ".spillway", "manifest.json"))).toBe(false);
    expect(readdirSync(join(dir, "k")).length).toBeLessThan(300);

    const rerun = await run([...args.slice(0, 2), "--concurrency", "16", "--json"]);
    expect(rerun.code).toBe(0);
    expect(JSON.parse(rerun.stdout)).toMatchObject({ complete: true });
    const got = await contents(await emu.open(emu.fileUri("killed")));
    expect(got.size).toBe(300);
    for (const [k, v] of Object.entries(files)) expect(got.get(k)?.toString()).toBe(v);
  });
});
