/**
 * A simulated cluster (sandbox API server + kubelet stand-in) behaves like a small GPU cluster
 * to a client: Indexed Jobs get one pod per completion index, pods are scheduled onto free
 * GPUs and move Pending → Running → Succeeded/Failed, deleting a Job removes its pods.
 * Everything is observed through @kubernetes/client-node, as the operator sees it.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BatchV1Api, CoreV1Api, type V1Job, type V1Pod } from "@kubernetes/client-node";
import { SimulatedCluster } from "../../../operator/sandbox/cluster/index.ts";

const GPU = "nvidia.com/gpu";
let dir: string;
let cluster: SimulatedCluster;
let core: CoreV1Api;
let batch: BatchV1Api;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "spillway-simcluster-"));
  cluster = await SimulatedCluster.start({
    name: "oke",
    pools: [{ name: "gpu", nodes: 2, gpusPerNode: 8, gpuType: "H100", instanceType: "BM.GPU.H100.8" }],
    region: "us-ashburn-1",
    podStartupMs: 50,
    jobDurationMs: 200,
    stateDir: join(dir, "oke"),
  });
  const kc = cluster.kubeConfig();
  core = kc.makeApiClient(CoreV1Api);
  batch = kc.makeApiClient(BatchV1Api);
});

afterAll(async () => {
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function namespace(name: string): Promise<string> {
  await core.createNamespace({ body: { metadata: { name } } });
  return name;
}

function gpuJob(
  name: string,
  opts: { pods: number; gpus: number; duration?: string; exitCode?: number; backoffLimit?: number },
): V1Job {
  const annotations: Record<string, string> = {};
  if (opts.duration) annotations["sim.spillway.dev/duration"] = opts.duration;
  if (opts.exitCode !== undefined) annotations["sim.spillway.dev/exit-code"] = String(opts.exitCode);
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: { name },
    spec: {
      completions: opts.pods,
      parallelism: opts.pods,
      completionMode: "Indexed",
      backoffLimit: opts.backoffLimit ?? 0,
      template: {
        metadata: { annotations },
        spec: {
          restartPolicy: "Never",
          containers: [
            {
              name: "trainer",
              image: "trainer:1",
              resources: { limits: { [GPU]: String(opts.gpus) }, requests: { [GPU]: String(opts.gpus) } },
            },
          ],
        },
      },
    },
  };
}

async function podsOf(ns: string, job: string): Promise<V1Pod[]> {
  return (
    await core.listNamespacedPod({ namespace: ns, labelSelector: `batch.kubernetes.io/job-name=${job}` })
  ).items;
}

/** Polls until `check` returns a value (not undefined); fails after `tries` kubelet passes. */
async function eventually<T>(check: () => Promise<T | undefined>, what: string, tries = 100): Promise<T> {
  for (let i = 0; i < tries; i++) {
    const v = await check();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function jobCondition(job: V1Job, type: string): string | undefined {
  return job.status?.conditions?.find((c) => c.type === type)?.status;
}

describe("SimulatedCluster", () => {
  it("registers its GPU nodes with capacity, labels and Ready", async () => {
    const nodes = (await core.listNode()).items;
    expect(nodes.map((n) => n.metadata?.name).sort()).toEqual(["oke-gpu-0", "oke-gpu-1"]);
    for (const n of nodes) {
      expect(n.status?.allocatable?.[GPU]).toBe("8");
      expect(n.metadata?.labels?.["nvidia.com/gpu.product"]).toBe("H100");
      expect(n.metadata?.labels?.["node.kubernetes.io/instance-type"]).toBe("BM.GPU.H100.8");
      expect(n.status?.conditions?.find((c) => c.type === "Ready")?.status).toBe("True");
    }
    expect(await cluster.gpus()).toEqual({ total: 16, free: 16 });
  });

  it("runs an Indexed Job of 2 pods × 8 GPUs to Complete, one pod per index on distinct nodes", async () => {
    const ns = await namespace("complete");
    await batch.createNamespacedJob({ namespace: ns, body: gpuJob("train", { pods: 2, gpus: 8 }) });

    const done = await eventually(async () => {
      const job = await batch.readNamespacedJob({ name: "train", namespace: ns });
      return jobCondition(job, "Complete") === "True" ? job : undefined;
    }, "the Job to complete");
    expect(done.status?.succeeded).toBe(2);
    expect(done.status?.active).toBe(0);
    expect(done.status?.completedIndexes).toBe("0-1");
    expect(done.status?.completionTime).toBeDefined();
    expect(jobCondition(done, "Failed")).toBeUndefined();

    const pods = await podsOf(ns, "train");
    expect(pods.map((p) => p.metadata?.labels?.["batch.kubernetes.io/job-completion-index"]).sort()).toEqual([
      "0",
      "1",
    ]);
    expect(pods.every((p) => p.status?.phase === "Succeeded")).toBe(true);
    expect(new Set(pods.map((p) => p.spec?.nodeName)).size).toBe(2);
    const env = pods[0]!.spec!.containers[0]!.env ?? [];
    expect(env.some((e) => e.name === "JOB_COMPLETION_INDEX")).toBe(true);
    expect(await cluster.gpus()).toEqual({ total: 16, free: 16 });
  });

  it("keeps a pod that fits on no node Pending and Unschedulable, and the Job active", async () => {
    const ns = await namespace("nofit");
    await batch.createNamespacedJob({ namespace: ns, body: gpuJob("huge", { pods: 1, gpus: 9 }) });
    const pod = await eventually(async () => {
      const [p] = await podsOf(ns, "huge");
      const cond = p?.status?.conditions?.find((c) => c.type === "PodScheduled");
      return cond?.status === "False" ? p : undefined;
    }, "the pod to be marked unschedulable");
    expect(pod.status?.conditions?.find((c) => c.type === "PodScheduled")?.reason).toBe("Unschedulable");

    // More passes change nothing: it stays Pending, unbound, and the Job neither completes nor fails.
    await cluster.settle();
    await cluster.settle();
    const [again] = await podsOf(ns, "huge");
    expect(again?.status?.phase).toBe("Pending");
    expect(again?.spec?.nodeName).toBeUndefined();
    const job = await batch.readNamespacedJob({ name: "huge", namespace: ns });
    expect(job.status?.active).toBe(1);
    expect(job.status?.conditions ?? []).toEqual([]);
    await batch.deleteNamespacedJob({ name: "huge", namespace: ns, propagationPolicy: "Background" });
  });

  it("accounts free GPUs while pods run, and deleting the Job removes its pods and frees them", async () => {
    const ns = await namespace("delete");
    await batch.createNamespacedJob({
      namespace: ns,
      body: gpuJob("long", { pods: 1, gpus: 8, duration: "1h" }),
    });
    await eventually(async () => {
      const [p] = await podsOf(ns, "long");
      return p?.status?.phase === "Running" ? p : undefined;
    }, "the pod to run");
    expect(await cluster.gpus()).toEqual({ total: 16, free: 8 });
    const job = await batch.readNamespacedJob({ name: "long", namespace: ns });
    expect(job.status?.active).toBe(1);
    expect(job.status?.ready).toBe(1);

    await batch.deleteNamespacedJob({ name: "long", namespace: ns, propagationPolicy: "Background" });
    await eventually(
      async () => ((await podsOf(ns, "long")).length === 0 ? true : undefined),
      "the pods to go",
    );
    expect(await cluster.gpus()).toEqual({ total: 16, free: 16 });
  });

  it("fails a Job whose pod exits non-zero once the backoff limit is reached", async () => {
    const ns = await namespace("failing");
    await batch.createNamespacedJob({
      namespace: ns,
      body: gpuJob("crash", { pods: 1, gpus: 8, exitCode: 3, backoffLimit: 0 }),
    });
    const failed = await eventually(async () => {
      const job = await batch.readNamespacedJob({ name: "crash", namespace: ns });
      return jobCondition(job, "Failed") === "True" ? job : undefined;
    }, "the Job to fail");
    expect(failed.status?.failed).toBe(1);
    expect(failed.status?.conditions?.find((c) => c.type === "Failed")?.reason).toBe("BackoffLimitExceeded");
    const [pod] = await podsOf(ns, "crash");
    expect(pod?.status?.containerStatuses?.[0]?.state?.terminated?.exitCode).toBe(3);
  });

  it("fails the pods of a lost node (NodeLost) and reschedules the index on a Ready node", async () => {
    const ns = await namespace("nodelost");
    await batch.createNamespacedJob({
      namespace: ns,
      body: gpuJob("resilient", { pods: 1, gpus: 8, duration: "1h", backoffLimit: 3 }),
    });
    const first = await eventually(async () => {
      const [p] = await podsOf(ns, "resilient");
      return p?.status?.phase === "Running" ? p : undefined;
    }, "the pod to run");
    const lostNode = first.spec!.nodeName!;

    await cluster.setNodeReady(lostNode, false);
    const replacement = await eventually(async () => {
      const pods = await podsOf(ns, "resilient");
      return pods.find((p) => p.metadata?.uid !== first.metadata?.uid && p.status?.phase === "Running");
    }, "a replacement pod to run");
    expect(replacement.spec?.nodeName).not.toBe(lostNode);
    expect(replacement.metadata?.labels?.["batch.kubernetes.io/job-completion-index"]).toBe("0");
    const lost = (await podsOf(ns, "resilient")).find((p) => p.metadata?.uid === first.metadata?.uid);
    expect(lost?.status?.phase).toBe("Failed");
    expect(lost?.status?.reason).toBe("NodeLost");
    expect(await cluster.gpus()).toEqual({ total: 8, free: 0 });
    const job = await batch.readNamespacedJob({ name: "resilient", namespace: ns });
    expect(job.status?.failed).toBe(1);
    expect(job.status?.active).toBe(1);

    await cluster.setNodeReady(lostNode, true);
    expect(await cluster.gpus()).toEqual({ total: 16, free: 8 });
    await batch.deleteNamespacedJob({ name: "resilient", namespace: ns, propagationPolicy: "Background" });
    await eventually(
      async () => ((await podsOf(ns, "resilient")).length === 0 ? true : undefined),
      "the pods to go",
    );
  });
});
