// End to end in the sandbox (the whole operator, the sandbox provisioner behind the real
// ProvisionedCluster controller): Azure declines; two runs share one OCI cluster while its
// GPUs allow; a run that does not fit gets a second cluster within maxClusters; once the runs
// have finished and idleTTL has passed, both clusters are destroyed.
import { afterAll, beforeAll, describe, expect, it } from "@jest/globals";
import type { ProvisionedCluster } from "../../../operator/api/v1alpha1/index.ts";
import { type KubeObject, SpillwayResources } from "../../../operator/runtime/resources.ts";
import {
  AZURE_SKU,
  type E2E,
  eventually,
  getRun,
  phaseIs,
  startE2E,
  testScenario,
  trainingRun,
} from "../../e2e/harness.ts";

type PC = ProvisionedCluster & KubeObject;

let e: E2E;

beforeAll(async () => {
  e = await startE2E(
    testScenario((s) => {
      s.clouds.oci.maxClusters = 2;
      s.clouds.oci.idleTTL = "2s";
      // Runs long enough that the first two still hold their cluster when the next is placed.
      s.timings = { ...s.timings, jobDuration: "8s" };
      // Long enough to stop the operator while a cluster is being provisioned.
      s.clouds.oci.provisioning = { ...s.clouds.oci.provisioning, latency: "2s" };
    }),
  );
  e.arm.setCapacity("eastus", AZURE_SKU, 0);
  await e.startOperator();
}, 120_000);

afterAll(async () => {
  await e?.stop();
}, 60_000);

async function placedCluster(name: string): Promise<string> {
  const run = await eventually(
    () => getRun(e, name),
    (r) => !!r.status?.placement?.cluster,
    `${name} placed on a cluster`,
    60_000,
  );
  expect(run.status?.placement?.provider).toBe("oci-ashburn");
  return run.status!.placement!.cluster!;
}

const clusters = async () => (await e.client.list<PC>(SpillwayResources.ProvisionedCluster, {})).items;

describe("provisioned clusters in the sandbox", () => {
  it("two runs share a cluster, a third that does not fit gets a second, and idle clusters are destroyed", async () => {
    await e.client.create(SpillwayResources.TrainingRun, trainingRun("share-a", { gpus: 4 }));
    const first = await placedCluster("share-a");
    await e.client.create(SpillwayResources.TrainingRun, trainingRun("share-b", { gpus: 4 }));
    expect(await placedCluster("share-b")).toBe(first);
    await e.client.create(SpillwayResources.TrainingRun, trainingRun("big", { gpus: 8 }));
    const second = await placedCluster("big");
    expect(second).not.toBe(first);
    expect((await clusters()).map((pc) => pc.metadata.name).sort()).toEqual([first, second].sort());

    for (const name of ["share-a", "share-b", "big"]) {
      const done = await eventually(
        () => getRun(e, name),
        phaseIs("Succeeded", "Failed"),
        `${name} done`,
        90_000,
      );
      expect(done.status?.phase).toBe("Succeeded");
    }
    await eventually(clusters, (list) => list.length === 0, "idle clusters destroyed", 60_000);
  }, 240_000);

  it("an operator stopped during provisioning and started again brings up the same cluster, not a second", async () => {
    // The sandbox provisioner's stacks are the cloud's view of what exists.
    const before = new Set(e.sandbox.provisioner.stacks());
    await e.client.create(SpillwayResources.TrainingRun, trainingRun("restart", { gpus: 8 }));
    const provisioning = await eventually(
      clusters,
      (list) => list.some((pc) => pc.status?.phase === "Provisioning"),
      "a cluster provisioning",
      60_000,
    );
    const name = provisioning.find((pc) => pc.status?.phase === "Provisioning")!.metadata.name!;
    await e.stopOperator();
    await e.startOperator();
    await eventually(
      async () => (await clusters()).find((pc) => pc.metadata.name === name),
      (pc) => pc?.status?.phase === "Ready",
      "the same cluster Ready",
      60_000,
    );
    expect((await clusters()).map((pc) => pc.metadata.name)).toEqual([name]);
    expect(e.sandbox.provisioner.stacks().filter((s) => !before.has(s))).toEqual([name]);
    const done = await eventually(
      () => getRun(e, "restart"),
      phaseIs("Succeeded", "Failed"),
      "run done",
      90_000,
    );
    expect(done.status?.phase).toBe("Succeeded");
    expect(done.status?.placement?.cluster).toBe(name);
  }, 240_000);
});
