/**
 * What the operator benchmarks share: `spillway operator` started as its own process against
 * a sandbox (so its memory is its own), its request counters read from /metrics, its memory
 * read from /proc, and percentiles.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Sandbox } from "../../operator/sandbox/sandbox.ts";
import { armEmulator, OPERATOR_NAMESPACE } from "../../operator/sandbox/wiring.ts";

export const ROOT = join(import.meta.dirname, "..", "..");

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/** Resident and peak resident memory of a process, MiB. */
export function memMiB(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(status)?.[1] ?? 0) / 1024;
  return { rss: kb("VmRSS"), peak: kb("VmHWM") };
}

/** The operator's API requests so far (all clusters), and how many were LISTs. */
export async function scrapeRequests(metricsAddr: string): Promise<{ total: number; lists: number }> {
  const text = await (await fetch(`http://${metricsAddr}/metrics`)).text();
  let total = 0;
  let lists = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith("spillway_api_requests_total{")) continue;
    const v = Number(line.split(" ").pop());
    total += v;
    if (line.includes('verb="list"')) lists += v;
  }
  return { total, lists };
}

export interface OperatorProcess {
  child: ChildProcess;
  pid: number;
  /** Address of its /metrics. */
  metrics: string;
  stop(): Promise<void>;
}

export interface OperatorProcessOptions {
  /** The CLI entry to run: the compiled one or `bin/spillway.mjs`. */
  main: string;
  /** Node flags before the entry (e.g. a heap limit). */
  nodeArgs?: string[];
  maxConcurrentReconciles?: string;
  /** Append the operator's JSON log lines here. */
  logFile?: string;
}

/** Starts `spillway operator` against the sandbox, tuned for throughput; resolves once it leads. */
export async function startOperatorProcess(
  sandbox: Sandbox,
  dir: string,
  opts: OperatorProcessOptions,
): Promise<OperatorProcess> {
  const caFile = join(dir, "arm-ca.pem");
  writeFileSync(caFile, armEmulator(sandbox)!.ca);
  const child = spawn(
    process.execPath,
    [
      ...(opts.nodeArgs ?? []),
      opts.main,
      "operator",
      ...["--kubeconfig", sandbox.management.kubeconfigPath, "--namespace", OPERATOR_NAMESPACE],
      ...["--azure-ca-file", caFile, "--metrics-bind-address", "127.0.0.1:0"],
      ...["--health-probe-bind-address", "0", "--log-level", "info"],
      ...["--max-concurrent-reconciles", opts.maxConcurrentReconciles ?? "16"],
      ...[
        "--remote-qps",
        "500",
        "--remote-burst",
        "1000",
        "--kube-api-qps",
        "1000",
        "--kube-api-burst",
        "2000",
      ],
    ],
    { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] },
  );
  const metrics = await new Promise<string>((resolve, reject) => {
    let buf = "";
    child.stdout!.on("data", (d: Buffer) => {
      buf += d.toString("utf8");
      for (const line of buf.split("\n")) {
        if (line.includes('"operator started"'))
          resolve(String((JSON.parse(line) as { metrics: string }).metrics));
      }
      buf = buf.slice(buf.lastIndexOf("\n") + 1);
    });
    child.once("exit", (code) => reject(new Error(`operator exited ${code}`)));
  });
  if (opts.logFile) child.stdout!.pipe(createWriteStream(opts.logFile, { flags: "a" }));
  else child.stdout!.resume();
  return {
    child,
    pid: child.pid!,
    metrics,
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    },
  };
}
