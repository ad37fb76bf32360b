/**
 * Throughput of the Azure responder against the ARM emulator (zero latency), both in this
 * process: N offers of 1 node × 8 H100 at once, then N releases. Not a test (no assertions, no
 * time limit); prints one JSON line of figures. The lead may move it under bench/.
 *
 *   npx tsx test/clouds/azure/responder-throughput.ts [N=1000] [--free=K] [--async] [--no-max-nodes]
 *
 * --free=K: only K nodes free (the rest are declined NoCapacity, as in the demo's Azure);
 * --async: Azure-style async operations (polled); --no-max-nodes: no maxNodes ledger.
 */
import type { CapacityOffer } from "../../../operator/api/v1alpha1/index.ts";
import { AzureResponder } from "../../../operator/clouds/azure/index.ts";
import { startArmEmulator } from "../../../operator/sandbox/arm/index.ts";
import { exampleOf } from "../../helpers/examples.ts";

const args = process.argv.slice(2);
const N = Number(args.find((a) => /^\d+$/.test(a)) ?? 1000);
const free = Number(args.find((a) => a.startsWith("--free="))?.slice(7) ?? N);
const emu = await startArmEmulator({
  capacity: [{ region: "eastus", sku: "Standard_ND96isr_H100_v5", available: free }],
  quota: [{ region: "eastus", family: "standardNDSH100v5Family", limit: 96 * N }],
  latency: "0s",
  asyncOperations: args.includes("--async"),
});
const provider = exampleOf("CloudProvider", "azure-eastus") as any;
provider.spec.azure.armEndpoint = emu.url;
if (args.includes("--no-max-nodes")) delete provider.spec.capacity.gpus[0].maxNodes;
else provider.spec.capacity.gpus[0].maxNodes = N;
const responder = new AzureResponder({ authorityHost: emu.url, ca: emu.ca, pollIntervalMs: 1 });
const ctx = { credentials: { tenantId: "t", clientId: "c", clientSecret: "s" } };
const offer = (i: number) =>
  ({
    metadata: { name: `run-${i}-a1`, namespace: "ml", uid: `offer-${i}` },
    spec: {
      run: { name: `run-${i}`, uid: `run-${i}` },
      attempt: 1,
      provider: "azure-eastus",
      workloadClass: "training",
      request: { gpuType: "H100", gpusPerNode: 8, nodes: 1, region: "eastus" },
      competingQuote: { provider: "oci-ashburn", pricePerHour: 40 },
      deadline: "2030-01-01T00:00:00Z",
    },
  }) as CapacityOffer;

const cpu0 = process.cpuUsage();
const t0 = performance.now();
const latencies: number[] = [];
const answers = await Promise.all(
  Array.from({ length: N }, async (_, i) => {
    const start = performance.now();
    const a = await responder.respond(offer(i), provider, ctx);
    latencies.push(performance.now() - start);
    return a;
  }),
);
const seconds = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
const calls = emu.calls();
latencies.sort((a, b) => a - b);
const t1 = performance.now();
await Promise.all(Array.from({ length: N }, (_, i) => responder.release(offer(i), provider, ctx)));
console.log(
  JSON.stringify({
    offers: N,
    accepted: answers.filter((a) => a.outcome === "Accepted").length,
    declined: answers.filter((a) => a.outcome === "Declined").length,
    seconds: +seconds.toFixed(2),
    offersPerSecond: Math.round(N / seconds),
    p50ms: Math.round(latencies[Math.floor(N * 0.5)] ?? 0),
    p99ms: Math.round(latencies[Math.floor(N * 0.99)] ?? 0),
    cpuSeconds: +((cpu.user + cpu.system) / 1e6).toFixed(2),
    armCallsPerOffer: +(calls / N).toFixed(2),
    poolWrites: emu.calls("agentPools.createOrUpdate"),
    releaseSeconds: +((performance.now() - t1) / 1000).toFixed(2),
    leftReserved: emu.reservations().length,
    poolAfter: emu.agentPool().count,
    rssMiB: Math.round(process.memoryUsage().rss / 2 ** 20),
  }),
);
await emu.close();
