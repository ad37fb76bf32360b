/**
 * Placement throughput (issue 4's target): 1,000 TrainingRuns applied at once against the
 * sandbox with zero-latency clouds; the operator runs as its own process (`spillway
 * operator`), so its memory is its own. Reports runs placed per second, p50/p99 time from
 * create to placement, API requests per run and the operator's peak RSS.
 *
 * Peer, from the same run: the same operator and runs with no primary eligible (the runs name
 * a jurisdiction only the alternative serves), i.e. placement without the right of first
 * refusal — the cost of the offer round-trip is the difference.
 *
 * Target (issue 4): all 1,000 placed within 20 s (≥ 50 runs/s) and operator memory < 300 MiB.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { CloudProvider, TrainingRun } from "../operator/api/v1alpha1/index.ts";
import { KubeClient } from "../operator/runtime/client.ts";
import { Informer } from "../operator/runtime/informer.ts";
import { type KubeObject, Resources, SpillwayResources } from "../operator/runtime/resources.ts";
import { SimulatedCluster } from "../operator/sandbox/cluster/index.ts";
import { demoRun } from "../operator/sandbox/demo.ts";
import { startSandbox } from "../operator/sandbox/sandbox.ts";
import { DEFAULT_SCENARIO } from "../operator/sandbox/scenario.ts";
import { installSandboxClouds, OPERATOR_NAMESPACE, startSandboxArm } from "../operator/sandbox/wiring.ts";
import { memMiB, percentile, ROOT, scrapeRequests, startOperatorProcess } from "./lib/operator.ts";

const N = Number(process.env.BENCH_RUNS ?? 1000);
type Run = TrainingRun & KubeObject;

interface Figures {
  placedPerSecond: number;
  allPlacedSeconds: number;
  p50: number;
  p99: number;
  requestsPerRun: number;
  peakRssMiB: number;
  onPrimary: number;
}

/**
 * The operator as shipped: compiled JavaScript (the container image runs `npm run build`'s
 * output), not the TypeScript sources through tsx, whose transform caches would be counted
 * as the operator's memory. Built once per benchmark run under .spillway/ (gitignored).
 */
function buildOperator(): string {
  const out = join(ROOT, ".spillway", "bench-dist");
  const tsc = join(ROOT, "node_modules", "typescript", "bin", "tsc");
  const r = spawnSync(process.execPath, [tsc, "-p", join(ROOT, "tsconfig.build.json"), "--outDir", out], {
    stdio: "inherit",
  });
  if (r.status !== 0) throw new Error("tsc build of the operator failed");
  return join(out, "operator", "cli", "main.js");
}
const OPERATOR_MAIN = buildOperator();

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
  const sandbox = await startSandbox({ stateDir: dir, scenario, startArm: startSandboxArm });
  const oci = await SimulatedCluster.start({
    name: "oci-bench",
    pools: [{ name: "gpu", nodes: N + 10, gpusPerNode: 8, gpuType: "H100" }],
    podStartupMs: 100,
    jobDurationMs: 600_000,
  });
  const client = KubeClient.fromKubeconfig(sandbox.management.kubeconfig());
  await installSandboxClouds(sandbox, client, ["bench"]);
  await client.create(Resources.Secret, {
    metadata: { name: "oci-bench-kubeconfig", namespace: OPERATOR_NAMESPACE },
    stringData: { kubeconfig: oci.kubeconfig() },
  } as KubeObject);
  const p = await client.get<CloudProvider & KubeObject>(SpillwayResources.CloudProvider, "oci-ashburn");
  p.spec.cluster = {
    existing: { kubeconfigSecretRef: { name: "oci-bench-kubeconfig", namespace: OPERATOR_NAMESPACE } },
  };
  if (!withPrimary) p.spec.jurisdiction = "CA";
  await client.update(SpillwayResources.CloudProvider, p);

  const op = await startOperatorProcess(sandbox, dir, {
    main: OPERATOR_MAIN,
    // The heap a 384 MiB container gives it; see docs.
    nodeArgs: [`--max-old-space-size=${process.env.BENCH_HEAP_MIB ?? 192}`],
    maxConcurrentReconciles: process.env.BENCH_CONCURRENCY ?? "32",
    ...(process.env.BENCH_OPERATOR_LOG ? { logFile: process.env.BENCH_OPERATOR_LOG } : {}),
  });
  const baseline = (await scrapeRequests(op.metrics)).total;
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
  const requests = (await scrapeRequests(op.metrics)).total - baseline;
  const rss = memMiB(op.pid).peak;
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
  await oci.stop();
  await sandbox.stop();
  rmSync(dir, { recursive: true, force: true });
  if (placed.size < N) console.log(`${label}: only ${placed.size} of ${N} placed within 180 s`);
  return {
    placedPerSecond: placed.size / tAll,
    allPlacedSeconds: tAll,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    requestsPerRun: requests / N,
    peakRssMiB: rss,
    onPrimary,
  };
}

const ours = await measure("ROFR", true);
const peer = await measure("direct", false);
const row = (name: string, f: Figures) =>
  `${name.padEnd(34)} ${f.allPlacedSeconds.toFixed(1).padStart(7)} s ${f.placedPerSecond.toFixed(1).padStart(8)} runs/s  p50 ${f.p50.toFixed(2)} s  p99 ${f.p99.toFixed(2)} s  ${f.requestsPerRun.toFixed(1).padStart(5)} req/run  ${f.peakRssMiB.toFixed(0).padStart(4)} MiB  on primary ${f.onPrimary}`;
console.log(`placement of ${N} runs applied at once (operator as its own process, zero-latency clouds)`);
console.log(row("spillway, right of first refusal", ours));
console.log(row("peer: same operator, no offer", peer));
console.log(`target: ${N} placed ≤ 20 s (≥ 50 runs/s), operator < 300 MiB`);
