/**
 * Waking runs that wait for room on the alternative (reliability finding 10): with OCI
 * limited to one provisioned cluster sized for one run, and the re-offer backoff at 60 s, a
 * run Azure declines while OCI's cluster is busy waits with `Placed=False, NoClusterCapacity`
 * and is placed on OCI in the same attempt, with its one offer, as soon as the cluster frees
 * up — not at the re-offer, which would be attempt 2 with a second offer.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import type { ProvisionedCluster } from "../../operator/api/v1alpha1/index.ts";
import { type KubeObject, SpillwayResources } from "../../operator/runtime/resources.ts";
import {
  AZURE_SKU,
  type E2E,
  eventsOf,
  eventually,
  getRun,
  offersOf,
  phaseIs,
  type Run,
  startE2E,
  testScenario,
  trainingRun,
} from "./harness.ts";

let e: E2E;

beforeAll(async () => {
  e = await startE2E(
    testScenario((s) => {
      s.clouds.oci.maxClusters = 1;
      // A freed cluster must stay for the next run; the second test shortens this itself.
      s.clouds.oci.idleTTL = "10m";
    }),
  );
  e.arm.setCapacity("eastus", AZURE_SKU, 0);
  // The harness's operator settings: re-offer backoff 60 s.
  await e.startOperator();
}, 120_000);

afterAll(async () => {
  await e?.stop();
}, 60_000);

const runs = async (names: string[]) => Promise.all(names.map((n) => getRun(e, n)));

async function eventReasons(name: string): Promise<string[]> {
  return (await eventsOf(e, name)).map((ev) => ev.reason);
}

/** Attempt 1, its one offer declined by Azure, placed on OCI. */
async function expectPlacedInFirstAttempt(run: Run): Promise<void> {
  const name = run.metadata.name!;
  expect(run.status?.phase).toBe("Succeeded");
  expect(run.status?.attempt).toBe(1);
  expect(run.status?.placement?.provider).toBe("oci-ashburn");
  expect(run.status?.placement?.attempt).toBe(1);
  const offers = await offersOf(e, name);
  expect(offers.map((o) => [o.spec.attempt, o.status?.outcome])).toEqual([[1, "Declined"]]);
  expect(run.status?.offers).toEqual([offers[0]!.metadata.name]);
}

describe("runs waiting for room on the alternative", () => {
  test("are placed in the same attempt when a run on the full provider finishes, one at a time", async () => {
    await e.client.create(SpillwayResources.TrainingRun, trainingRun("first"));
    const first = await eventually(
      () => getRun(e, "first"),
      (r) => !!r.status?.placement?.cluster,
      "first placed on a cluster",
      60_000,
    );
    expect(first.status?.placement?.provider).toBe("oci-ashburn");
    const cluster = first.status!.placement!.cluster!;

    await e.client.create(SpillwayResources.TrainingRun, trainingRun("second"));
    await e.client.create(SpillwayResources.TrainingRun, trainingRun("third"));

    // Until all three are done, never two of them on the one cluster at once (one node,
    // 8 GPUs: each run takes all of it), whichever order the wake-ups place them in.
    let mostAtOnce = 0;
    const all = await eventually(
      async () => {
        const now = await runs(["first", "second", "third"]);
        const holding = now.filter(
          (r) => r.status?.placement?.cluster === cluster && !phaseIs("Succeeded", "Failed")(r),
        );
        mostAtOnce = Math.max(mostAtOnce, holding.length);
        return now;
      },
      (list) => list.every(phaseIs("Succeeded", "Failed")),
      "all three runs done",
      90_000,
    );
    expect(mostAtOnce).toBe(1);
    await expectPlacedInFirstAttempt(all[0]!);
    for (const run of all.slice(1)) {
      // Each waited for room (the Event is kept), and was placed on the cluster that freed up,
      // in attempt 1: before its 60 s re-offer, which would have been attempt 2.
      await expectPlacedInFirstAttempt(run);
      expect(run.status?.placement?.cluster).toBe(cluster);
      expect(await eventReasons(run.metadata.name!)).toContain("NoClusterCapacity");
    }
    const pcs = await e.client.list<ProvisionedCluster & KubeObject>(
      SpillwayResources.ProvisionedCluster,
      {},
    );
    expect(pcs.items.map((pc) => pc.metadata.name)).toEqual([cluster]);
  }, 180_000);

  test("a run too big for the busy cluster is placed when that cluster is deleted and a new one may be created", async () => {
    // The cluster left by the first test is idle: a 2-node run cannot fit on it, and
    // maxClusters 1 leaves no room for another, until it is deleted.
    const [before] = (
      await e.client.list<ProvisionedCluster & KubeObject>(SpillwayResources.ProvisionedCluster, {})
    ).items;
    expect(before).toBeDefined();
    await e.client.create(SpillwayResources.TrainingRun, trainingRun("wide", { nodes: 2 }));
    const waiting = await eventually(
      () => getRun(e, "wide"),
      (r) =>
        r.status?.conditions?.some((c) => c.type === "Placed" && c.reason === "NoClusterCapacity") ?? false,
      "wide waiting for room",
      60_000,
    );
    expect(waiting.status?.placement).toBeUndefined();
    expect(waiting.status?.failedProviders ?? []).toEqual([]);
    expect(waiting.status?.conditions?.find((c) => c.type === "Placed")?.message).toMatch(
      /oci-ashburn has 1 of at most 1 provisioned clusters and none has 16 free H100 GPUs/,
    );

    // Deleting the idle cluster (what idleTTL does) frees the provider's only slot.
    await e.client.delete(SpillwayResources.ProvisionedCluster, before!.metadata.name!);
    const done = await eventually(
      () => getRun(e, "wide"),
      phaseIs("Succeeded", "Failed"),
      "wide done",
      90_000,
    );
    await expectPlacedInFirstAttempt(done);
    expect(done.status?.placement?.cluster).not.toBe(before!.metadata.name);
  }, 180_000);
});
