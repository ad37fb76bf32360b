/**
 * Placement throughput (issue 4's target): 1,000 TrainingRuns applied at once against the
 * sandbox with zero-latency clouds. Four processes, so no part measures another's work: the
 * operator (`spillway operator`, compiled), the sandbox host (management API server,
 * simulated AKS, ARM emulator), the alternative's simulated cluster, and this process (the
 * load generator and the watcher that times placements). Reports runs placed per second, p50/p99 time from
 * create to placement, API requests per run and the operator's peak RSS.
 *
 * Peer, from the same run: the same operator and runs with no primary eligible (the runs name
 * a jurisdiction only the alternative serves), i.e. placement without the right of first
 * refusal — the cost of the offer round-trip is the difference.
 *
 * Target (issue 4): all 1,000 placed within 20 s (≥ 50 runs/s) and operator memory < 300 MiB.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TrainingRun } from "../operator/api/v1alpha1/index.ts";
import { KubeClient } from "../operator/runtime/client.ts";
import { Informer } from "../operator/runtime/informer.ts";
import { type KubeObject, SpillwayResources } from "../operator/runtime/resources.ts";
import { demoRun } from "../operator/sandbox/demo.ts";
import { DEFAULT_SCENARIO } from "../operator/sandbox/scenario.ts";
import {
  buildOperator,
  cpuSeconds,
  eventsDrained,
  loadAverage,
  memMiB,
  percentile,
  requestMix,
  scrapeHeap,
  scrapeRequests,
  startOperatorProcess,
  startWorld,
} from "./lib/operator.ts";

const N = Number(process.env.BENCH_RUNS ?? 1000);
type Run = TrainingRun & KubeObject;

interface Figures {
  placedPerSecond: number;
  allPlacedSeconds: number;
  p50: number;
  p99: number;
  /** API requests per run until every run was placed, Events not included. */
  requestsPerRun: number;
  /** Operator CPU time per run until all were placed: its work, whatever the machine's load. */
  cpuMsPerRun: number;
  /** The window the CPU figures cover: from the first create until all were placed. */
  cpuWindowSeconds: number;
  /** Events written per run (in the background; counted after the backlog drained). */
  eventsPerRun: number;
  peakRssMiB: number;
  idleRssMiB: number;
  /** V8 heap in use when every run was placed. */
  heapUsedMiB: number;
  onPrimary: number;
  /** CPU cores used per process while the runs were placed (1.0 = one core busy throughout). */
  cpu: { operator: number; sandbox: number; alternative: number; bench: number };
  /** Load average at the end, for the record. */
  load: string;
}

// BENCH_OPERATOR_MAIN: another build's operator/cli/main.js (e.g. an older commit's, to
// compare under the same harness and load).
const OPERATOR_MAIN = process.env.BENCH_OPERATOR_MAIN ?? buildOperator();

