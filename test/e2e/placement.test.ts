/**
 * Issue 4's acceptance, end to end against the sandbox: the right of first refusal with the
 * real Azure responder over the ARM emulator, dispatch to the simulated clusters, the ledger.
 * Runs are applied with the real kubectl, as a user would.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import type { CloudProvider, ProvisionedCluster } from "../../operator/api/v1alpha1/index.ts";
import { collectReservations } from "../../operator/controllers/capacityoffer/controller.ts";
import { readSecret } from "../../operator/controllers/context.ts";
import { type KubeObject, SpillwayResources } from "../../operator/runtime/resources.ts";
import { SIM_DURATION_ENV } from "../../operator/sandbox/cluster/index.ts";
import {
  AZURE_QUOTA_VCPUS,
  AZURE_SKU,
  condition,
  type E2E,
  eventually,
  getRun,
  offersOf,
  phaseIs,
  type Run,
  remoteJobs,
  startE2E,
  trainingRun,
} from "./harness.ts";

let e: E2E;

beforeAll(async () => {
  e = await startE2E();
  await e.startOperator();
}, 120_000);

afterAll(async () => {
  await e?.stop();
}, 60_000);

async function apply(run: Run): Promise<void> {
  const r = await e.kubectl(["apply", "-f", "-"], JSON.stringify(run));
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
}

describe("right of first refusal", () => {
  test("Azure accepts → the run runs on the AKS cluster with one Accepted offer, and the reservation is released after", async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 8);
    await apply(trainingRun("accepted"));
    const done = await eventually(
      () => getRun(e, "accepted"),
      phaseIs("Succeeded", "Failed"),
      "run to finish",
    );
    expect(done.status?.phase).toBe("Succeeded");
    expect(done.status?.placement).toMatchObject({
      provider: "azure-eastus",
      cluster: "existing",
      reason: "PrimaryAccepted",
    });
    const offers = await offersOf(e, "accepted");
    expect(offers).toHaveLength(1);
    expect(offers[0]!.status).toMatchObject({ outcome: "Accepted" });
    expect(done.status?.offers).toEqual([offers[0]!.metadata.name]);
    // The Job ran on AKS and is gone once the run finished; the reservation is given back.
    await eventually(
      () => remoteJobs(e.sandbox.aks.kubeconfig()),
      (jobs) => !jobs.some((j) => j.metadata.name === "accepted"),
      "remote job deleted",
    );
    await eventually(
      () => e.arm.reservations(),
      (rs) => rs.every((r) => !r.name.includes("accepted")),
      "reservation released",
    );
    const released = await eventually(
      () => offersOf(e, "accepted"),
      (o) => o[0]?.status?.conditions?.some((c) => c.type === "Released" && c.status === "True") ?? false,
      "offer marked released",
    );
    expect(released[0]!.status?.outcome).toBe("Accepted");
  }, 60_000);

  test.each([
    ["NoCapacity", (e: E2E) => e.arm.setCapacity("eastus", AZURE_SKU, 0), () => undefined],
    [
      "QuotaExceeded",
      (e: E2E) => e.arm.setQuota("eastus", "standardNDSH100v5Family", 0),
      (e: E2E) => e.arm.setQuota("eastus", "standardNDSH100v5Family", AZURE_QUOTA_VCPUS),
    ],
    [
      "SkuUnavailable",
      (e: E2E) => e.arm.removeSku("eastus", AZURE_SKU),
      (e: E2E) => e.arm.setCapacity("eastus", AZURE_SKU, 2),
    ],
  ] as const)(
    "Azure declines %s → the run is provisioned on OCI and succeeds",
    async (reason, breakAzure, fix) => {
      e.arm.setCapacity("eastus", AZURE_SKU, 8);
      breakAzure(e);
      const name = `spill-${reason.toLowerCase()}`;
      try {
        await apply(trainingRun(name));
        const offers = await eventually(
          () => offersOf(e, name),
          (o) => o[0]?.status?.outcome !== undefined,
          "answer",
        );
        expect(offers[0]!.status).toMatchObject({ outcome: "Declined", reason });
      } finally {
        fix(e);
      }
      const done = await eventually(
        () => getRun(e, name),
        phaseIs("Succeeded", "Failed"),
        "run to finish",
        60_000,
      );
      expect(done.status?.phase).toBe("Succeeded");
      expect(done.status?.placement).toMatchObject({
        provider: "oci-ashburn",
        reason: `PrimaryDeclined:${reason}`,
      });
      const pc = await e.client.get<ProvisionedCluster & KubeObject>(
        SpillwayResources.ProvisionedCluster,
        done.status!.placement!.cluster!,
      );
      expect(pc.status).toMatchObject({ phase: "Ready" });
    },
    90_000,
  );

  test("a competing quote within Azure's floor is matched: accepted at the competing price", async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 8);
    await apply(trainingRun("matched"));
    const offers = await eventually(
      () => offersOf(e, "matched"),
      (o) => o[0]?.status?.outcome !== undefined,
      "answer",
    );
    // OCI quotes 8 × $4.50 = $36/h; Azure lists 8 × $6.98 but its floor is 8 × $4.10 = $32.80/h.
    expect(offers[0]!.spec.competingQuote).toMatchObject({ provider: "oci-ashburn", pricePerHour: 36 });
    expect(offers[0]!.status).toMatchObject({ outcome: "Accepted", acceptedPricePerHour: 36 });
    const run = await eventually(
      () => getRun(e, "matched"),
      (r) => r.status?.placement !== undefined,
      "placement",
    );
    expect(run.status?.placement).toMatchObject({ provider: "azure-eastus", pricePerHour: 36 });
  }, 60_000);

  test("a competing quote below Azure's floor → Declined PriceNotMatched, placed on the alternative", async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 8);
    const oci = await e.client.get<CloudProvider & { metadata: { name: string } }>(
      SpillwayResources.CloudProvider,
      "oci-ashburn",
    );
    const cheap = structuredClone(oci);
    cheap.spec.pricing = { gpus: [{ type: "H100", pricePerGpuHour: 3 }] };
    await e.client.update(SpillwayResources.CloudProvider, cheap);
    try {
      await eventually(
        () => e.manager!.ctx.caches.providers.get("oci-ashburn"),
        (p) => p?.spec.pricing?.gpus[0]?.pricePerGpuHour === 3,
        "cache sees the new price",
      );
      await apply(trainingRun("undercut"));
      const offers = await eventually(
        () => offersOf(e, "undercut"),
        (o) => o[0]?.status?.outcome !== undefined,
        "answer",
      );
      expect(offers[0]!.status).toMatchObject({ outcome: "Declined", reason: "PriceNotMatched" });
      const run = await eventually(
        () => getRun(e, "undercut"),
        (r) => r.status?.placement !== undefined,
        "placement",
      );
      expect(run.status?.placement).toMatchObject({
        provider: "oci-ashburn",
        reason: "PrimaryDeclined:PriceNotMatched",
      });
    } finally {
      const now = await e.client.get<CloudProvider & { metadata: { name: string } }>(
        SpillwayResources.CloudProvider,
        "oci-ashburn",
      );
      await e.client.update(SpillwayResources.CloudProvider, { ...now, spec: oci.spec });
    }
  }, 60_000);

  test("Azure silent past the deadline → TimedOut, placed elsewhere, and a late reservation is released", async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 8);
    e.arm.setLatency("2500ms");
    try {
      const run = trainingRun("silent");
      run.spec.placement = { rofr: { decisionTimeout: "1s" } };
      await apply(run);
      const offers = await eventually(
        () => offersOf(e, "silent"),
        (o) => o[0]?.status?.outcome !== undefined,
        "answer",
      );
      expect(offers[0]!.status?.outcome).toBe("TimedOut");
      const placed = await eventually(
        () => getRun(e, "silent"),
        (r) => r.status?.placement !== undefined,
        "placement",
      );
      expect(placed.status?.placement).toMatchObject({ provider: "oci-ashburn", reason: "PrimaryTimedOut" });
      // The answer written once stays TimedOut; whatever Azure reserved late is given back.
      await new Promise((r) => setTimeout(r, 3_000));
      expect((await offersOf(e, "silent"))[0]!.status?.outcome).toBe("TimedOut");
      await eventually(
        () => e.arm.reservations(),
        (rs) => rs.every((r) => !r.name.includes("silent")),
        "late reservation released",
      );
    } finally {
      e.arm.setLatency(0);
    }
  }, 60_000);

  test("a serving run the primary declines waits and never gets a Job outside Azure", async () => {
    // A release gives its nodes back to the region: wait until the earlier tests' runs have
    // released theirs, or one released after the next line would hand Azure capacity again.
    await eventually(
      () => e.arm.reservations(),
      (r) => r.length === 0,
      "earlier reservations released",
      60_000,
    );
    e.arm.setCapacity("eastus", AZURE_SKU, 0);
    await apply(trainingRun("inference", { workloadClass: "serving" }));
    const run = await eventually(
      () => getRun(e, "inference"),
      (r) => condition(r, "Placed")?.reason === "ServingWaitsForPrimary",
      "serving run waiting",
    );
    expect(run.status?.placement).toBeUndefined();
    expect(run.status?.phase).toBe("Pending");
    expect(condition(run, "Placed")?.message).toMatch(/primary-exclusive/);
    const offers = await offersOf(e, "inference");
    expect(offers.map((o) => [o.status?.outcome, o.status?.reason])).toEqual([["Declined", "NoCapacity"]]);
    expect(offers[0]!.spec.competingQuote).toBeUndefined();
    // No cluster was provisioned for it and no cluster but AKS could hold its Job.
    const clusters = await e.client.list(SpillwayResources.ProvisionedCluster, {});
    expect(
      clusters.items.filter(
        (c) => c.metadata.labels?.["spillway.dev/created-for-run-uid"] === run.metadata.uid,
      ),
    ).toEqual([]);
    const aksJobs = await remoteJobs(e.sandbox.aks.kubeconfig());
    expect(aksJobs.some((j) => j.metadata.name === "inference")).toBe(false);
  }, 60_000);

  test("jurisdiction EU never lands on a US provider: no offer, a clear condition", async () => {
    const run = trainingRun("eu-only");
    run.spec.placement = { jurisdictions: ["EU"] };
    await apply(run);
    const waiting = await eventually(
      () => getRun(e, "eu-only"),
      (r) => condition(r, "Placed")?.reason === "NoEligibleProvider",
      "no eligible provider",
    );
    expect(condition(waiting, "Placed")?.message).toMatch(/azure-eastus: .*jurisdiction/);
    expect(condition(waiting, "Placed")?.message).toMatch(/oci-ashburn: .*jurisdiction/);
    expect(waiting.status?.placement).toBeUndefined();
    expect(await offersOf(e, "eu-only")).toEqual([]);
    const describe = await e.kubectl(["describe", "trainingrun", "eu-only", "-n", "ml-team"]);
    expect(describe.stdout).toMatch(/NoEligibleProvider/);
  }, 60_000);

  test("deleting a running run removes its remote Job; its offers remain", async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 8);
    const run = trainingRun("doomed");
    run.spec.template.spec.containers[0]!.env = [{ name: SIM_DURATION_ENV, value: "600s" }];
    await apply(run);
    await eventually(() => getRun(e, "doomed"), phaseIs("Running"), "running");
    expect((await remoteJobs(e.sandbox.aks.kubeconfig())).some((j) => j.metadata.name === "doomed")).toBe(
      true,
    );
    const del = await e.kubectl(["delete", "trainingrun", "doomed", "-n", "ml-team", "--wait=true"]);
    expect(del.code).toBe(0);
    await eventually(
      () => remoteJobs(e.sandbox.aks.kubeconfig()),
      (jobs) => !jobs.some((j) => j.metadata.name === "doomed"),
      "remote job deleted",
    );
    const offers = await offersOf(e, "doomed");
    expect(offers).toHaveLength(1);
    expect(offers[0]!.status?.outcome).toBe("Accepted");
    await eventually(
      () => offersOf(e, "doomed"),
      (o) => o[0]?.status?.conditions?.some((c) => c.type === "Released" && c.status === "True") ?? false,
      "reservation of the deleted run released",
    );
  }, 60_000);

  test("the reservation collector releases a reservation no offer holds", async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 8);
    const m = e.manager!;
    const azure = m.ctx.caches.providers.get("azure-eastus")!;
    const responder = m.ctx.responderFor(azure)!;
    // What a responder killed before writing its answer leaves behind: a reservation for an
    // offer that was then deleted.
    const ghost = {
      apiVersion: "spillway.dev/v1alpha1",
      kind: "CapacityOffer",
      metadata: { name: "ghost-a1", namespace: "ml-team", uid: "00000000-0000-4000-8000-00000000dead" },
      spec: {
        run: { name: "ghost", uid: "00000000-0000-4000-8000-00000000beef" },
        attempt: 1,
        provider: "azure-eastus",
        workloadClass: "training",
        request: { gpuType: "H100", gpusPerNode: 8, nodes: 1, sku: AZURE_SKU, region: "eastus" },
        deadline: new Date(Date.now() + 60_000).toISOString(),
      },
    } as const;
    const credentials = readSecret(m.ctx, azure.spec.azure?.credentialsSecretRef) ?? {};
    const answer = await responder.respond(structuredClone(ghost) as never, azure, { credentials });
    expect(answer.outcome).toBe("Accepted");
    expect(e.arm.reservations().some((r) => r.tags["spillway-offer"] === "ml-team/ghost-a1")).toBe(true);
    const collected = await collectReservations(m.ctx);
    expect(collected).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ provider: "azure-eastus", why: "its offer no longer exists" }),
      ]),
    );
    expect(e.arm.reservations().some((r) => r.tags["spillway-offer"] === "ml-team/ghost-a1")).toBe(false);
  }, 60_000);
});
