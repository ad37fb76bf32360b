/**
 * Scale (issue 9): 10,000 TrainingRuns applied at once against the sandbox — so 10,000
 * CapacityOffers — with the operator as its own process (`spillway operator`, compiled) and
 * the sandbox and the alternative's cluster in processes of their own (bench/lib/host.ts). Runs are short
 * (2 s jobs) so they finish; then every run is deleted. Reports placement throughput, p50/p99
 * time from create to placement, API requests per run (and how many were LISTs: the operator
 * must not re-list per reconcile), offers per run, and the operator's memory: at start, peak,
 * when every run has finished, and after the runs are deleted (memory must come back towards
 * its start, not grow without bound).
 *
 * `BENCH_RUNS` changes the count. No peer: no other federating operator runs in the sandbox;
 * bench/placement.bench.ts has the no-offer peer at 1,000 runs.
 *
 * It also prints where the operator's resident memory is at each step (/proc/PID/smaps:
 * glibc's main arena, its thread arenas, other anonymous mappings — V8's pages — files) and
 * V8's heap spaces. Knobs to compare memory settings under the same harness:
 * `BENCH_OPERATOR_ENV="K=V …"` (e.g. GLIBC_TUNABLES), `BENCH_OPERATOR_NODE_ARGS`,
 * `BENCH_HEAP_MIB`, `BENCH_OPERATOR_MAIN` (another build), `BENCH_SMAPS_DIR` (keeps each
 * smaps), `BENCH_OPERATOR_LOG` (the operator's log lines, e.g. its "released memory" line).
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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
  eventsDrained,
  forceGc,
  formatSmaps,
  loadAverage,
  memMiB,
  percentile,
  type SmapsBreakdown,
  scrapeHeap,
  scrapeHeapSpaces,
  scrapeRequests,
  smapsBreakdown,
  startOperatorProcess,
  startWorld,
} from "./lib/operator.ts";

const N = Number(process.env.BENCH_RUNS ?? 10_000);
/** Only ends a hung bench; never a pass/fail limit. */
const PHASE_LIMIT_MS = Number(process.env.BENCH_PHASE_LIMIT_MS ?? 900_000);
type Run = TrainingRun & KubeObject;

