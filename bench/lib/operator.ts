/**
 * What the operator benchmarks share: the world (sandbox and the alternative's cluster) in
 * child processes of their own, `spillway operator` started as its own process against it (so
 * its memory and CPU are its own), its request counters and heap read from /metrics, memory
 * and CPU time read from /proc, and percentiles.
 *
 * Three kinds of process, so none measures another's work: the bench process (load generator
 * and the watcher timing placements), the hosts (API servers, simulated kubelets, ARM
 * emulator), and the operator.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createWriteStream, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Scenario } from "../../operator/sandbox/scenario.ts";
import { OPERATOR_NAMESPACE } from "../../operator/sandbox/wiring.ts";
import type { ClusterHostSpec, SandboxHostSpec } from "./host.ts";

export const ROOT = join(import.meta.dirname, "..", "..");

/** A running host child (bench/lib/host.ts) and what it printed when ready. */
export interface Host<I> {
  pid: number;
  info: I;
  stop(): Promise<void>;
}

async function startHost<I>(role: "cluster" | "sandbox", spec: object, dir: string): Promise<Host<I>> {
  const specFile = join(dir, `${role}-host.json`);
  writeFileSync(specFile, JSON.stringify(spec));
  const child = spawn(
    process.execPath,
    [join(ROOT, "bin", "run-ts.mjs"), join(ROOT, "bench", "lib", "host.ts"), role, specFile],
    { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] },
  );
  // A bench that throws after starting its world must not leave the hosts running.
  const killOnExit = () => child.kill("SIGTERM");
  process.once("exit", killOnExit);
  child.once("exit", () => process.off("exit", killOnExit));
  const info = await new Promise<I>((resolve, reject) => {
    let buf = "";
    const onData = (d: Buffer) => {
      buf += d.toString("utf8");
      for (const line of buf.split("\n")) {
        if (line.startsWith('{"ready":')) {
          child.stdout!.off("data", onData);
          child.stdout!.resume();
          resolve(JSON.parse(line) as I);
        }
      }
      buf = buf.slice(buf.lastIndexOf("\n") + 1);
    };
    child.stdout!.on("data", onData);
    child.once("exit", (code) => reject(new Error(`bench ${role} host exited ${code}`)));
  });
  return {
    pid: child.pid!,
    info,
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    },
  };
}

export interface World {
  /** Management cluster kubeconfig (text and path) and the ARM emulator's CA file. */
  kubeconfig: string;
  kubeconfigPath: string;
  caFile: string;
  sandbox: Host<unknown>;
  alternative: Host<unknown>;
  stop(): Promise<void>;
}

/**
 * The sandbox (management API server, AKS, ARM) in one child process and the alternative's
 * simulated cluster in another, the alternative provider pointed at the latter.
 */
export async function startWorld(opts: {
  dir: string;
  scenario: Scenario;
  namespaces: string[];
  alternative: Omit<ClusterHostSpec, "name">;
  alternativeJurisdiction?: string;
}): Promise<World> {
  const alternative = await startHost<{ kubeconfig: string }>(
    "cluster",
    { name: "oci-bench", ...opts.alternative } satisfies ClusterHostSpec,
    opts.dir,
  );
  try {
    const sandbox = await startHost<{ kubeconfig: string; kubeconfigPath: string; caFile: string }>(
      "sandbox",
      {
        dir: opts.dir,
        scenario: opts.scenario,
        namespaces: opts.namespaces,
        alternativeKubeconfig: alternative.info.kubeconfig,
        ...(opts.alternativeJurisdiction ? { alternativeJurisdiction: opts.alternativeJurisdiction } : {}),
      } satisfies SandboxHostSpec,
      opts.dir,
    );
    return {
      ...sandbox.info,
      sandbox,
      alternative,
      stop: async () => {
        await sandbox.stop();
        await alternative.stop();
      },
    };
  } catch (e) {
    await alternative.stop();
    throw e;
  }
}

/** User + system CPU time a process has used so far, seconds. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields 14 and 15 of stat (utime, stime), counted after the command name.
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** The 1-minute load average, for the record next to every figure. */
export function loadAverage(): string {
  return readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
}

