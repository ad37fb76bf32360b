/**
 * Room on a provisioned alternative when runs are decided in parallel: runs woken together
 * (a cluster freed up) are reconciled by several workers at once, each reading the caches,
 * where a placement just written by another worker is not yet. `PendingPlacements` makes a
 * placement count from the moment it is decided until the caches show it. Against the
 * sandbox API server and the operator's real informers.
 */
import { afterEach, beforeEach, describe, expect, it } from "@jest/globals";
import type { CloudProvider, ProvisionedCluster, TrainingRun } from "../../../operator/api/v1alpha1/index.ts";
import type { RemoteClusters } from "../../../operator/controllers/remote/clusters.ts";
import { PendingPlacements } from "../../../operator/controllers/trainingrun/capacity.ts";
import { chooseCluster, RUNS_BY_CLUSTER } from "../../../operator/controllers/trainingrun/targets.ts";
import { type KubeObject, SpillwayResources } from "../../../operator/runtime/resources.ts";
import { trainingRun } from "../../e2e/harness.ts";
import { exampleOf } from "../../helpers/examples.ts";
import { type Harness, startHarness, waitFor } from "../provisionedcluster/harness.ts";

type PC = ProvisionedCluster & KubeObject;
type Run = TrainingRun & KubeObject;

let h: Harness;
let pending: PendingPlacements;

beforeEach(async () => {
  h = await startHarness();
  h.ctx.remote = { unreachableForMs: () => 0 } as unknown as RemoteClusters;
  h.ctx.caches.runs.addIndex(RUNS_BY_CLUSTER, (r) =>
    r.status?.placement?.cluster ? [`${r.status.placement.provider}/${r.status.placement.cluster}`] : [],
  );
  pending = new PendingPlacements(h.ctx.caches.runs, h.ctx.caches.clusters, () => Date.now());
});
afterEach(async () => {
  await h.close();
});

function oci(maxClusters: number): CloudProvider {
  const p = exampleOf("CloudProvider", "oci-ashburn") as CloudProvider;
  p.spec.cluster.provision!.maxClusters = maxClusters;
  return p;
}

/** A Ready cluster with one 8-GPU H100 node. */
async function readyCluster(name: string): Promise<void> {
  const pc = await h.client.create<PC>(SpillwayResources.ProvisionedCluster, {
    apiVersion: "spillway.dev/v1alpha1",
    kind: "ProvisionedCluster",
    metadata: { name },
    spec: {
      provider: "oci-ashburn",
      stackName: name,
      program: "oci",
      region: "us-ashburn-1",
      nodePools: [{ name: "gpu", shape: "BM.GPU.H100.8", gpuType: "H100", gpusPerNode: 8, nodes: 1 }],
    },
  } as PC);
  await h.client.updateStatus(SpillwayResources.ProvisionedCluster, { ...pc, status: { phase: "Ready" } });
  await waitFor(
    () => h.ctx.caches.clusters.get(name)?.status?.phase === "Ready",
    "cluster Ready in the cache",
  );
}

async function run(name: string): Promise<Run> {
  const created = await h.client.create<Run>(SpillwayResources.TrainingRun, trainingRun(name));
  await waitFor(() => h.ctx.caches.runs.get(`ml-team/${name}`), `${name} in the cache`);
  return created;
}

describe("pending placements", () => {
  it("two runs decided in parallel do not both take the last free GPUs of a cluster", async () => {
    const provider = oci(1);
    await readyCluster("c1");
    const [a, b] = [await run("a"), await run("b")];

    const forA = chooseCluster(h.ctx, a, provider, 1, pending);
    expect(forA).toMatchObject({ kind: "reuse", cluster: { metadata: { name: "c1" } } });
    pending.claim(a, { provider: "oci-ashburn", cluster: "c1", gpus: 8, creates: false });
    // Without the claim, b would be given the same 8 GPUs: the cache does not show a's placement.
    expect(chooseCluster(h.ctx, b, provider, 1)).toMatchObject({ kind: "reuse" });
    expect(chooseCluster(h.ctx, b, provider, 1, pending)).toMatchObject({
      kind: "full",
      message: "oci-ashburn has 1 of at most 1 provisioned clusters and none has 8 free H100 GPUs",
    });

    // Once the cache shows a's placement the claim ends, and the cache alone keeps b out.
    await h.client.updateStatus(SpillwayResources.TrainingRun, {
      ...a,
      status: { phase: "Provisioning", attempt: 1, placement: { provider: "oci-ashburn", cluster: "c1" } },
    } as Run);
    await waitFor(() => h.ctx.caches.runs.get("ml-team/a")?.status?.placement, "a's placement in the cache");
    expect(chooseCluster(h.ctx, b, provider, 1, pending)).toMatchObject({ kind: "full" });
    expect(pending.size).toBe(0);
  });

  it("a cluster just created for one run counts against maxClusters before the cache shows it", async () => {
    const provider = oci(2);
    await readyCluster("c1");
    const [busy, a, b] = [await run("busy"), await run("a"), await run("b")];
    await h.client.updateStatus(SpillwayResources.TrainingRun, {
      ...busy,
      status: { phase: "Running", attempt: 1, placement: { provider: "oci-ashburn", cluster: "c1" } },
    } as Run);
    await waitFor(() => h.ctx.caches.runs.get("ml-team/busy")?.status?.placement, "busy placed in the cache");

    const forA = chooseCluster(h.ctx, a, provider, 1, pending);
    expect(forA.kind).toBe("create");
    const release = pending.claim(a, {
      provider: "oci-ashburn",
      cluster: forA.kind === "create" ? forA.name : "",
      gpus: 8,
      creates: true,
    });
    expect(chooseCluster(h.ctx, b, provider, 1, pending)).toMatchObject({
      kind: "full",
      message: "oci-ashburn has 2 of at most 2 provisioned clusters and none has 8 free H100 GPUs",
    });
    // A placement whose write failed gives its room back.
    release();
    expect(chooseCluster(h.ctx, b, provider, 1, pending).kind).toBe("create");
  });
});
