// The ProvisionedCluster controller against the sandbox API server, with an in-memory cloud
// behind the Provisioner port.
import { afterEach, beforeEach, describe, expect, it } from "@jest/globals";
import type { ProvisionedCluster } from "../../../operator/api/v1alpha1/index.ts";
import {
  FINALIZER,
  kubeconfigSecretName,
  type ProvisionedClusterControllerOptions,
  provisionedClusterController,
} from "../../../operator/controllers/provisionedcluster/index.ts";
import { ProvisionError } from "../../../operator/ports/provisioner.ts";
import type { Controller } from "../../../operator/runtime/controller.ts";
import { type KubeObject, Resources, SpillwayResources } from "../../../operator/runtime/resources.ts";
import { exampleOf } from "../../helpers/examples.ts";
import { Gate, type Harness, MemoryCloud, NAMESPACE, startHarness, waitFor } from "./harness.ts";

type PC = ProvisionedCluster & KubeObject;

let h: Harness;
let cloud: MemoryCloud;
let controller: Controller | undefined;
/** Gates a test holds an operation on; released in teardown so nothing stays blocked. */
const gates: Gate[] = [];

beforeEach(async () => {
  h = await startHarness();
  cloud = new MemoryCloud();
});
afterEach(async () => {
  cloud.upGate?.release();
  for (const g of gates.splice(0)) g.release();
  await controller?.stop(5_000);
  controller = undefined;
  await h.close();
});

function start(opts: Omit<ProvisionedClusterControllerOptions, "provisioner"> = {}): void {
  controller = provisionedClusterController(h.ctx, {
    provisioner: cloud,
    backoff: { baseMs: 20, maxMs: 200, jitter: 0 },
    progressIntervalMs: 0,
    ...opts,
  });
  controller.start();
}

async function provider(idleTTL = "1h"): Promise<void> {
  await h.client.create(Resources.Secret, {
    metadata: { name: "oci-pulumi-config", namespace: NAMESPACE },
    stringData: { "oci.privateKey": "-----BEGIN PRIVATE KEY-----\nSECRETKEYBODY\n-----END PRIVATE KEY-----" },
  } as KubeObject);
  const p = exampleOf("CloudProvider", "oci-ashburn");
  p.spec.cluster.provision.secretConfigRef = { name: "oci-pulumi-config", namespace: NAMESPACE };
  p.spec.cluster.provision.idleTTL = idleTTL;
  await h.client.create(SpillwayResources.CloudProvider, p as KubeObject);
  await waitFor(() => h.ctx.caches.providers.get("oci-ashburn"), "provider in cache");
}

async function cluster(name: string, gpusNodes = 2): Promise<PC> {
  return h.client.create<PC>(SpillwayResources.ProvisionedCluster, {
    apiVersion: "spillway.dev/v1alpha1",
    kind: "ProvisionedCluster",
    metadata: { name },
    spec: {
      provider: "oci-ashburn",
      stackName: name,
      program: "oci",
      region: "us-ashburn-1",
      config: { compartmentId: "ocid1.compartment.oc1..example" },
      nodePools: [{ name: "gpu", shape: "BM.GPU.H100.8", gpuType: "H100", gpusPerNode: 8, nodes: gpusNodes }],
    },
  } as PC);
}

const get = (name: string) => h.client.tryGet<PC>(SpillwayResources.ProvisionedCluster, name);
const condition = (pc: PC | undefined, type: string) => pc?.status?.conditions?.find((c) => c.type === type);