async function measure(label: string, withPrimary: boolean): Promise<Figures> {
  const dir = mkdtempSync(join(tmpdir(), "spillway-bench-"));
  const scenario = structuredClone(DEFAULT_SCENARIO);
  scenario.timings = { podStartup: "100ms", jobDuration: "600s" };
  scenario.clouds.azure.cluster = { nodes: Math.ceil(N / 2) + 10, gpusPerNode: 8, gpuType: "H100" };
  (scenario.clouds.azure.arm as Record<string, unknown>).latency = "0s";
  (scenario.clouds.azure.arm as Record<string, unknown>).capacity = [
    { region: "eastus", sku: "Standard_ND96isr_H100_v5", available: Math.ceil(N / 2) },
  ];
  (scenario.clouds.azure.arm as Record<string, unknown>).quota = [
    { region: "eastus", family: "standardNDSH100v5Family", limit: 96 * N },
  ];
  scenario.demo = { namespace: "bench", runs: [] };
  // The sandbox and the alternative's cluster in processes of their own (bench/lib/host.ts).
  const world = await startWorld({
    dir,
    scenario,
    namespaces: ["bench"],
    alternative: { nodes: N + 10, podStartupMs: 100, jobDurationMs: 600_000 },
    ...(withPrimary ? {} : { alternativeJurisdiction: "CA" }),
  });
  const client = KubeClient.fromKubeconfig(world.kubeconfig, { rateLimit: { qps: 5_000, burst: 10_000 } });

  const op = await startOperatorProcess(world, {
    main: OPERATOR_MAIN,
    // The heap a 384 MiB container gives it; see docs/performance.md.
    // BENCH_OPERATOR_NODE_ARGS: e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" to profile it.
    nodeArgs: [
      `--max-old-space-size=${process.env.BENCH_HEAP_MIB ?? 192}`,
      // A capped old space makes V8 shrink the young generation with it (~1.5 MiB semi-spaces
      // at 192 MiB): the operator then spent 38% of its CPU in scavenges. 16 MiB is V8's
      // default for an uncapped heap; peak RSS went down, not up (docs/performance.md).
      // BENCH_SEMI_SPACE_MIB=default leaves V8's choice (the figures before this change).
      ...(process.env.BENCH_SEMI_SPACE_MIB === "default"
        ? []
        : [`--max-semi-space-size=${process.env.BENCH_SEMI_SPACE_MIB ?? 16}`]),
      "--expose-gc",
      ...(process.env.BENCH_OPERATOR_NODE_ARGS?.split(" ").filter(Boolean) ?? []),
    ],
    maxConcurrentReconciles: process.env.BENCH_CONCURRENCY ?? "32",
    ...(process.env.BENCH_OPERATOR_LOG ? { logFile: process.env.BENCH_OPERATOR_LOG } : {}),
  });
  const idleRss = memMiB(op.pid).rss;
  const before = await scrapeRequests(op.metrics);
  const baseline = before.total;
  const created = new Map<string, number>();
  const placed = new Map<string, number>();
  const watcher = new Informer<Run>(client, SpillwayResources.TrainingRun, { namespace: "bench" });
  watcher.addHandler({
    add: (r) =>
      r.status?.placement && !placed.has(r.metadata.name!) && placed.set(r.metadata.name!, Date.now()),
    update: (_o, r) =>
      r.status?.placement && !placed.has(r.metadata.name!) && placed.set(r.metadata.name!, Date.now()),
    delete: () => undefined,
  });
  watcher.start();
  await watcher.waitForSync();

  const cpu0 = {
    op: cpuSeconds(op.pid),
    api: cpuSeconds(world.sandbox.pid),
    alt: cpuSeconds(world.alternative.pid),
    bench: process.cpuUsage(),
  };
  const t0 = Date.now();
  const runs = Array.from({ length: N }, (_, i) => {
    const r = demoRun(
      {
        name: `r-${i}`,
        workloadClass: "training",
        gpuType: "H100",
        gpusPerNode: 8,
        nodes: 1,
        startAfter: "0s",
      },
      "bench",
    );
    if (!withPrimary) r.spec.placement = { jurisdictions: ["CA"] };
    return r;
  });
  // Applied "at once": 32 clients in parallel, as `kubectl apply -f dir/` of many files would.
  let next = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (next < runs.length) {
        const r = runs[next++]!;
        await client.create(SpillwayResources.TrainingRun, r);
        created.set(r.metadata.name!, Date.now());
      }
    }),
  );
  const deadline = Date.now() + 180_000;
  while (placed.size < N && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const tAll = (Math.max(...placed.values()) - t0) / 1000;
  const latencies = [...placed.entries()]
    .map(([name, t]) => (t - (created.get(name) ?? t0)) / 1000)
    .sort((a, b) => a - b);
  const elapsed = (Date.now() - t0) / 1000;
  const cpuMsPerRun = ((cpuSeconds(op.pid) - cpu0.op) * 1000) / N;
  const cpu = {
    operator: (cpuSeconds(op.pid) - cpu0.op) / elapsed,
    sandbox: (cpuSeconds(world.sandbox.pid) - cpu0.api) / elapsed,
    alternative: (cpuSeconds(world.alternative.pid) - cpu0.alt) / elapsed,
    bench: ((u) => (u.user + u.system) / 1e6 / elapsed)(process.cpuUsage(cpu0.bench)),
  };
  // Requests until every run was placed (the window the brief's figures used), Events apart:
  // they are written in the background and counted once the backlog is gone.
  const atPlacement = await scrapeRequests(op.metrics);
  const eventsOf = (m: Map<string, number>) => m.get("mgmt create events") ?? 0;
  const requests = atPlacement.total - baseline - (eventsOf(atPlacement.byKind) - eventsOf(before.byKind));
  const tDrain = Date.now();
  await eventsDrained(op.metrics);
  const drained = await scrapeRequests(op.metrics);
  const events = eventsOf(drained.byKind) - eventsOf(before.byKind);
  console.log(
    `${label}: requests per run until all placed: ${requestMix(before.byKind, atPlacement.byKind, N)}; Events written per run ${(events / N).toFixed(1)}, the last ${((Date.now() - tDrain) / 1000).toFixed(1)} s after the last placement`,
  );
  const rss = memMiB(op.pid).peak;
  const heap = await scrapeHeap(op.metrics);
  const onPrimary = watcher.list().filter((r) => r.status?.placement?.provider === "azure-eastus").length;
  const offers = await client.listAll<KubeObject & { status?: { outcome?: string; reason?: string } }>(
    SpillwayResources.CapacityOffer,
    { namespace: "bench" },
  );
  const answers = new Map<string, number>();
  for (const o of offers.items) {
    const k = `${o.status?.outcome ?? "Open"}${o.status?.reason ? `/${o.status.reason}` : ""}`;
    answers.set(k, (answers.get(k) ?? 0) + 1);
  }
  if (answers.size) console.log(`${label}: offers ${[...answers].map(([k, v]) => `${k} ${v}`).join(", ")}`);
  await watcher.stop();
  await op.stop();
  await world.stop();
  rmSync(dir, { recursive: true, force: true });
  if (placed.size < N) console.log(`${label}: only ${placed.size} of ${N} placed within 180 s`);
  return {
    placedPerSecond: placed.size / tAll,
    allPlacedSeconds: tAll,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    requestsPerRun: requests / N,
    eventsPerRun: events / N,
    cpuMsPerRun,
    cpuWindowSeconds: elapsed,
    peakRssMiB: rss,
    idleRssMiB: idleRss,
    heapUsedMiB: heap.used,
    onPrimary,
    cpu,
    load: loadAverage(),
  };
}