/** The operator's V8 heap in use and total, MiB (prom-client's default Node.js series). */
export async function scrapeHeap(
  metricsAddr: string,
): Promise<{ used: number; total: number; external: number }> {
  const text = await (await fetch(`http://${metricsAddr}/metrics`)).text();
  const v = (name: string) =>
    Number(new RegExp(`^${name} ([0-9.e+]+)`, "m").exec(text)?.[1] ?? Number.NaN) / 2 ** 20;
  return {
    used: v("nodejs_heap_size_used_bytes"),
    total: v("nodejs_heap_size_total_bytes"),
    // Buffers and ArrayBuffers outside the JS heap (HTTP bodies, watch streams).
    external: v("nodejs_external_memory_bytes"),
  };
}

/**
 * Waits until the operator has written every Event it posted (they are written in the
 * background, so requests per run are counted after the backlog is gone). Bounded.
 */
export async function eventsDrained(metricsAddr: string, limitMs = 180_000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (Date.now() < deadline) {
    const text = await (await fetch(`http://${metricsAddr}/metrics`)).text();
    const pending = Number(/^spillway_events_pending ([0-9.e+]+)/m.exec(text)?.[1] ?? 0);
    if (pending === 0) return;
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Asks the operator for a full GC (served only when it runs with --expose-gc). */
export async function forceGc(metricsAddr: string): Promise<boolean> {
  const res = await fetch(`http://${metricsAddr}/debug/gc`, { method: "POST" });
  await res.text();
  return res.ok;
}

/**
 * The operator as shipped: compiled JavaScript (the container image runs `npm run build`'s
 * output), not the TypeScript sources through tsx, whose transform caches would be counted
 * as the operator's memory. Built once per benchmark run under .spillway/ (gitignored).
 */
export function buildOperator(): string {
  const out = join(ROOT, ".spillway", "bench-dist");
  const tsc = join(ROOT, "node_modules", "typescript", "bin", "tsc");
  const r = spawnSync(process.execPath, [tsc, "-p", join(ROOT, "tsconfig.build.json"), "--outDir", out], {
    stdio: "inherit",
  });
  if (r.status !== 0) throw new Error("tsc build of the operator failed");
  return join(out, "operator", "cli", "main.js");
}
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

/**
 * The operator's API requests so far (all clusters), how many were LISTs, and the count per
 * `cluster verb resource` (remote clusters' requests are labelled with the cluster only).
 */
export async function scrapeRequests(
  metricsAddr: string,
): Promise<{ total: number; lists: number; byKind: Map<string, number> }> {
  const text = await (await fetch(`http://${metricsAddr}/metrics`)).text();
  let total = 0;
  let lists = 0;
  const byKind = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line.startsWith("spillway_api_requests_total{")) continue;
    const v = Number(line.split(" ").pop());
    total += v;
    if (line.includes('verb="list"')) lists += v;
    const label = (k: string) => new RegExp(`${k}="([^"]*)"`).exec(line)?.[1] ?? "";
    const code = label("code");
    const kind =
      `${label("cluster") === "management" ? "mgmt" : "remote"} ${label("verb")} ${label("resource")}`.trim() +
      (code.startsWith("2") ? "" : ` (${code})`);
    byKind.set(kind, (byKind.get(kind) ?? 0) + v);
  }
  return { total, lists, byKind };
}

