/**
 * Init containers and native sidecars in the simulated kubelet, as Kubernetes runs them: the
 * regular init containers one after another (each must exit 0), sidecars (`restartPolicy:
 * Always`) started before the main containers and kept beside them, SIGTERM to the sidecars
 * once every main container has exited (the pod's phase follows the main containers only),
 * an init failure failing the pod, and a deleted pod's trainer stopped before its checkpoint
 * agent, which drains. The containers are Spillway's own: restore, agent, trainer stand-in.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BatchV1Api, CoreV1Api, type V1Container, type V1Job, type V1Pod } from "@kubernetes/client-node";
import { listCheckpoints } from "../../../operator/checkpoints/repository.ts";
import { openStore } from "../../../operator/dataplane/store.ts";
import {
  type ContainerRun,
  SIM_DURATION_ENV,
  SimulatedCluster,
} from "../../../operator/sandbox/cluster/index.ts";
import { parseWorkloadEvents } from "../../../operator/sandbox/trainer/standin.ts";

const GPU = "nvidia.com/gpu";
let dir: string;
let cluster: SimulatedCluster;
let core: CoreV1Api;
let batch: BatchV1Api;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "spillway-kubelet-init-"));
  cluster = await SimulatedCluster.start({
    name: "init",
    pools: [{ name: "gpu", nodes: 1, gpusPerNode: 8, gpuType: "H100" }],
    podStartupMs: 20,
    jobDurationMs: 200,
  });
  const kc = cluster.kubeConfig();
  core = kc.makeApiClient(CoreV1Api);
  batch = kc.makeApiClient(BatchV1Api);
}, 30_000);

afterAll(async () => {
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function eventually<T>(check: () => Promise<T | undefined>, what: string, ms = 40_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const IMAGE = "ghcr.io/spillway/spillway:dev";
const mount = [{ name: "checkpoints", mountPath: "/checkpoints" }];

function contract(store: string): V1Container["env"] {
  return [
    { name: "SPILLWAY_CHECKPOINT_DIR", value: "/checkpoints" },
    { name: "SPILLWAY_CHECKPOINT_STORE", value: store },
    { name: "SPILLWAY_RUN_UID", value: "run-1" },
    { name: "SPILLWAY_NNODES", value: "1" },
  ];
}

function restore(store: string): V1Container {
  return {
    name: "spillway-restore",
    image: IMAGE,
    command: ["spillway", "checkpoint", "restore"],
    args: ["--events"],
    env: contract(store),
    volumeMounts: mount,
  };
}

function agent(store: string): V1Container {
  return {
    name: "spillway-checkpoint-agent",
    image: IMAGE,
    command: ["spillway", "checkpoint", "agent"],
    args: ["--events"],
    restartPolicy: "Always",
    env: contract(store),
    volumeMounts: mount,
  };
}

function trainer(store: string, steps: number, delay = "0ms"): V1Container {
  return {
    name: "trainer",
    image: IMAGE,
    command: ["spillway", "checkpoint", "trainer"],
    args: ["--steps", String(steps), "--every", "2", "--step-delay", delay, "--events"],
    env: contract(store),
    volumeMounts: mount,
    resources: { limits: { [GPU]: "8" }, requests: { [GPU]: "8" } },
  };
}

function job(name: string, initContainers: V1Container[], containers: V1Container[]): V1Job {
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: { name },
    spec: {
      completions: 1,
      parallelism: 1,
      completionMode: "Indexed",
      backoffLimit: 0,
      template: {
        spec: {
          restartPolicy: "Never",
          terminationGracePeriodSeconds: 20,
          initContainers,
          containers,
          volumes: [{ name: "checkpoints", emptyDir: {} }],
        },
      },
    },
  };
}

async function finishedPod(ns: string, jobName: string): Promise<V1Pod> {
  return eventually(async () => {
    const pods = await core.listNamespacedPod({
      namespace: ns,
      labelSelector: `batch.kubernetes.io/job-name=${jobName}`,
    });
    const p = pods.items[0];
    return p && (p.status?.phase === "Succeeded" || p.status?.phase === "Failed") ? p : undefined;
  }, `the pod of ${ns}/${jobName} to finish`);
}

function runOf(ns: string, pod: V1Pod, container: string): ContainerRun | undefined {
  return cluster.containerRuns(ns).find((r) => r.uid === pod.metadata?.uid && r.container === container);
}

async function committed(store: string): Promise<number[]> {
  return (await listCheckpoints(await openStore(store, {}))).committed
    .map((c) => c.step)
    .sort((a, b) => a - b);
}

describe("init containers and native sidecars", () => {
  it("restores first, runs the agent beside the trainer, stops the agent after the trainer: the next pod resumes from the last commit", async () => {
    const ns = "order";
    await core.createNamespace({ body: { metadata: { name: ns } } });
    const store = `file://${join(dir, "order-store")}`;

    await batch.createNamespacedJob({
      namespace: ns,
      body: job("first", [restore(store), agent(store)], [trainer(store, 4)]),
    });
    const first = await finishedPod(ns, "first");
    expect(first.status?.phase).toBe("Succeeded");
    expect(await committed(store)).toEqual([2, 4]);

    await batch.createNamespacedJob({
      namespace: ns,
      body: job("second", [restore(store), agent(store)], [trainer(store, 8)]),
    });
    const pod = await finishedPod(ns, "second");
    expect(pod.status?.phase).toBe("Succeeded");
    const [r, a] = pod.status?.initContainerStatuses ?? [];
    expect(r).toMatchObject({ name: "spillway-restore", state: { terminated: { exitCode: 0 } } });
    expect(a).toMatchObject({ name: "spillway-checkpoint-agent", state: { terminated: { exitCode: 0 } } });
    expect(pod.status?.containerStatuses?.[0]).toMatchObject({ state: { terminated: { exitCode: 0 } } });

    const restoreRun = runOf(ns, pod, "spillway-restore")!;
    const agentRun = runOf(ns, pod, "spillway-checkpoint-agent")!;
    const trainerRun = runOf(ns, pod, "trainer")!;
    // Order: the restore exited before the trainer started; the agent started before the
    // trainer and exited after it (SIGTERM once the trainer was done, then it drained).
    expect(restoreRun.exit!.finishedAt.getTime()).toBeLessThanOrEqual(trainerRun.startedAt.getTime());
    expect(agentRun.startedAt.getTime()).toBeLessThanOrEqual(trainerRun.startedAt.getTime());
    expect(agentRun.exit!.finishedAt.getTime()).toBeGreaterThanOrEqual(trainerRun.exit!.finishedAt.getTime());
    expect(agentRun.logs).toContain("drained");

    // The trainer found the restored checkpoint in its path and went on from it.
    expect(parseWorkloadEvents(restoreRun.logs)).toEqual([
      expect.objectContaining({ event: "restored", step: 4, rejected: [] }),
    ]);
    const trained = parseWorkloadEvents(trainerRun.logs);
    expect(trained.filter((e) => e.event === "checkpoint").map((e) => e.step)).toEqual([6, 8]);
    expect(trained.at(-1)).toEqual({ event: "finished", step: 8, resumedFrom: 4 });
    expect(await committed(store)).toEqual([4, 6, 8]);
    expect(cluster.processIds()).toEqual([]);
  }, 60_000);

  it("fails the pod when an init container fails: later containers never start, a started sidecar is stopped", async () => {
    const ns = "initfail";
    await core.createNamespace({ body: { metadata: { name: ns } } });
    const store = `file://${join(dir, "initfail-store")}`;
    // The agent (a sidecar) starts first; the restore has no store and exits non-zero.
    const broken = { ...restore(store), env: [{ name: "SPILLWAY_CHECKPOINT_DIR", value: "/checkpoints" }] };
    await batch.createNamespacedJob({
      namespace: ns,
      body: job("broken", [agent(store), broken], [trainer(store, 4)]),
    });
    const pod = await finishedPod(ns, "broken");
    expect(pod.status?.phase).toBe("Failed");
    const [a, r] = pod.status?.initContainerStatuses ?? [];
    expect(r?.state?.terminated?.exitCode).not.toBe(0);
    expect(a?.state?.terminated).toBeDefined();
    expect(pod.status?.containerStatuses?.[0]?.state?.waiting?.reason).toBe("PodInitializing");
    expect(runOf(ns, pod, "trainer")).toBeUndefined();
    const job_ = await eventually(async () => {
      const j = await batch.readNamespacedJob({ name: "broken", namespace: ns });
      return j.status?.failed ? j : undefined;
    }, "the Job to count the failure");
    expect(job_.status?.failed).toBe(1);
    expect(cluster.processIds()).toEqual([]);
  }, 60_000);

  it("runs a simulated main container beside an executed sidecar; the phase follows the main container", async () => {
    const ns = "mixed";
    await core.createNamespace({ body: { metadata: { name: ns } } });
    const store = `file://${join(dir, "mixed-store")}`;
    const user: V1Container = {
      name: "pytorch",
      image: "nvcr.io/nvidia/pytorch:24.08-py3",
      command: ["torchrun", "train.py"],
      env: [{ name: SIM_DURATION_ENV, value: "1500ms" }],
      volumeMounts: mount,
      resources: { limits: { [GPU]: "8" }, requests: { [GPU]: "8" } },
    };
    await batch.createNamespacedJob({
      namespace: ns,
      body: job("mixed", [agent(store)], [user, { ...trainer(store, 2), resources: {} }]),
    });
    const running = await eventually(async () => {
      const [p] = (await core.listNamespacedPod({ namespace: ns })).items;
      return p?.status?.phase === "Running" ? p : undefined;
    }, "the pod to run");
    expect(running.status?.initContainerStatuses?.[0]?.state?.running).toBeDefined();
    const pod = await finishedPod(ns, "mixed");
    expect(pod.status?.phase).toBe("Succeeded");
    expect(pod.status?.containerStatuses?.map((c) => c.state?.terminated?.exitCode)).toEqual([0, 0]);
    // The sidecar ran until both main containers were done, then drained and exited.
    const agentRun = runOf(ns, pod, "spillway-checkpoint-agent")!;
    const trainerRun = runOf(ns, pod, "trainer")!;
    // Ordering, not durations: the sidecar exited after the executed trainer and after the
    // simulated container's termination (a status time, truncated to the second).
    expect(agentRun.exit!.finishedAt.getTime()).toBeGreaterThanOrEqual(trainerRun.exit!.finishedAt.getTime());
    const pytorchDone = pod.status?.containerStatuses?.find((c) => c.name === "pytorch")?.state?.terminated
      ?.finishedAt;
    expect(pytorchDone).toBeDefined();
    expect(agentRun.exit!.finishedAt.getTime()).toBeGreaterThanOrEqual(new Date(pytorchDone!).getTime());
    expect(await committed(store)).toEqual([2]);
  }, 60_000);

  it("on deletion stops the trainer first, then the agent, which uploads the last complete checkpoint", async () => {
    const ns = "drain";
    await core.createNamespace({ body: { metadata: { name: ns } } });
    const store = `file://${join(dir, "drain-store")}`;
    await batch.createNamespacedJob({
      namespace: ns,
      body: job("long", [restore(store), agent(store)], [trainer(store, 100_000, "50ms")]),
    });
    await eventually(async () => ((await committed(store)).length > 0 ? true : undefined), "a commit");
    const [pod] = (await core.listNamespacedPod({ namespace: ns })).items;
    const pids = cluster.processIds();
    expect(pids.length).toBe(2);
    // Without a container name, the logs are the first main container's (as `kubectl logs`).
    expect(cluster.containerLogs(ns, pod!.metadata!.name!)).toContain('"event":"checkpoint"');
    await core.deleteNamespacedPod({ name: pod!.metadata!.name!, namespace: ns, gracePeriodSeconds: 20 });
    await eventually(async () => {
      const runs = cluster.containerRuns(ns).filter((r) => r.uid === pod!.metadata!.uid);
      return runs.length === 3 && runs.every((r) => r.exit) ? true : undefined;
    }, "every container to exit");
    for (const pid of pids) expect(alive(pid)).toBe(false);
    const trainerRun = runOf(ns, pod!, "trainer")!;
    const agentRun = runOf(ns, pod!, "spillway-checkpoint-agent")!;
    expect(trainerRun.exit?.exitCode).toBe(143);
    expect(agentRun.exit?.exitCode).toBe(0);
    expect(agentRun.exit!.finishedAt.getTime()).toBeGreaterThanOrEqual(trainerRun.exit!.finishedAt.getTime());
    expect(agentRun.logs).toContain("drained");
    // Drained: the newest checkpoint the trainer wrote is committed.
    const written = parseWorkloadEvents(trainerRun.logs)
      .filter((e) => e.event === "checkpoint")
      .map((e) => e.step!);
    expect(Math.max(...(await committed(store)))).toBe(Math.max(...written));
    await batch.deleteNamespacedJob({ name: "long", namespace: ns, propagationPolicy: "Background" });
  }, 60_000);
});