describe("ProvisionedCluster controller", () => {
  it("adds its finalizer, reports progress while provisioning, and ends Ready with the kubeconfig only in a Secret", async () => {
    await provider();
    cloud.upGate = new Gate();
    start();
    await cluster("pc-a");

    const provisioning = await waitFor(async () => {
      const pc = await get("pc-a");
      return pc?.status?.lastOperation?.message?.includes("creating oci:core/vcn:Vcn vcn") ? pc : undefined;
    }, "progress in status");
    expect(provisioning.metadata.finalizers).toContain(FINALIZER);
    expect(provisioning.status?.phase).toBe("Provisioning");
    expect(provisioning.status?.lastOperation).toMatchObject({ type: "Up", result: "InProgress" });
    expect(provisioning.status?.lastOperation?.message).toContain("(0/1 resources)");
    expect(condition(provisioning, "Reconciling")?.status).toBe("True");

    cloud.upGate.release();
    const ready = await waitFor(async () => {
      const pc = await get("pc-a");
      return pc?.status?.phase === "Ready" ? pc : undefined;
    }, "Ready");
    expect(ready.status?.outputs).toEqual({
      clusterId: "ocid1.cluster.oc1.us-ashburn-1.pc-a",
      kubeconfigSecretRef: { name: kubeconfigSecretName("pc-a"), namespace: NAMESPACE, key: "kubeconfig" },
      bucket: "pc-a-data",
      s3Endpoint: "https://ns.compat.objectstorage.us-ashburn-1.oraclecloud.com",
    });
    expect(condition(ready, "Ready")).toMatchObject({ status: "True", reason: "Provisioned" });
    expect(ready.status).toMatchObject({ totalGpus: 16, freeGpus: 16, runs: [] });
    expect(ready.status?.lastOperation).toMatchObject({ type: "Up", result: "Succeeded" });

    const secret = await h.client.get<KubeObject & { data: Record<string, string> }>(
      Resources.Secret,
      kubeconfigSecretName("pc-a"),
      NAMESPACE,
    );
    expect(Buffer.from(secret.data.kubeconfig!, "base64").toString()).toContain("kc-secret-pc-a");
    expect(JSON.stringify(ready)).not.toContain("kc-secret-pc-a");
    // The provider's Secret became secret stack config (`oci.privateKey` → `oci:privateKey`).
    expect(cloud.stacks.get("pc-a")?.req.secretConfig["oci:privateKey"]).toContain("SECRETKEYBODY");
    expect(h.events.filter((e) => e.name === "pc-a").map((e) => e.reason)).toEqual([
      "Provisioning",
      "Provisioned",
    ]);
    expect(JSON.stringify(h.events)).not.toContain("SECRETKEYBODY");
  });

  it("destroys the stack before the object goes, and the kubeconfig Secret with it", async () => {
    await provider();
    start();
    await cluster("pc-b");
    await waitFor(async () => (await get("pc-b"))?.status?.phase === "Ready", "Ready");

    await h.client.delete(SpillwayResources.ProvisionedCluster, "pc-b");
    await waitFor(async () => !(await get("pc-b")), "object gone");
    expect(cloud.stacks.has("pc-b")).toBe(false);
    expect(cloud.count("destroy", "pc-b")).toBe(1);
    expect(await h.client.tryGet(Resources.Secret, kubeconfigSecretName("pc-b"), NAMESPACE)).toBeUndefined();
    expect(h.events.filter((e) => e.name === "pc-b").map((e) => e.reason)).toEqual(
      expect.arrayContaining(["Destroying", "Destroyed"]),
    );
  });

  it("keeps the finalizer while destroy fails, shows it, and retries with backoff until it succeeds", async () => {
    await provider();
    start();
    await cluster("pc-c");
    await waitFor(async () => (await get("pc-c"))?.status?.phase === "Ready", "Ready");
    const gate = new Gate();
    gates.push(gate);
    cloud.destroyFailures = [
      new ProvisionError("ProviderError", "destroy pc-c: 429-TooManyRequests", true),
      new ProvisionError("ProviderError", "destroy pc-c: 401-NotAuthenticated", false),
    ];
    const originalDestroy = cloud.destroy.bind(cloud);
    // The third attempt waits until the test has seen the failures in status.
    cloud.destroy = async (req) => {
      if (cloud.destroyFailures.length === 0) await gate.opened;
      return originalDestroy(req);
    };

    await h.client.delete(SpillwayResources.ProvisionedCluster, "pc-c");
    const failing = await waitFor(async () => {
      const pc = await get("pc-c");
      return (pc?.status?.destroyAttempts ?? 0) >= 2 ? pc : undefined;
    }, "two failed destroys");
    expect(failing.metadata.finalizers).toContain(FINALIZER);
    expect(failing.status?.phase).toBe("Destroying");
    expect(condition(failing, "Ready")).toMatchObject({ status: "False", reason: "DestroyFailed" });
    expect(failing.status?.lastOperation).toMatchObject({ type: "Destroy", result: expect.any(String) });
    expect(h.events.filter((e) => e.reason === "DestroyFailed")).toHaveLength(2);

    gate.release();
    await waitFor(async () => !(await get("pc-c")), "object gone after a successful destroy");
    expect(cloud.stacks.has("pc-c")).toBe(false);
  });

  it("fails at once on a quota error, with the reason, so placement can move on", async () => {
    await provider();
    cloud.upFailures = [
      new ProvisionError("QuotaExceeded", "up pc-d: 400-LimitExceeded, gpu-h100-count", false),
    ];
    start();
    await cluster("pc-d");
    const failed = await waitFor(async () => {
      const pc = await get("pc-d");
      return pc?.status?.phase === "Failed" ? pc : undefined;
    }, "Failed");
    expect(condition(failed, "Ready")).toMatchObject({ status: "False", reason: "QuotaExceeded" });
    expect(condition(failed, "Stalled")).toMatchObject({ status: "True", reason: "QuotaExceeded" });
    expect(failed.status?.lastOperation).toMatchObject({ type: "Up", result: "Failed" });
    expect(cloud.count("up", "pc-d")).toBe(1);
  });

  it("retries transient errors with backoff up to maxUpAttempts, then fails", async () => {
    await provider();
    cloud.alwaysFailUp = new ProvisionError("ProviderError", "up pc-e: 503 ServiceUnavailable", true);
    start({ maxUpAttempts: 3 });
    await cluster("pc-e");
    const failed = await waitFor(async () => {
      const pc = await get("pc-e");
      return pc?.status?.phase === "Failed" ? pc : undefined;
    }, "Failed");
    expect(cloud.count("up", "pc-e")).toBe(3);
    expect(condition(failed, "Ready")?.reason).toBe("ProviderError");
    expect(h.events.filter((e) => e.reason === "ProvisionRetrying")).toHaveLength(2);
  });

  it("after a restart mid-provisioning, clears the stale lock and brings up the same stack (no second cluster)", async () => {
    await provider();
    // The state a killed operator leaves: status says an up is in progress, the stack is locked.
    await cluster("pc-f");
    await h.client.patch(
      SpillwayResources.ProvisionedCluster,
      "pc-f",
      undefined,
      {
        metadata: { finalizers: [FINALIZER] },
      },
      "merge",
    );
    await h.client.patch(
      SpillwayResources.ProvisionedCluster,
      "pc-f",
      undefined,
      {
        status: {
          phase: "Provisioning",
          lastOperation: { type: "Up", startedAt: "2026-11-21T20:00:00Z", result: "InProgress" },
        },
      },
      "merge",
      { subresource: "status" },
    );
    cloud.stacks.set("pc-f", {
      locked: true,
      req: {
        stackName: "pc-f",
        program: "oci",
        provider: "oci-ashburn",
        region: "us-ashburn-1",
        nodePools: [],
        config: {},
        secretConfig: {},
      },
    });
    await waitFor(async () => h.ctx.caches.clusters.get("pc-f")?.status?.phase === "Provisioning", "cache");

    start();
    await waitFor(async () => (await get("pc-f"))?.status?.phase === "Ready", "Ready");
    expect(cloud.calls.filter((c) => c.stack === "pc-f").map((c) => c.op)).toEqual(["cancel", "up"]);
    expect(cloud.stacks.size).toBe(1);
    expect(h.events.map((e) => e.reason)).toContain("StaleLockCleared");
  });

  it("tracks the runs placed on a cluster, and destroys clusters idle longer than idleTTL", async () => {
    await provider("1s");
    // The run is placed on pc-busy before the cluster exists, so pc-busy is never idle while
    // the run lasts, however slow the machine.
    const run = exampleOf("TrainingRun", "llama-pretrain");
    const created = await h.client.create<KubeObject>(SpillwayResources.TrainingRun, run as KubeObject);
    await h.client.patch(
      SpillwayResources.TrainingRun,
      "llama-pretrain",
      "ml-team",
      { status: { phase: "Running", placement: { provider: "oci-ashburn", cluster: "pc-busy" } } },
      "merge",
      { subresource: "status" },
    );
    await waitFor(() => h.ctx.caches.runs.get("ml-team/llama-pretrain")?.status?.placement, "run in cache");
    start();
    await cluster("pc-busy");
    await cluster("pc-idle");
    await waitFor(async () => (await get("pc-busy"))?.status?.phase === "Ready", "busy Ready");

    const busy = await waitFor(async () => {
      const pc = await get("pc-busy");
      return pc?.status?.runs?.length === 1 ? pc : undefined;
    }, "run tracked");
    expect(busy.status?.runs).toEqual([
      { namespace: "ml-team", name: "llama-pretrain", uid: created.metadata.uid, gpus: 16 },
    ]);
    expect(busy.status?.freeGpus).toBe(0);
    expect(busy.status?.idleSince).toBeUndefined();

    await waitFor(async () => !(await get("pc-idle")), "idle cluster destroyed");
    expect(cloud.stacks.has("pc-idle")).toBe(false);
    expect(h.events.filter((e) => e.name === "pc-idle").map((e) => e.reason)).toContain("IdleTimeout");
    expect((await get("pc-busy"))?.status?.phase).toBe("Ready");

    // The run finishes: the cluster becomes idle and goes too.
    await h.client.patch(
      SpillwayResources.TrainingRun,
      "llama-pretrain",
      "ml-team",
      { status: { phase: "Succeeded" } },
      "merge",
      { subresource: "status" },
    );
    await waitFor(async () => !(await get("pc-busy")), "finished cluster destroyed");
    expect(cloud.stacks.size).toBe(0);
  });

  it("writes a deleted kubeconfig Secret again from the stack's outputs, without another up", async () => {
    await provider();
    start();
    await cluster("pc-g");
    await waitFor(async () => (await get("pc-g"))?.status?.phase === "Ready", "Ready");
    await h.client.delete(Resources.Secret, kubeconfigSecretName("pc-g"), NAMESPACE);
    const secret = await waitFor(
      () =>
        h.client.tryGet<KubeObject & { data: Record<string, string> }>(
          Resources.Secret,
          kubeconfigSecretName("pc-g"),
          NAMESPACE,
        ),
      "Secret written again",
    );
    expect(Buffer.from(secret.data.kubeconfig!, "base64").toString()).toContain("kc-secret-pc-g");
    expect(cloud.count("up", "pc-g")).toBe(1);
    expect(cloud.count("outputs", "pc-g")).toBeGreaterThanOrEqual(1);
  });

  it("waits with a condition while its CloudProvider does not exist, and provisions once it does", async () => {
    start();
    await cluster("pc-h");
    const waiting = await waitFor(async () => {
      const pc = await get("pc-h");
      return condition(pc, "Ready")?.reason === "ProviderUnavailable" ? pc : undefined;
    }, "ProviderUnavailable");
    expect(waiting.status?.phase).toBe("Pending");
    expect(condition(waiting, "Ready")?.message).toBe("CloudProvider oci-ashburn does not exist");
    expect(cloud.calls).toHaveLength(0);
    await provider();
    await waitFor(async () => (await get("pc-h"))?.status?.phase === "Ready", "Ready");
  });

  it("does not retry a failed up before its backoff is due, whatever events arrive meanwhile", async () => {
    await provider();
    cloud.alwaysFailUp = new ProvisionError("ProviderError", "up pc-i: 503 ServiceUnavailable", true);
    start({ backoff: { baseMs: 3_600_000, maxMs: 3_600_000, jitter: 0 } });
    await cluster("pc-i");
    await waitFor(
      async () => condition(await get("pc-i"), "Ready")?.reason === "ProviderError",
      "first failure",
    );
    const reconciles = async () =>
      (await h.ctx.metrics.reconcileTotal.get()).values
        .filter((v) => v.labels.controller === "provisionedcluster")
        .reduce((sum, v) => sum + v.value, 0);
    for (let i = 0; i < 3; i++) {
      const before = await reconciles();
      await h.client.patch(SpillwayResources.ProvisionedCluster, "pc-i", undefined, {
        metadata: { labels: { poke: String(i) } },
      });
      await waitFor(async () => (await reconciles()) > before, `reconcile after poke ${i}`);
    }
    expect(cloud.count("up", "pc-i")).toBe(1);
    expect((await get("pc-i"))?.status?.phase).toBe("Provisioning");
  });
});