/** Requests per run by kind, largest first, as one line ("mgmt update trainingruns 3.0, …"). */
export function requestMix(before: Map<string, number>, after: Map<string, number>, runs: number): string {
  return [...after]
    .map(([k, v]) => [k, (v - (before.get(k) ?? 0)) / runs] as const)
    .filter(([, v]) => v >= 0.05)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${v.toFixed(1)}`)
    .join(", ");
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
  /** Extra environment variables (e.g. GLIBC_TUNABLES), on top of the bench's own. */
  env?: Record<string, string>;
}

/** Starts `spillway operator` against the sandbox, tuned for throughput; resolves once it leads. */
export async function startOperatorProcess(
  world: Pick<World, "kubeconfigPath" | "caFile">,
  opts: OperatorProcessOptions,
): Promise<OperatorProcess> {
  const { caFile } = world;
  const child = spawn(
    process.execPath,
    [
      ...(opts.nodeArgs ?? []),
      opts.main,
      "operator",
      ...["--kubeconfig", world.kubeconfigPath, "--namespace", OPERATOR_NAMESPACE],
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
    { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, ...opts.env } },
  );
  // A bench that throws must not leave the operator running.
  const killOnExit = () => child.kill("SIGTERM");
  process.once("exit", killOnExit);
  child.once("exit", () => process.off("exit", killOnExit));
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

/**
 * Where a process's resident memory is, MiB, from /proc/PID/smaps: glibc's main arena
 * (`[heap]`, grown with brk), anonymous mappings that look like glibc thread arenas (glibc
 * reserves each as a 64 MiB-aligned region), the other anonymous mappings (V8's pages and
 * code space, large malloc chunks that glibc mmaps on its own), file-backed mappings (the
 * node binary and libraries) and stacks. `count` is the number of mappings in each.
 */
export interface SmapsBreakdown {
  heap: number;
  arenas: number;
  arenaCount: number;
  anon: number;
  anonCount: number;
  files: number;
  stacks: number;
  total: number;
  threads: number;
}

export function smapsBreakdown(pid: number): SmapsBreakdown {
  const text = readFileSync(`/proc/${pid}/smaps`, "utf8");
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const out: SmapsBreakdown = {
    heap: 0,
    arenas: 0,
    arenaCount: 0,
    anon: 0,
    anonCount: 0,
    files: 0,
    stacks: 0,
    total: 0,
    threads: Number(/Threads:\s+(\d+)/.exec(status)?.[1] ?? 0),
  };
  const ARENA_ALIGN = 64n * 2n ** 20n;
  let cur: { start: bigint; perms: string; path: string } | undefined;
  for (const line of text.split("\n")) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      cur = { start: BigInt(`0x${head[1]}`), perms: head[3]!, path: head[4] ?? "" };
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (!rss || !cur) continue;
    const mib = Number(rss[1]) / 1024;
    out.total += mib;
    if (cur.path === "[heap]") out.heap += mib;
    else if (cur.path.startsWith("[stack")) out.stacks += mib;
    else if (cur.path.startsWith("/")) out.files += mib;
    else if (cur.path === "" && cur.start % ARENA_ALIGN === 0n && cur.perms.startsWith("rw")) {
      out.arenas += mib;
      out.arenaCount++;
    } else {
      out.anon += mib;
      if (mib > 0) out.anonCount++;
    }
  }
  return out;
}

/** One line of a breakdown ("heap 12, thread arenas 40 (3), other anon 120 (210), …"). */
export function formatSmaps(s: SmapsBreakdown): string {
  const f = (n: number) => n.toFixed(0);
  return `[heap] ${f(s.heap)}, thread arenas ${f(s.arenas)} (${s.arenaCount}), other anonymous ${f(s.anon)} (${s.anonCount} mappings), files ${f(s.files)}, stacks ${f(s.stacks)}; ${s.threads} threads`;
}

/** V8's heap spaces (prom-client's nodejs_heap_space_size_*_bytes), MiB: "old 40/60, …" used/committed. */
export async function scrapeHeapSpaces(metricsAddr: string): Promise<string> {
  const text = await (await fetch(`http://${metricsAddr}/metrics`)).text();
  const spaces = new Map<string, { used: number; total: number }>();
  for (const m of text.matchAll(
    /^nodejs_heap_space_size_(used|total)_bytes\{space="([^"]+)"\} ([0-9.e+]+)/gm,
  )) {
    const s = spaces.get(m[2]!) ?? { used: 0, total: 0 };
    s[m[1] as "used" | "total"] = Number(m[3]) / 2 ** 20;
    spaces.set(m[2]!, s);
  }
  return [...spaces]
    .filter(([, s]) => s.total >= 0.5)
    .map(([k, s]) => `${k} ${s.used.toFixed(0)}/${s.total.toFixed(0)}`)
    .join(", ");
}