// BENCH_ONLY=rofr|peer measures one side (profiling); the figures are compared only when both ran.
const only = process.env.BENCH_ONLY;
const ours = only === "peer" ? undefined : await measure("ROFR", true);
const peer = only === "rofr" ? undefined : await measure("direct", false);
const row = (name: string, f: Figures) =>
  `${name.padEnd(34)} ${f.allPlacedSeconds.toFixed(1).padStart(7)} s ${f.placedPerSecond.toFixed(1).padStart(8)} runs/s  p50 ${f.p50.toFixed(2)} s  p99 ${f.p99.toFixed(2)} s  ${f.requestsPerRun.toFixed(1).padStart(5)} req/run + ${f.eventsPerRun.toFixed(1)} Events  RSS idle ${f.idleRssMiB.toFixed(0)} / peak ${f.peakRssMiB.toFixed(0).padStart(4)} MiB, heap used ${f.heapUsedMiB.toFixed(0)} MiB  on primary ${f.onPrimary}`;
const cpuRow = (name: string, f: Figures) =>
  `${"".padEnd(34)} CPU ms per run: operator ${f.cpuMsPerRun.toFixed(1)}, sandbox host (API server, AKS, ARM) ${perRun(f, f.cpu.sandbox)}, alternative's cluster ${perRun(f, f.cpu.alternative)}, load generator ${perRun(f, f.cpu.bench)}; CPU cores busy: operator ${f.cpu.operator.toFixed(2)}, sandbox ${f.cpu.sandbox.toFixed(2)}, alternative ${f.cpu.alternative.toFixed(2)}, load generator ${f.cpu.bench.toFixed(2)}; load average ${f.load} (${name})`;
/** CPU ms per run of a process from the cores it kept busy over the measured window. */
const perRun = (f: Figures, cores: number) => ((cores * f.cpuWindowSeconds * 1000) / N).toFixed(1);
console.log(
  `placement of ${N} runs applied at once (zero-latency clouds; separate processes: operator, sandbox host, alternative's cluster, load generator)`,
);
if (ours) console.log(row("spillway, right of first refusal", ours));
if (peer) console.log(row("peer: same operator, no offer", peer));
if (ours) console.log(cpuRow("ROFR", ours));
if (peer) console.log(cpuRow("peer", peer));
console.log(`target: ${N} placed ≤ 20 s (≥ 50 runs/s), operator < 300 MiB`);
