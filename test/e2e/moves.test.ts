/**
 * A run whose cluster is lost moves: a new placement attempt, offered to the primary first
 * like every attempt, placed, dispatched, and finished — counted in `status.moves` with an
 * Event. (Placement step 8 of the spec; the checkpoint side is in test/checkpoints.)
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
import {
  AZURE_SKU,
  type E2E,
  eventually,
  getRun,
  offersOf,
  phaseIs,
  remoteJobs,
  startE2E,
  testScenario,
  trainingRun,
} from "./harness.ts";

let e: E2E;

beforeAll(async () => {
  // Lost clusters still count against maxClusters until they are destroyed: room for two.
  e = await startE2E(testScenario((s) => (s.clouds.oci.maxClusters = 4)));
  await e.startOperator({
    settings: { clusterLostTimeoutMs: 2_000, remotePollMs: 500, reofferBaseMs: 60_000 },
  });
}, 120_000);

afterAll(async () => {
  await e?.stop();
}, 60_000);

describe("moves", () => {
  test("a run on OCI whose cluster is lost is offered to Azure first again, moves there and finishes", async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 0);
    const run = trainingRun("mover");
    run.spec.template.spec.containers[0]!.env = [{ name: SIM_DURATION_ENV, value: "6s" }];
    const applied = await e.kubectl(["apply", "-f", "-"], JSON.stringify(run));
    expect(applied.code).toBe(0);
    const onOci = await eventually(() => getRun(e, "mover"), phaseIs("Running"), "running on OCI", 60_000);
    expect(onOci.status?.placement?.provider).toBe("oci-ashburn");
    const stack = onOci.status!.placement!.cluster!;
    const pc = await e.client.get<ProvisionedCluster & KubeObject>(
      SpillwayResources.ProvisionedCluster,
      stack,
    );
    const cluster = e.sandbox.provisioner.cluster(pc.spec.stackName);
    expect(cluster).toBeDefined();

    // Azure has room now; the OCI cluster goes dark.
    e.arm.setCapacity("eastus", AZURE_SKU, 2);
    await cluster!.stop();

    const moved = await eventually(
      () => getRun(e, "mover"),
      (r) => (r.status?.moves ?? 0) >= 1 && r.status?.placement?.provider === "azure-eastus",
      "moved to Azure",
      60_000,
    );
    expect(moved.status?.attempt).toBe(2);
    expect(moved.status?.placement).toMatchObject({ reason: "PrimaryAccepted", attempt: 2 });
    const offers = await offersOf(e, "mover");
    expect(offers.map((o) => [o.spec.attempt, o.status?.outcome])).toEqual([
      [1, "Declined"],
      [2, "Accepted"],
    ]);
    const done = await eventually(() => getRun(e, "mover"), phaseIs("Succeeded", "Failed"), "finish", 60_000);
    expect(done.status?.phase).toBe("Succeeded");
    expect(done.status?.moves).toBe(1);
    expect((await remoteJobs(e.sandbox.aks.kubeconfig())).some((j) => j.metadata.name === "mover")).toBe(
      false,
    );
    const events = await e.kubectl([
      "get",
      "events",
      "-n",
      "ml-team",
      "--field-selector",
      "involvedObject.name=mover",
    ]);
    expect(events.stdout).toMatch(/ClusterLost/);
  }, 180_000);
  test("when Azure declines again, the run moves to a new OCI cluster, never back to the lost one", async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 0);
    const run = trainingRun("wanderer");
    run.spec.template.spec.containers[0]!.env = [{ name: SIM_DURATION_ENV, value: "4s" }];
    expect((await e.kubectl(["apply", "-f", "-"], JSON.stringify(run))).code).toBe(0);
    const first = await eventually(() => getRun(e, "wanderer"), phaseIs("Running"), "running on OCI", 60_000);
    const lost = first.status!.placement!.cluster!;
    const pc = await e.client.get<ProvisionedCluster & KubeObject>(
      SpillwayResources.ProvisionedCluster,
      lost,
    );
    await e.sandbox.provisioner.cluster(pc.spec.stackName)!.stop();
    const done = await eventually(
      () => getRun(e, "wanderer"),
      phaseIs("Succeeded", "Failed"),
      "finish",
      90_000,
    );
    expect(done.status?.phase).toBe("Succeeded");
    expect(done.status?.moves).toBe(1);
    expect(done.status?.attempt).toBe(2);
    expect(done.status?.placement?.provider).toBe("oci-ashburn");
    expect(done.status?.placement?.cluster).not.toBe(lost);
    const offers = await offersOf(e, "wanderer");
    expect(offers.map((o) => [o.spec.attempt, o.status?.outcome, o.status?.reason])).toEqual([
      [1, "Declined", "NoCapacity"],
      [2, "Declined", "NoCapacity"],
    ]);
  }, 180_000);

  test("a moved run resumes from its latest committed checkpoint, replicated to the new cloud first", async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 0);
    const run = trainingRun("resumer");
    run.spec.checkpoints = { keep: 3 };
    run.spec.template.spec.containers[0]!.env = [{ name: SIM_DURATION_ENV, value: "30s" }];
    expect((await e.kubectl(["apply", "-f", "-"], JSON.stringify(run))).code).toBe(0);
    const onOci = await eventually(() => getRun(e, "resumer"), phaseIs("Running"), "running on OCI", 60_000);
    expect(onOci.status?.placement?.provider).toBe("oci-ashburn");

    // The Job on OCI was told where to write, with the OCI store's credentials only.
    const ociCluster = onOci.status!.placement!.cluster!;
    const pc = await e.client.get<ProvisionedCluster & KubeObject>(
      SpillwayResources.ProvisionedCluster,
      ociCluster,
    );
    const sim = e.sandbox.provisioner.cluster(pc.spec.stackName)!;
    const remote = KubeClient.fromKubeconfig(sim.kubeconfig());
    const job = await remote.get<KubeObject & { spec: any }>(Resources.Job, "resumer", "ml-team");
    const trainer = job.spec.template.spec.containers[0];
    const env = Object.fromEntries(
      trainer.env.map((x: { name: string; value: string }) => [x.name, x.value]),
    );
    expect(env.SPILLWAY_CHECKPOINT_STORE).toMatch(/^s3:\/\/.*spillway\/runs\//);
    expect(env.SPILLWAY_RESUME_STEP).toBeUndefined();
    // The store credentials reach only Spillway's own checkpoint containers (the restore
    // init container and the agent sidecar), never the user's trainer container.
    expect(trainer.envFrom ?? []).toEqual([]);
    const agent = job.spec.template.spec.initContainers.find(
      (c: { name: string }) => c.name === "spillway-checkpoint-agent",
    );
    expect(agent.restartPolicy).toBe("Always");
    const secretName = agent.envFrom[0].secretRef.name;
    const secret = await remote.get<KubeObject & { data: Record<string, string> }>(
      Resources.Secret,
      secretName,
      "ml-team",
    );
    expect(Object.keys(secret.data).sort()).toEqual(["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]);

    // The trainer commits step 40 there (as the checkpoint agent would), then OCI goes dark.
    const store = await openStore(env.SPILLWAY_CHECKPOINT_STORE, {
      s3: {
        accessKeyId: e.sandbox.s3Storage.accessKeyId,
        secretAccessKey: e.sandbox.s3Storage.secretAccessKey,
      },
    });
    const work = mkdtempSync(join(tmpdir(), "spillway-ckpt-"));
    const dir = await trainerCheckpoint(work, 40);
    await uploadCheckpoint(store, dir, checkpointName(40), { runUid: onOci.metadata.uid!, step: 40 });
    e.arm.setCapacity("eastus", AZURE_SKU, 2);
    await sim.stop();

    const moved = await eventually(
      () => getRun(e, "resumer"),
      (r) => r.status?.placement?.provider === "azure-eastus" && r.status?.remote?.job !== undefined,
      "moved to Azure and dispatched",
      90_000,
    );
    expect(moved.status?.moves).toBe(1);
    expect(moved.status?.checkpoint).toMatchObject({ step: 40 });
    expect(moved.status?.checkpoint?.replicatedTo).toEqual(expect.arrayContaining(["azure-eastus"]));
    const aks = KubeClient.fromKubeconfig(e.sandbox.aks.kubeconfig());
    const onAks = await aks.get<KubeObject & { spec: any }>(Resources.Job, "resumer", "ml-team");
    const aksEnv = Object.fromEntries(
      onAks.spec.template.spec.containers[0].env.map((x: { name: string; value: string }) => [
        x.name,
        x.value,
      ]),
    );
    expect(aksEnv.SPILLWAY_RESUME_STEP).toBe("40");
    expect(aksEnv.SPILLWAY_CHECKPOINT_STORE).toMatch(/^azblob:\/\//);
    rmSync(work, { recursive: true, force: true });
  }, 180_000);
});
