/**
 * A run whose trainer really runs, in the pod shape of a real cluster: the sandbox's trainer
 * stand-in (`spillway checkpoint trainer`) beside Spillway's `spillway-restore` init container
 * and `spillway-checkpoint-agent` native sidecar, all executed by the simulated kubelet. It
 * trains on OCI while Azure has no capacity,
 * commits real checkpoints to OCI's store, loses its cluster (its process SIGKILLed), is
 * offered to Azure first again, accepted, restored from the replicated checkpoint there and
 * trains on from that step to the last. Verified from the stores' manifests and the
 * trainer's own output, not only from status.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import type { ProvisionedCluster } from "../../operator/api/v1alpha1/index.ts";
import { runPrefixFor } from "../../operator/checkpoints/index.ts";
import { checkpointUri } from "../../operator/checkpoints/planner.ts";
import { latestCommitted, listCheckpoints } from "../../operator/checkpoints/repository.ts";
import { openStore } from "../../operator/dataplane/store.ts";
import { KubeClient } from "../../operator/runtime/client.ts";
import { type KubeObject, Resources, SpillwayResources } from "../../operator/runtime/resources.ts";
import type { SimulatedCluster } from "../../operator/sandbox/cluster/index.ts";
import { podEvents, standInContainer } from "../../operator/sandbox/trainer/standin.ts";
import {
  AZURE_SKU,
  type E2E,
  eventually,
  getRun,
  offersOf,
  phaseIs,
  startE2E,
  testScenario,
  trainingRun,
} from "./harness.ts";

const STEPS = 60;
const EVERY = 5;

let e: E2E;

beforeAll(async () => {
  e = await startE2E(testScenario((s) => (s.clouds.oci.maxClusters = 4)));
  await e.startOperator({
    settings: { clusterLostTimeoutMs: 2_000, remotePollMs: 500, reofferBaseMs: 60_000 },
  });
}, 120_000);

afterAll(async () => {
  await e?.stop();
}, 60_000);

type Container = {
  name: string;
  env: Array<{ name: string; value?: string }>;
  envFrom?: unknown[];
  restartPolicy?: string;
};
type JobWithEnv = KubeObject & {
  spec: { template: { spec: { containers: Container[]; initContainers?: Container[] } } };
};

async function remoteJob(kubeconfig: string, name: string): Promise<JobWithEnv> {
  return KubeClient.fromKubeconfig(kubeconfig).get<JobWithEnv>(Resources.Job, name, "ml-team");
}

function envOf(c: Container): Record<string, string> {
  return Object.fromEntries(c.env.map((x) => [x.name, x.value ?? ""]));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("a trainer that really runs", () => {
  test("fails over from OCI to Azure, resuming from its last committed checkpoint and finishing every step", async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 0);
    const run = trainingRun("stepper");
    run.spec.checkpoints = { keep: 20 };
    run.spec.template.spec.containers = [
      // Every local checkpoint stays until the end, so the agent commits each one however
      // loaded the machine is (the test checks every step in the store).
      standInContainer({
        steps: STEPS,
        every: EVERY,
        stepDelay: "120ms",
        tensorBytes: 4096,
        keepLocal: STEPS / EVERY,
      }),
    ];
    expect((await e.kubectl(["apply", "-f", "-"], JSON.stringify(run))).code).toBe(0);

    const onOci = await eventually(() => getRun(e, "stepper"), phaseIs("Running"), "running on OCI", 60_000);
    expect(onOci.status?.placement?.provider).toBe("oci-ashburn");
    const uid = onOci.metadata.uid!;
    const pc = await e.client.get<ProvisionedCluster & KubeObject>(
      SpillwayResources.ProvisionedCluster,
      onOci.status!.placement!.cluster!,
    );
    const oci: SimulatedCluster = e.sandbox.provisioner.cluster(pc.spec.stackName)!;
    const job = await remoteJob(oci.kubeconfig(), "stepper");
    // Spillway's containers hold the store credentials; the trainer does not.
    const pod = job.spec.template.spec;
    expect(pod.initContainers?.map((c) => [c.name, c.restartPolicy])).toEqual([
      ["spillway-restore", undefined],
      ["spillway-checkpoint-agent", "Always"],
    ]);
    expect(pod.initContainers?.every((c) => c.envFrom?.length === 1)).toBe(true);
    expect(pod.containers[0]!.envFrom).toBeUndefined();
    const ociEnv = envOf(pod.containers[0]!);
    const s3 = {
      s3: {
        accessKeyId: e.sandbox.s3Storage.accessKeyId,
        secretAccessKey: e.sandbox.s3Storage.secretAccessKey,
      },
    };
    const azure = { azure: { connectionString: e.sandbox.azureStorage.connectionString } };
    const store = (u: string) => openStore(u, u.startsWith("s3://") ? s3 : azure);
    const ociStore = ociEnv.SPILLWAY_CHECKPOINT_STORE!;
    expect(ociStore).toMatch(/^s3:\/\//);

    // The trainer commits at least one checkpoint to OCI's store; then OCI is lost.
    await eventually(
      async () => latestCommitted(await store(ociStore)),
      (c) => c !== undefined,
      "a commit on OCI",
      60_000,
    );
    // The agent and the trainer run (the restore has exited).
    const pids = oci.processIds();
    expect(pids.length).toBe(2);
    e.arm.setCapacity("eastus", AZURE_SKU, 2);
    await oci.stop();
    for (const pid of pids) expect(alive(pid)).toBe(false);
    const lastOnOci = (await latestCommitted(await store(ociStore)))!;
    expect(lastOnOci.runUid).toBe(uid);
    expect(lastOnOci.step % EVERY).toBe(0);
    expect(lastOnOci.step).toBeLessThan(STEPS);
    const ociRuns = oci.containerRuns("ml-team");
    const ociTrainer = ociRuns.find((r) => r.container === "trainer")!;
    expect(ociTrainer.exit?.exitCode).toBe(137);
    expect(ociRuns.find((r) => r.container === "spillway-checkpoint-agent")?.exit?.exitCode).toBe(137);
    const ociEvents = podEvents(ociRuns, ociTrainer.uid);
    expect(ociEvents[0]).toEqual({ event: "fresh", rejected: [] });

    // Offered to Azure first again, accepted, dispatched with the step replicated there.
    const done = await eventually(
      () => getRun(e, "stepper"),
      phaseIs("Succeeded", "Failed"),
      "the run to finish on Azure",
      90_000,
    );
    expect(done.status?.phase).toBe("Succeeded");
    expect(done.status?.placement).toMatchObject({ provider: "azure-eastus", reason: "PrimaryAccepted" });
    expect(done.status?.moves).toBe(1);
    const offers = await offersOf(e, "stepper");
    expect(offers.map((o) => [o.spec.attempt, o.status?.outcome])).toEqual([
      [1, "Declined"],
      [2, "Accepted"],
    ]);
    const events = await e.kubectl([
      "get",
      "events",
      "-n",
      "ml-team",
      "--field-selector",
      "involvedObject.name=stepper",
    ]);
    expect(events.stdout).toContain(`resuming from step ${lastOnOci.step}`);

    // On Azure the trainer restored exactly that checkpoint and trained on from it.
    const aks = e.sandbox.aks.cluster;
    const azureRuns = aks.containerRuns("ml-team");
    const azureRestore = azureRuns.find((r) => r.logs.includes('"event":"restored"'))!;
    expect(azureRestore.container).toBe("spillway-restore");
    const podRuns = azureRuns.filter((r) => r.uid === azureRestore.uid);
    // Each container exited 0: the agent after the trainer, once it had drained.
    expect(podRuns.map((r) => [r.container, r.exit?.exitCode]).sort()).toEqual([
      ["spillway-checkpoint-agent", 0],
      ["spillway-restore", 0],
      ["trainer", 0],
    ]);
    const azureEvents = podEvents(azureRuns, azureRestore.uid);
    expect(azureEvents[0]).toMatchObject({ event: "restored", step: lastOnOci.step, behindExpected: false });
    const trained = azureEvents.filter((x) => x.event === "checkpoint").map((x) => x.step);
    expect(trained[0]).toBe(lastOnOci.step + EVERY);
    expect(trained.at(-1)).toBe(STEPS);
    expect(azureEvents.find((x) => x.event === "finished")).toEqual({
      event: "finished",
      step: STEPS,
      resumedFrom: lastOnOci.step,
    });
    // The agent committed every checkpoint the trainer wrote there, the last one included.
    const committedOnAzure = azureEvents.filter((x) => x.event === "committed").map((x) => x.step);
    expect(committedOnAzure).toEqual(trained);

    // The manifests in Azure's store: the replicated step (same digest as on OCI), then
    // every later checkpoint up to the last step, all of this run.
    const azureStore = checkpointUri({
      kind: "azblob",
      account: e.sandbox.azureStorage.accountName,
      container: e.sandbox.azureStorage.container,
      prefix: runPrefixFor(uid),
      endpoint: e.sandbox.azureStorage.blobEndpoint,
    });
    const steps = (await listCheckpoints(await store(azureStore))).committed.map((c) => c.step);
    expect(steps[0]).toBe(STEPS);
    expect([...steps].sort((a, b) => a - b)).toEqual(
      Array.from({ length: (STEPS - lastOnOci.step) / EVERY + 1 }, (_, i) => lastOnOci.step + i * EVERY),
    );
    const last = await latestCommitted(await store(azureStore));
    expect(last).toMatchObject({ step: STEPS, runUid: uid });

    // Nothing is left running.
    await eventually(
      () => aks.processIds(),
      (p) => p.length === 0,
      "no process left on AKS",
    );
  }, 180_000);

  test("stopping the sandbox while a trainer runs leaves no process behind", async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 2);
    const run = trainingRun("lingerer");
    run.spec.checkpoints = { keep: 3 };
    run.spec.template.spec.containers = [standInContainer({ steps: 100_000, every: 5, stepDelay: "100ms" })];
    expect((await e.kubectl(["apply", "-f", "-"], JSON.stringify(run))).code).toBe(0);
    const aks = e.sandbox.aks.cluster;
    const pids = await eventually(
      () => aks.processIds(),
      (p) => p.length === 2,
      "the trainer and its agent on AKS",
      60_000,
    );
    expect(pids.every(alive)).toBe(true);
    await e.stop();
    expect(pids.some(alive)).toBe(false);
    expect(aks.processIds()).toEqual([]);
  }, 120_000);
});
