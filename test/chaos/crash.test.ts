/**
 * Chaos: the operator stopped abruptly at 30 seeded random points while runs arrive and move
 * through offer, placement, dispatch and completion — each stop aborts the in-flight
 * reconciles (`Manager.stop(0)`), and a fresh operator with empty memory takes over at once.
 * (The real SIGKILL of the operator process is test/e2e/resilience.test.ts; this one is
 * in-process so 30 kill points fit in well under a minute.)
 * After the last restart the ledger must be exact: every run succeeded once, one offer per
 * run (attempt 1), the placement follows the offer's answer, the Job was only ever on the
 * placed cluster, nothing is left on any cluster and every reservation is released.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import type { CloudProvider } from "../../operator/api/v1alpha1/index.ts";
import { type KubeObject, Resources, SpillwayResources } from "../../operator/runtime/resources.ts";
import { SimulatedCluster } from "../../operator/sandbox/cluster/index.ts";
import { OPERATOR_NAMESPACE } from "../../operator/sandbox/wiring.ts";
import {
  AZURE_SKU,
  type E2E,
  eventually,
  type Offer,
  type Run,
  remoteJobs,
  startE2E,
  trainingRun,
} from "../e2e/harness.ts";
import { prng } from "../fuzz/gen.ts";

const SEED = Number(process.env.CHAOS_SEED ?? 4242);
const KILL_POINTS = 30;

let e: E2E;
let oci: SimulatedCluster;
const jobsSeen = new Map<string, Map<string, Set<string>>>();
let polling = true;
let poller: Promise<void> | undefined;

function record(cluster: string, jobs: KubeObject[]): void {
  const byRun = jobsSeen.get(cluster) ?? new Map<string, Set<string>>();
  jobsSeen.set(cluster, byRun);
  for (const j of jobs) {
    const name = j.metadata.labels?.["spillway.dev/run-name"];
    if (!name) continue;
    const s = byRun.get(name) ?? new Set<string>();
    s.add(j.metadata.labels?.["spillway.dev/attempt"] ?? "?");
    byRun.set(name, s);
  }
}

beforeAll(async () => {
  e = await startE2E();
  oci = await SimulatedCluster.start({
    name: "oci-crash",
    pools: [{ name: "gpu", nodes: 8, gpusPerNode: 8, gpuType: "H100" }],
    podStartupMs: 100,
    jobDurationMs: 1500,
  });
  await e.client.create(Resources.Secret, {
    metadata: { name: "oci-crash-kubeconfig", namespace: OPERATOR_NAMESPACE },
    stringData: { kubeconfig: oci.kubeconfig() },
  } as KubeObject);
  const p = await e.client.get<CloudProvider & KubeObject>(SpillwayResources.CloudProvider, "oci-ashburn");
  p.spec.cluster = {
    existing: { kubeconfigSecretRef: { name: "oci-crash-kubeconfig", namespace: OPERATOR_NAMESPACE } },
  };
  await e.client.update(SpillwayResources.CloudProvider, p);
  poller = (async () => {
    while (polling) {
      await remoteJobs(e.sandbox.aks.kubeconfig())
        .then((j) => record("aks", j))
        .catch(() => undefined);
      await remoteJobs(oci.kubeconfig())
        .then((j) => record("oci", j))
        .catch(() => undefined);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
}, 120_000);

afterAll(async () => {
  polling = false;
  await poller;
  await e?.stop();
  await oci?.stop();
}, 60_000);

describe("abrupt operator stops", () => {
  test(`${KILL_POINTS} stops at random points of the flow: every run succeeds once, one offer and one placement each, nothing left`, async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 6);
    const random = prng(SEED);
    const names: string[] = [];
    const settings = { reofferBaseMs: 60_000, remotePollMs: 500 };
    for (let k = 0; k < KILL_POINTS; k++) {
      // New runs keep arriving, so the stops land at every stage of someone's flow.
      if (k % 3 === 0) {
        for (let j = 0; j < 2; j++) {
          const name = `crash-${names.length}`;
          const run = trainingRun(name);
          run.metadata.labels = { ...run.metadata.labels, batch: "crash" };
          await e.client.create(SpillwayResources.TrainingRun, run);
          names.push(name);
        }
      }
      const m = await e.startOperator({ settings });
      await new Promise((r) => setTimeout(r, 50 + random() * 900));
      await m.stop(0);
      e.manager = undefined;
    }
    await e.startOperator({ settings });
    const done = await eventually(
      async () =>
        (
          await e.client.list<Run>(SpillwayResources.TrainingRun, {
            namespace: "ml-team",
            labelSelector: "batch=crash",
          })
        ).items,
      (rs) =>
        rs.length === names.length &&
        rs.every((r) => r.status?.phase === "Succeeded" || r.status?.phase === "Failed"),
      "every run to finish after the last restart",
      180_000,
    );
    const ledger = (await e.client.list<Offer>(SpillwayResources.CapacityOffer, { namespace: "ml-team" }))
      .items;
    for (const r of done) {
      const name = r.metadata.name!;
      expect([name, r.status?.phase, r.status?.attempt ?? 1]).toEqual([name, "Succeeded", 1]);
      const mine = ledger.filter((o) => o.spec.run.uid === r.metadata.uid);
      expect([name, mine.map((o) => o.spec.attempt)]).toEqual([name, [1]]);
      expect([name, r.status?.offers]).toEqual([name, [`${name}-a1`]]);
      const expected = mine[0]!.status?.outcome === "Accepted" ? "azure-eastus" : "oci-ashburn";
      expect([name, r.status?.placement?.provider]).toEqual([name, expected]);
      const where = [...jobsSeen.entries()].filter(([, m]) => m.has(name)).map(([c]) => c);
      expect([name, where]).toEqual([name, [expected === "azure-eastus" ? "aks" : "oci"]]);
    }
    await eventually(
      async () => [
        ...(await remoteJobs(e.sandbox.aks.kubeconfig())),
        ...(await remoteJobs(oci.kubeconfig())),
      ],
      (jobs) => !jobs.some((j) => j.metadata.name?.startsWith("crash-")),
      "no remote Job left",
      60_000,
    );
    await eventually(
      () => e.arm.reservations(),
      (rs) => rs.every((x) => !x.name.includes("crash-")),
      "every reservation released",
      60_000,
    );
  }, 420_000);
});
