/**
 * A placement written, then the operator stopped before it created the ProvisionedCluster the
 * placement names (two writes, no transaction between them). The restarted operator creates
 * that cluster under the name the attempt gives it — within the provider's maxClusters — and
 * the run goes on; before, the run waited "ProvisionedCluster … is being created" for ever
 * (test/chaos/kill in a clean-clone CI run, 2026-12-08: two runs stuck so after a kill).
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import type { ProvisionedCluster } from "../../operator/api/v1alpha1/index.ts";
import {
  LABEL_PC_CREATED_FOR,
  provisionedClusterName,
} from "../../operator/controllers/trainingrun/targets.ts";
import { type KubeObject, SpillwayResources } from "../../operator/runtime/resources.ts";
import {
  AZURE_SKU,
  type E2E,
  eventsOf,
  eventually,
  getRun,
  phaseIs,
  type Run,
  startE2E,
  testScenario,
  trainingRun,
} from "./harness.ts";

type PC = ProvisionedCluster & KubeObject;
let e: E2E;

beforeAll(async () => {
  e = await startE2E(testScenario());
}, 120_000);

afterAll(async () => {
  await e?.stop();
}, 60_000);

/**
 * A run whose status says what `lockPlacement` writes before it creates the cluster: the one
 * its attempt creates, or (`cluster` given) another run's.
 */
async function placedOnMissingCluster(name: string, other?: string): Promise<{ run: Run; cluster: string }> {
  const run = trainingRun(name);
  run.spec.placement = { alternatives: ["oci-ashburn"] };
  const created = await e.client.create<Run>(SpillwayResources.TrainingRun, run);
  const cluster = other ?? provisionedClusterName("oci-ashburn", created.metadata.uid!, 1);
  await e.client.updateStatus(SpillwayResources.TrainingRun, {
    ...created,
    status: {
      phase: "Provisioning",
      attempt: 1,
      moves: 0,
      placement: { provider: "oci-ashburn", cluster, attempt: 1, reason: "Declined: azure-eastus declined" },
      conditions: [
        {
          type: "Placed",
          status: "True",
          reason: "Declined",
          message: `placed on oci-ashburn/${cluster}`,
          lastTransitionTime: new Date().toISOString(),
        },
      ],
    },
  } as Run);
  return { run: created, cluster };
}

describe("a cluster creation the operator's stop interrupted", () => {
  test("is done by the restarted operator, under the attempt's name, and the run finishes there", async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 0);
    const { cluster } = await placedOnMissingCluster("interrupted");
    await e.startOperator();
    const done = await eventually(
      () => getRun(e, "interrupted"),
      phaseIs("Succeeded", "Failed"),
      "finish",
      90_000,
    );
    expect(done.status?.phase).toBe("Succeeded");
    expect(done.status?.attempt).toBe(1);
    expect(done.status?.placement).toMatchObject({ provider: "oci-ashburn", cluster });
    const clusters = (await e.client.list<PC>(SpillwayResources.ProvisionedCluster, {})).items;
    expect(clusters.map((c) => c.metadata.name)).toEqual([cluster]);
    expect(clusters[0]!.metadata.labels?.[LABEL_PC_CREATED_FOR]).toBe(done.metadata.uid);
    const events = await eventsOf(e, "interrupted");
    expect(events.filter((ev) => ev.reason === "Provisioning").map((ev) => ev.message)).toEqual([
      `provisioning cluster ${cluster} on oci-ashburn (its creation had been interrupted)`,
    ]);
  }, 120_000);

  test("a placement on another run's cluster that is gone fails over, as from a destroyed cluster", async () => {
    await e.stopOperator();
    e.arm.setCapacity("eastus", AZURE_SKU, 4);
    const gone = provisionedClusterName("oci-ashburn", "another-run", 1);
    await placedOnMissingCluster("reused", gone);
    await e.startOperator();
    const done = await eventually(
      () => getRun(e, "reused"),
      phaseIs("Succeeded", "Failed"),
      "finish",
      90_000,
    );
    expect(done.status?.phase).toBe("Succeeded");
    expect(done.status?.placement?.provider).toBe("azure-eastus");
    expect(done.status?.failedProviders).toEqual(["oci-ashburn"]);
    const events = await eventsOf(e, "reused");
    expect(events.filter((ev) => ev.reason === "ClusterFailed").map((ev) => ev.message)).toEqual([
      `ProvisionedCluster ${gone}, which the run was placed on, no longer exists`,
    ]);
    // Nothing was created for it.
    const clusters = (await e.client.list<PC>(SpillwayResources.ProvisionedCluster, {})).items;
    expect(clusters.map((c) => c.metadata.name)).not.toContain(gone);
  }, 120_000);
});
