/**
 * Failback (placement step 8, `placement.failback: WhenPrimaryAccepts`): a run placed on OCI
 * because Azure declined is offered to Azure again periodically while it runs; when Azure
 * accepts, the run stops on OCI at a checkpoint boundary and moves back, resuming from its
 * newest committed checkpoint. While Azure keeps declining, the run stays where it is.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import type { ProvisionedCluster } from "../../operator/api/v1alpha1/index.ts";
import { uploadCheckpoint } from "../../operator/checkpoints/index.ts";
import { openStore } from "../../operator/dataplane/store.ts";
import { KubeClient } from "../../operator/runtime/client.ts";
import { type KubeObject, Resources, SpillwayResources } from "../../operator/runtime/resources.ts";
import { SIM_DURATION_ENV } from "../../operator/sandbox/cluster/index.ts";
import { checkpointName } from "../../operator/sandbox/trainer/trainer.ts";
import { trainerCheckpoint } from "../checkpoints/fixtures.ts";
import { exampleOf } from "../helpers/examples.ts";
import {
  AZURE_SKU,
  type E2E,
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
const INTERVAL_MS = 1_000;
const OPERATOR = {
  settings: {
    remotePollMs: 500,
    reofferBaseMs: 60_000,
    failbackIntervalMs: INTERVAL_MS,
    failbackMaxIntervalMs: 2 * INTERVAL_MS,
  },
};

beforeAll(async () => {
  e = await startE2E(testScenario((s) => (s.clouds.oci.maxClusters = 4)));
  await e.startOperator(OPERATOR);
}, 120_000);

afterAll(async () => {
  await e?.stop();
}, 60_000);

function envOf(job: KubeObject & { spec: any }): Record<string, string> {
  return Object.fromEntries(
    job.spec.template.spec.containers[0].env.map((x: { name: string; value: string }) => [x.name, x.value]),
  );
}

async function ociCluster(run: Run) {
  const pc = await e.client.get<ProvisionedCluster & KubeObject>(
    SpillwayResources.ProvisionedCluster,
    run.status!.placement!.cluster!,
  );
  return e.sandbox.provisioner.cluster(pc.spec.stackName)!;
}

async function eventReasons(name: string): Promise<string> {
  const r = await e.kubectl([
    "get",
    "events",
    "-n",
    "ml-team",
    "--field-selector",
    `involvedObject.name=${name}`,
  ]);
  return r.stdout;
}

function failbackRun(name: string, duration: string): Run {
  const run = trainingRun(name);
  run.spec.placement = { ...run.spec.placement, failback: "WhenPrimaryAccepts" };
  run.spec.checkpoints = { keep: 3 };
  run.spec.template.spec.containers[0]!.env = [{ name: SIM_DURATION_ENV, value: duration }];
  return run;
}

// The declining case runs first: a reservation released after a run is deleted gives capacity
// back to the ARM emulator asynchronously, which would race a later `setCapacity(0)`.
describe("failback", () => {
  test("while Azure keeps declining, the run stays on OCI and finishes there; every failback offer is declined", async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 0);
    expect((await e.kubectl(["apply", "-f", "-"], JSON.stringify(failbackRun("stayer", "6s")))).code).toBe(0);
    const done = await eventually(
      () => getRun(e, "stayer"),
      phaseIs("Succeeded", "Failed"),
      "finish",
      60_000,
    );
    expect(done.status?.phase).toBe("Succeeded");
    expect(done.status?.placement?.provider).toBe("oci-ashburn");
    expect(done.status?.attempt).toBe(1);
    expect(done.status?.moves ?? 0).toBe(0);

    // An offer still open when the run finished is answered by the primary all the same.
    const offers = await eventually(
      () => offersOf(e, "stayer"),
      (os) => os.every((o) => o.status?.outcome !== undefined),
      "every offer answered",
      30_000,
    );
    const checks = offers.filter((o) => o.spec.purpose === "Failback");
    expect(checks.length).toBeGreaterThanOrEqual(1);
    // At most one check per interval while it ran (6 s of work at a 1 s interval that backs off to 2 s).
    expect(checks.length).toBeLessThanOrEqual(8);
    expect(checks.map((o) => [o.spec.attempt, o.status?.outcome, o.status?.reason])).toEqual(
      checks.map(() => [2, "Declined", "NoCapacity"]),
    );
    expect(done.status?.failback?.checks).toBe(checks.length);
    expect(await eventReasons("stayer")).toMatch(/FailbackDeclined/);
  }, 120_000);

  test("a run started on OCI moves to Azure when Azure accepts a failback offer, resuming from its committed step", async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 0);
    expect(
      (await e.kubectl(["apply", "-f", "-"], JSON.stringify(failbackRun("returner", "120s")))).code,
    ).toBe(0);
    const onOci = await eventually(() => getRun(e, "returner"), phaseIs("Running"), "running on OCI", 60_000);
    expect(onOci.status?.placement?.provider).toBe("oci-ashburn");
    const sim = await ociCluster(onOci);
    const oci = KubeClient.fromKubeconfig(sim.kubeconfig());
    const ociJob = await oci.get<KubeObject & { spec: any }>(Resources.Job, "returner", "ml-team");
    const storeUri = envOf(ociJob).SPILLWAY_CHECKPOINT_STORE!;

    // Azure keeps declining for now: failback checks are made and declined, the run stays.
    await eventually(
      () => offersOf(e, "returner"),
      (os) => os.some((o) => o.spec.purpose === "Failback" && o.status?.outcome === "Declined"),
      "a declined failback offer",
      30_000,
    );
    expect((await getRun(e, "returner")).status?.placement?.provider).toBe("oci-ashburn");

    // The trainer commits step 40 on OCI (as the checkpoint agent would); then Azure has room.
    const store = await openStore(storeUri, {
      s3: {
        accessKeyId: e.sandbox.s3Storage.accessKeyId,
        secretAccessKey: e.sandbox.s3Storage.secretAccessKey,
      },
    });
    const work = mkdtempSync(join(tmpdir(), "spillway-failback-"));
    try {
      const dir = await trainerCheckpoint(work, 40);
      await uploadCheckpoint(store, dir, checkpointName(40), { runUid: onOci.metadata.uid!, step: 40 });
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
    e.arm.setCapacity("eastus", AZURE_SKU, 2);

    const moved = await eventually(
      () => getRun(e, "returner"),
      (r) => r.status?.placement?.provider === "azure-eastus" && r.status?.remote?.job !== undefined,
      "failed back to Azure and dispatched",
      60_000,
    );
    expect(moved.status?.moves).toBe(1);
    expect(moved.status?.attempt).toBe(2);
    expect(moved.status?.checkpoint).toMatchObject({ step: 40 });
    expect(moved.status?.checkpoint?.replicatedTo).toEqual(expect.arrayContaining(["azure-eastus"]));

    // The new Job on AKS resumes from step 40, out of Azure's store.
    const aks = KubeClient.fromKubeconfig(e.sandbox.aks.kubeconfig());
    const aksEnv = envOf(await aks.get<KubeObject & { spec: any }>(Resources.Job, "returner", "ml-team"));
    expect(aksEnv.SPILLWAY_RESUME_STEP).toBe("40");
    expect(aksEnv.SPILLWAY_CHECKPOINT_STORE).toMatch(/^azblob:\/\//);
    // Nothing is left on OCI.
    expect(await oci.tryGet(Resources.Job, "returner", "ml-team")).toBeUndefined();
    expect((await oci.list(Resources.Pod, { namespace: "ml-team" })).items).toHaveLength(0);

    // The ledger: attempt 1's declined offer, then failback checks, the last one Accepted and
    // the placement of attempt 2.
    const offers = await offersOf(e, "returner");
    const [first, ...checks] = offers.sort(
      (a, b) =>
        (a.metadata.creationTimestamp ?? "").localeCompare(b.metadata.creationTimestamp ?? "") ||
        a.metadata.name!.localeCompare(b.metadata.name!, undefined, { numeric: true }),
    );
    expect([first!.metadata.name, first!.spec.attempt, first!.status?.outcome]).toEqual([
      "returner-a1",
      1,
      "Declined",
    ]);
    expect(checks.length).toBeGreaterThanOrEqual(2);
    for (const o of checks) {
      expect([o.spec.purpose, o.spec.attempt, o.spec.competingQuote?.provider]).toEqual([
        "Failback",
        2,
        "oci-ashburn",
      ]);
    }
    const accepted = checks.filter((o) => o.status?.outcome === "Accepted");
    expect(accepted.map((o) => o.metadata.name)).toEqual([moved.status?.placement?.offer]);
    expect(
      checks.filter((o) => o.status?.outcome !== "Accepted").every((o) => o.status?.outcome === "Declined"),
    ).toBe(true);
    expect(moved.status?.failback).toMatchObject({
      checks: checks.length,
      offer: accepted[0]!.metadata.name,
    });
    expect(moved.status?.offers?.[0]).toBe(accepted[0]!.metadata.name);

    // The accepted offer's reservation is held for the run on Azure, not released.
    const held = (await offersOf(e, "returner")).find((o) => o.metadata.name === accepted[0]!.metadata.name)!;
    expect(held.status?.conditions?.find((c) => c.type === "Released")?.status).not.toBe("True");
    const metrics = await e.manager!.metrics.registry.getSingleMetricAsString(
      "spillway_failback_checks_total",
    );
    expect(metrics).toMatch(/spillway_failback_checks_total\{provider="azure-eastus",outcome="Accepted"\} 1/);

    const events = await eventReasons("returner");
    expect(events).toMatch(/FailbackAccepted/);
    expect(events).toMatch(/FailedBack/);

    // Running on Azure: the FailingBack condition says it is done.
    const running = await eventually(
      () => getRun(e, "returner"),
      phaseIs("Running"),
      "running on Azure",
      30_000,
    );
    expect(running.status?.conditions?.find((c) => c.type === "FailingBack")).toMatchObject({
      status: "False",
      reason: "FailedBack",
    });
    // Deleted, the run gives its reservation back (and the next test starts with Azure empty).
    await e.client.delete(SpillwayResources.TrainingRun, "returner", "ml-team");
    await eventually(
      () => offersOf(e, "returner"),
      (os) =>
        os.some(
          (o) =>
            o.status?.outcome === "Accepted" &&
            o.status.conditions?.some((c) => c.type === "Released" && c.status === "True"),
        ),
      "the accepted offer's reservation released",
      30_000,
    );
  }, 180_000);
});

describe("failback across an operator restart", () => {
  test("an operator stopped while a run fails back and started again completes the move once", async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 0);
    expect((await e.kubectl(["apply", "-f", "-"], JSON.stringify(failbackRun("bouncer", "120s")))).code).toBe(
      0,
    );
    const onOci = await eventually(() => getRun(e, "bouncer"), phaseIs("Running"), "running on OCI", 60_000);
    expect(onOci.status?.placement?.provider).toBe("oci-ashburn");
    const sim = await ociCluster(onOci);
    const oci = KubeClient.fromKubeconfig(sim.kubeconfig());
    const storeUri = envOf(await oci.get<KubeObject & { spec: any }>(Resources.Job, "bouncer", "ml-team"))
      .SPILLWAY_CHECKPOINT_STORE!;
    const store = await openStore(storeUri, {
      s3: {
        accessKeyId: e.sandbox.s3Storage.accessKeyId,
        secretAccessKey: e.sandbox.s3Storage.secretAccessKey,
      },
    });
    const work = mkdtempSync(join(tmpdir(), "spillway-failback-"));
    try {
      await uploadCheckpoint(store, await trainerCheckpoint(work, 20), checkpointName(20), {
        runUid: onOci.metadata.uid!,
        step: 20,
      });
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
    e.arm.setCapacity("eastus", AZURE_SKU, 2);

    // The moment the failback is under way, the operator stops; a new one (no memory) goes on.
    await eventually(
      () => getRun(e, "bouncer"),
      (r) =>
        r.status?.phase === "Migrating" ||
        (r.status?.conditions?.some((c) => c.type === "FailingBack" && c.status === "True") ?? false) ||
        r.status?.placement?.provider === "azure-eastus",
      "failing back",
      60_000,
    );
    await e.stopOperator();
    await e.startOperator(OPERATOR);

    const moved = await eventually(
      () => getRun(e, "bouncer"),
      (r) => r.status?.placement?.provider === "azure-eastus" && r.status?.phase === "Running",
      "running on Azure",
      60_000,
    );
    expect([moved.status?.attempt, moved.status?.moves, moved.status?.checkpoint?.step]).toEqual([2, 1, 20]);
    const aksEnv = envOf(
      await KubeClient.fromKubeconfig(e.sandbox.aks.kubeconfig()).get<KubeObject & { spec: any }>(
        Resources.Job,
        "bouncer",
        "ml-team",
      ),
    );
    expect(aksEnv.SPILLWAY_RESUME_STEP).toBe("20");
    expect(await oci.tryGet(Resources.Job, "bouncer", "ml-team")).toBeUndefined();
    // One offer for attempt 1, failback checks for attempt 2 of which exactly one Accepted — the
    // placement's — and no second offer for attempt 2.
    const offers = await offersOf(e, "bouncer");
    expect(offers.filter((o) => o.spec.attempt === 1).map((o) => o.status?.outcome)).toEqual(["Declined"]);
    const second = offers.filter((o) => o.spec.attempt === 2);
    expect(second.every((o) => o.spec.purpose === "Failback")).toBe(true);
    expect(second.filter((o) => o.status?.outcome === "Accepted").map((o) => o.metadata.name)).toEqual([
      moved.status?.placement?.offer,
    ]);
    expect(new Set(second.map((o) => o.metadata.name)).size).toBe(moved.status?.failback?.checks);
    await e.client.delete(SpillwayResources.TrainingRun, "bouncer", "ml-team");
    await eventually(
      () => offersOf(e, "bouncer"),
      (os) => os.some((o) => o.status?.conditions?.some((c) => c.type === "Released" && c.status === "True")),
      "the accepted offer's reservation released",
      30_000,
    );
  }, 180_000);
});

// Reliability findings 8 and 9 (docs/reliability.md), in this file to share its sandbox.
describe("placement preconditions and the running run's timer", () => {
  test("a run whose DataSet does not exist waits before any offer or cluster, and goes on once it exists", async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 0);
    const run = trainingRun("data-waiter");
    run.spec.data = { dataset: "late-corpus", mountPath: "/data" };
    expect((await e.kubectl(["apply", "-f", "-"], JSON.stringify(run))).code).toBe(0);
    const waiting = await eventually(
      () => getRun(e, "data-waiter"),
      (r) => r.status?.conditions?.some((c) => c.type === "Placed" && c.reason === "DataSetMissing") ?? false,
      "DataSetMissing",
      30_000,
    );
    expect(waiting.status?.phase).toBe("Pending");
    expect(waiting.status?.conditions?.find((c) => c.type === "Placed")?.message).toMatch(
      /DataSet late-corpus does not exist in ml-team/,
    );
    expect(waiting.status?.placement).toBeUndefined();
    expect(await offersOf(e, "data-waiter")).toEqual([]);
    const clusters = await e.client.list<ProvisionedCluster & KubeObject>(
      SpillwayResources.ProvisionedCluster,
    );
    expect(
      clusters.items.filter(
        (pc) => pc.metadata.labels?.["spillway.dev/created-for-run-uid"] === waiting.metadata.uid,
      ),
    ).toEqual([]);

    // The DataSet appears: the run is offered to the primary at once (its creation enqueues it).
    const ds = exampleOf("DataSet", "pretrain-corpus");
    ds.metadata = { name: "late-corpus", namespace: "ml-team" };
    expect((await e.kubectl(["apply", "-f", "-"], JSON.stringify(ds))).code).toBe(0);
    const offers = await eventually(
      () => offersOf(e, "data-waiter"),
      (os) => os.length === 1,
      "an offer",
      30_000,
    );
    expect(offers.map((o) => o.metadata.name)).toEqual(["data-waiter-a1"]);
    await e.client.delete(SpillwayResources.TrainingRun, "data-waiter", "ml-team");
  }, 90_000);

  test("a run naming an alternative that does not exist says which name is unknown", async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 0);
    const run = trainingRun("typo-alt");
    run.spec.placement = { ...run.spec.placement, alternatives: ["oci-nowhere"] };
    expect((await e.kubectl(["apply", "-f", "-"], JSON.stringify(run))).code).toBe(0);
    const r = await eventually(
      () => getRun(e, "typo-alt"),
      (x) => x.status?.conditions?.some((c) => c.reason === "NoEligibleAlternative") ?? false,
      "NoEligibleAlternative",
      30_000,
    );
    expect(r.status?.conditions?.find((c) => c.type === "Placed")?.message).toMatch(
      /oci-nowhere: CloudProvider not found/,
    );
    await e.client.delete(SpillwayResources.TrainingRun, "typo-alt", "ml-team");
  }, 60_000);

  test("a running run without checkpoints is not reconciled on a poll timer", async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 0);
    const run = trainingRun("quiet");
    run.spec.template.spec.containers[0]!.env = [{ name: SIM_DURATION_ENV, value: "30s" }];
    expect((await e.kubectl(["apply", "-f", "-"], JSON.stringify(run))).code).toBe(0);
    await eventually(() => getRun(e, "quiet"), phaseIs("Running"), "running", 60_000);
    const reconciles = async () => {
      const text = await e.manager!.metrics.registry.getSingleMetricAsString("spillway_reconcile_total");
      return [
        ...text.matchAll(/spillway_reconcile_total\{[^}]*controller="trainingrun"[^}]*\} (\d+)/g),
      ].reduce((sum, m) => sum + Number(m[1]), 0);
    };
    // Let the settling writes of the start pass, then count over 12 poll periods (500 ms each).
    await new Promise((r) => setTimeout(r, 1_000));
    const before = await reconciles();
    await new Promise((r) => setTimeout(r, 6_000));
    // A timer at remotePollMs would have reconciled it about 12 times.
    expect((await reconciles()) - before).toBeLessThanOrEqual(3);
    expect((await getRun(e, "quiet")).status?.phase).toBe("Running");
    await e.client.delete(SpillwayResources.TrainingRun, "quiet", "ml-team");
  }, 90_000);
});