async function waitUntil(what: string, ok: () => boolean): Promise<boolean> {
  const deadline = Date.now() + PHASE_LIMIT_MS;
  while (!ok()) {
    if (Date.now() > deadline) {
      console.log(`gave up waiting for ${what} after ${PHASE_LIMIT_MS / 1000} s`);
      return false;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return true;
}

const dir = mkdtempSync(join(tmpdir(), "spillway-scale-"));
const scenario = structuredClone(DEFAULT_SCENARIO);
scenario.timings = { podStartup: "100ms", jobDuration: "2s" };
scenario.clouds.azure.cluster = { nodes: 200, gpusPerNode: 8, gpuType: "H100" };
(scenario.clouds.azure.arm as Record<string, unknown>).latency = "0s";
(scenario.clouds.azure.arm as Record<string, unknown>).capacity = [
  { region: "eastus", sku: "Standard_ND96isr_H100_v5", available: Math.ceil(N / 2) },
];
(scenario.clouds.azure.arm as Record<string, unknown>).quota = [
  { region: "eastus", family: "standardNDSH100v5Family", limit: 96 * N },
];
scenario.demo = { namespace: "scale", runs: [] };
// The sandbox and the alternative's cluster in processes of their own (bench/lib/host.ts).
const world = await startWorld({
  dir,
  scenario,
  namespaces: ["scale"],
  alternative: { nodes: 400, podStartupMs: 100, jobDurationMs: 2_000 },
});
const client = KubeClient.fromKubeconfig(world.kubeconfig, {
  rateLimit: { qps: 5_000, burst: 10_000 },
});

// The compiled operator, as the container image runs it (tsx's transform caches would be
// counted as the operator's memory otherwise); --expose-gc so the bench can force a full GC
// before reading memory after the runs are deleted.
const op = await startOperatorProcess(world, {
  main: process.env.BENCH_OPERATOR_MAIN ?? buildOperator(),
  nodeArgs: [
    "--expose-gc",
    // What the chart sets (NODE_OPTIONS in charts/spillway/templates/manager.yaml).
    "--max-semi-space-size=16",
    ...(process.env.BENCH_HEAP_MIB ? [`--max-old-space-size=${process.env.BENCH_HEAP_MIB}`] : []),
    // BENCH_OPERATOR_NODE_ARGS: more node flags, e.g. to compare V8 settings.
    ...(process.env.BENCH_OPERATOR_NODE_ARGS?.split(" ").filter(Boolean) ?? []),
  ],
  // BENCH_OPERATOR_ENV="K=V K2=V2": more environment, e.g. GLIBC_TUNABLES=… to compare.
  env: Object.fromEntries(
    (process.env.BENCH_OPERATOR_ENV?.split(" ").filter(Boolean) ?? []).map((kv) => [
      kv.slice(0, kv.indexOf("=")),
      kv.slice(kv.indexOf("=") + 1),
    ]),
  ),
  maxConcurrentReconciles: "16",
  // BENCH_OPERATOR_LOG: the operator's JSON log lines, appended to this file.
  ...(process.env.BENCH_OPERATOR_LOG ? { logFile: process.env.BENCH_OPERATOR_LOG } : {}),
});
const { metrics } = op;
const pid = op.pid;
await new Promise((r) => setTimeout(r, 2_000));
const atStart = memMiB(pid);
const heapAtStart = await scrapeHeap(metrics);
// Where the resident memory is at each step (smaps) and V8's heap spaces; BENCH_SMAPS_DIR
// keeps a copy of each /proc/PID/smaps for a closer look.
const smaps: [string, SmapsBreakdown, string][] = [];
const snapshot = async (step: string) => {
  smaps.push([step, smapsBreakdown(pid), await scrapeHeapSpaces(metrics)]);
  const keep = process.env.BENCH_SMAPS_DIR;
  if (keep) {
    mkdirSync(keep, { recursive: true });
    writeFileSync(
      join(keep, `${smaps.length}-${step.replace(/\W+/g, "-")}.smaps`),
      readFileSync(`/proc/${pid}/smaps`),
    );
  }
};
await snapshot("start");
const base = await scrapeRequests(metrics);

const created = new Map<string, number>();
const placed = new Map<string, number>();
const finished = new Set<string>();
const watcher = new Informer<Run>(client, SpillwayResources.TrainingRun, { namespace: "scale" });
const see = (r: Run) => {
  const name = r.metadata.name!;
  if (r.status?.placement && !placed.has(name)) placed.set(name, Date.now());
  if (r.status?.phase === "Succeeded" || r.status?.phase === "Failed") finished.add(name);
};
watcher.addHandler({ add: see, update: (_o, r) => see(r), delete: (r) => finished.delete(r.metadata.name!) });
watcher.start();
await watcher.waitForSync();

const t0 = Date.now();
let next = 0;
await Promise.all(
  Array.from({ length: 32 }, async () => {
    while (next < N) {
      const i = next++;
      const r = demoRun(
        {
          name: `s-${i}`,
          workloadClass: "training",
          gpuType: "H100",
          gpusPerNode: 8,
          nodes: 1,
          startAfter: "0s",
        },
        "scale",
      );
      await client.create(SpillwayResources.TrainingRun, r);
      created.set(r.metadata.name!, Date.now());
    }
  }),
);
const tCreated = (Date.now() - t0) / 1000;
const allPlaced = await waitUntil("every placement", () => placed.size >= N);
const tPlaced = (Math.max(...placed.values()) - t0) / 1000;
await snapshot("all placed");
const latencies = [...placed.entries()]
  .map(([n, t]) => (t - (created.get(n) ?? t0)) / 1000)
  .sort((a, b) => a - b);
const allFinished = await waitUntil("every run to finish", () => finished.size >= N);
const finishedCount = finished.size;
const tFinished = (Date.now() - t0) / 1000;
await eventsDrained(metrics);
const afterRuns = await scrapeRequests(metrics);
const whenFinished = memMiB(pid);
await snapshot("all finished");

const offers = await client.listAll<
  KubeObject & { spec: { run: { name: string } }; status?: { outcome?: string } }
>(SpillwayResources.CapacityOffer, { namespace: "scale" });
const perRun = new Map<string, number>();
for (const o of offers.items) perRun.set(o.spec.run.name, (perRun.get(o.spec.run.name) ?? 0) + 1);
const outcomes = new Map<string, number>();
for (const o of offers.items) {
  const k = o.status?.outcome ?? "Open";
  outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
}
const onPrimary = watcher.list().filter((r) => r.status?.placement?.provider === "azure-eastus").length;

// Delete every run (the operator removes its finalizer), then let the caches drain.
next = 0;
const names = [...created.keys()];
await Promise.all(
  Array.from({ length: 32 }, async () => {
    while (next < names.length) {
      const name = names[next++]!;
      await client.delete(SpillwayResources.TrainingRun, name, "scale").catch(() => undefined);
    }
  }),
);
await waitUntil("every run to be gone", () => watcher.list().length === 0);
await new Promise((r) => setTimeout(r, 30_000));
const afterDelete = memMiB(pid);
const heapAfterDelete = await scrapeHeap(metrics);
await snapshot("deleted +30 s");
// The operator gives memory back once idle for a whole interval (15 s) after a burst
// (operator/runtime/memory.ts): a second look 30 s later.
await new Promise((r) => setTimeout(r, 30_000));
const afterDelete60 = memMiB(pid);
const heapAfterDelete60 = await scrapeHeap(metrics);
await snapshot("deleted +60 s");
// A forced full GC: if the heap falls back and RSS does not, V8 is keeping freed pages (not
// a leak); if the heap stays up, something still holds the objects.
const gcOk = await forceGc(metrics);
await new Promise((r) => setTimeout(r, 2_000));
const afterGc = memMiB(pid);
const heapAfterGc = await scrapeHeap(metrics);
await snapshot("after GC");
const load = loadAverage();

await watcher.stop();
await op.stop();
await world.stop();
rmSync(dir, { recursive: true, force: true });

const reqs = afterRuns.total - base.total;
console.log(
  `scale: ${N} TrainingRuns applied at once (operator as its own process, 2 s jobs, zero-latency clouds)`,
);
console.log(
  `  created in ${tCreated.toFixed(1)} s; ${allPlaced ? "all" : `${placed.size} of ${N}`} placed after ${tPlaced.toFixed(1)} s (${(placed.size / tPlaced).toFixed(1)} runs/s); ${allFinished ? "all" : `only ${finishedCount} of ${N}`} finished after ${tFinished.toFixed(1)} s`,
);
console.log(
  `  time to placement: p50 ${percentile(latencies, 50).toFixed(2)} s, p99 ${percentile(latencies, 99).toFixed(2)} s`,
);
console.log(
  `  offers: ${offers.items.length} for ${perRun.size} runs, max ${Math.max(...perRun.values())} per run; ${[...outcomes].map(([k, v]) => `${k} ${v}`).join(", ")}; on primary ${onPrimary}`,
);
console.log(
  `  API requests to the management cluster: ${(reqs / N).toFixed(1)} per run, LISTs ${afterRuns.lists - base.lists} in all`,
);
console.log(
  `  operator RSS: start ${atStart.rss.toFixed(0)} MiB, peak ${whenFinished.peak.toFixed(0)} MiB, ${allFinished ? "all finished" : "when the bench stopped waiting"} ${whenFinished.rss.toFixed(0)} MiB, runs deleted +30 s ${afterDelete.rss.toFixed(0)} MiB, +60 s ${afterDelete60.rss.toFixed(0)} MiB, then after a forced GC ${afterGc.rss.toFixed(0)} MiB`,
);
console.log(
  `  operator V8 heap used: start ${heapAtStart.used.toFixed(0)} MiB, runs deleted +30 s ${heapAfterDelete.used.toFixed(0)} MiB (of ${heapAfterDelete.total.toFixed(0)} MiB allocated), +60 s ${heapAfterDelete60.used.toFixed(0)} MiB (of ${heapAfterDelete60.total.toFixed(0)}), then after a forced GC ${gcOk ? `${heapAfterGc.used.toFixed(0)} MiB (of ${heapAfterGc.total.toFixed(0)}); external memory ${heapAfterGc.external.toFixed(0)} MiB` : "n/a (no --expose-gc)"}`,
);
console.log("  operator resident memory by kind, MiB (smaps), and V8 heap spaces used/committed, MiB:");
for (const [step, b, spaces] of smaps) console.log(`    ${step}: ${formatSmaps(b)}\n      V8: ${spaces}`);
console.log(`  load average at the end: ${load}`);
