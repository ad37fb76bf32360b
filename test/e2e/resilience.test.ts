/**
 * The operator as its own process (`spillway operator`), killed with SIGKILL mid-flight and
 * restarted, and two replicas under leader election. The alternative uses an existing
 * simulated cluster here, so every step of the flow runs in the child process.
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
  OperatorProcess,
  type Run,
  remoteJobs,
  startE2E,
  trainingRun,
} from "./harness.ts";

let e: E2E;
let oci: SimulatedCluster;
const ops: OperatorProcess[] = [];

beforeAll(async () => {
  e = await startE2E();
  oci = await SimulatedCluster.start({
    name: "oci-fixed",
    pools: [{ name: "gpu", nodes: 4, gpusPerNode: 8, gpuType: "H100" }],
    podStartupMs: 100,
    jobDurationMs: 1500,
  });
  await e.client.create(Resources.Secret, {
    metadata: { name: "oci-fixed-kubeconfig", namespace: OPERATOR_NAMESPACE },
    stringData: { kubeconfig: oci.kubeconfig() },
  } as KubeObject);
  const p = await e.client.get<CloudProvider & KubeObject>(SpillwayResources.CloudProvider, "oci-ashburn");
  p.spec.cluster = {
    existing: { kubeconfigSecretRef: { name: "oci-fixed-kubeconfig", namespace: OPERATOR_NAMESPACE } },
  };
  await e.client.update(SpillwayResources.CloudProvider, p);
}, 120_000);

afterAll(async () => {
  for (const op of ops) if (op.child.exitCode === null) await op.kill();
  await oci?.stop();
  await e?.stop();
}, 60_000);

function start(args: string[] = []): OperatorProcess {
  const op = new OperatorProcess(e, args);
  ops.push(op);
  return op;
}

const runs = async (label: string) =>
  (
    await e.client.list<Run>(SpillwayResources.TrainingRun, {
      namespace: "ml-team",
      labelSelector: `batch=${label}`,
    })
  ).items;
const offers = async () =>
  (await e.client.list<Offer>(SpillwayResources.CapacityOffer, { namespace: "ml-team" })).items;

describe("the operator process", () => {
  test("SIGKILL at any point and restart: no run placed twice, no duplicate offer, no Job left without a run", async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 3);
    const names = Array.from({ length: 12 }, (_, i) => `crash-${i}`);
    let op = start();
    await eventually(
      () => op.has("operator started"),
      (v) => v,
      "operator started",
      60_000,
    );
    for (const n of names) {
      const run = trainingRun(n);
      run.metadata.labels = { ...run.metadata.labels, batch: "crash" };
      const r = await e.kubectl(["apply", "-f", "-"], JSON.stringify(run));
      expect(r.code).toBe(0);
    }
    // Kill it twice mid-flight (offers being made, placements and dispatch under way).
    for (const delay of [300, 1200]) {
      await new Promise((r) => setTimeout(r, delay));
      expect(await op.kill("SIGKILL")).toBeNull();
      op = start();
      await eventually(
        () => op.has("operator started"),
        (v) => v,
        "operator restarted",
        60_000,
      );
    }
    const finished = await eventually(
      () => runs("crash"),
      (rs) => rs.length === names.length && rs.every((r) => r.status?.phase === "Succeeded"),
      "every run to succeed",
      120_000,
    );
    for (const r of finished) {
      expect(r.status?.attempt).toBe(1);
      expect(r.status?.moves ?? 0).toBe(0);
      expect(r.status?.offers).toEqual([`${r.metadata.name}-a1`]);
    }
    const ledger = (await offers()).filter((o) => o.spec.run.name.startsWith("crash-"));
    // Exactly one offer per run (one attempt each), every one answered once.
    expect(ledger.map((o) => o.spec.run.name).sort()).toEqual([...names].sort());
    expect(ledger.every((o) => o.status?.outcome === "Accepted" || o.status?.outcome === "Declined")).toBe(
      true,
    );
    // Placed on Azure exactly when its offer was accepted.
    for (const r of finished) {
      const o = ledger.find((x) => x.spec.run.uid === r.metadata.uid)!;
      expect(r.status?.placement?.provider).toBe(
        o.status?.outcome === "Accepted" ? "azure-eastus" : "oci-ashburn",
      );
    }
    // Finished runs keep no remote objects anywhere.
    await eventually(
      async () => [
        ...(await remoteJobs(e.sandbox.aks.kubeconfig())),
        ...(await remoteJobs(oci.kubeconfig())),
      ],
      (jobs) => !jobs.some((j) => j.metadata.name?.startsWith("crash-")),
      "no remote jobs left",
    );
    await eventually(
      () => e.arm.reservations(),
      (rs) => rs.every((x) => !x.name.includes("crash-")),
      "reservations released",
    );
    await op.kill("SIGTERM");
  }, 240_000);

  test("leader election: of two replicas only one acts; killing it hands over", async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 4);
    // 6 s, not 2 s: on two loaded cores a leader could miss a 2 s renewal while it was busy,
    // and the standby took over while it still acted (a flake, not a handover).
    const flags = ["--leader-elect", "--lease-duration", "6s", "--leader-election-id", "spillway-e2e"];
    const a = start(flags);
    const b = start(flags);
    const leaderOf = () => [a, b].find((o) => o.has("leading: starting controllers"));
    const leader = await eventually(leaderOf, (o) => o !== undefined, "a leader", 60_000);
    const standby = leader === a ? b : a;
    await eventually(
      () => standby.has("caches synced"),
      (v) => v,
      "standby warm",
      60_000,
    );

    const first = trainingRun("le-1");
    await e.kubectl(["apply", "-f", "-"], JSON.stringify(first));
    await eventually(
      () => e.client.get<Run>(SpillwayResources.TrainingRun, "le-1", "ml-team"),
      (r) => r.status?.phase === "Succeeded",
      "first run done by the leader",
      60_000,
    );
    expect(standby.has("leading: starting controllers")).toBe(false);
    expect(standby.logs().some((l) => l.message === "offered to the primary")).toBe(false);
    expect(
      leader!.logs().some((l) => l.message === "offered to the primary" && l.run === "ml-team/le-1"),
    ).toBe(true);

    await leader!.kill("SIGKILL");
    await eventually(
      () => standby.has("leading: starting controllers"),
      (v) => v,
      "standby takes over",
      30_000,
    );
    const second = trainingRun("le-2");
    await e.kubectl(["apply", "-f", "-"], JSON.stringify(second));
    const done = await eventually(
      () => e.client.get<Run>(SpillwayResources.TrainingRun, "le-2", "ml-team"),
      (r) => r.status?.phase === "Succeeded",
      "second run done by the new leader",
      60_000,
    );
    expect(done.status?.offers).toEqual(["le-2-a1"]);
    const lease = await e.client.get<KubeObject & { spec: { holderIdentity?: string } }>(
      Resources.Lease,
      "spillway-e2e",
      OPERATOR_NAMESPACE,
    );
    expect(lease.spec.holderIdentity).toMatch(/^op-/);
    await standby.kill("SIGTERM");
  }, 180_000);
});
