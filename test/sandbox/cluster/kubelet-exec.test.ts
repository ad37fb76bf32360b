/**
 * The simulated kubelet runs containers of the Spillway image (`command[0] === "spillway"`)
 * for real, as child processes of the CLI: their environment is resolved like a kubelet's
 * (value, `$(VAR)`, fieldRef, secretKeyRef, envFrom, JOB_COMPLETION_INDEX), volume paths map
 * to host directories, exit codes become the pod's and the Job's outcome, a deleted pod's
 * process gets SIGTERM (and drains), a lost node or cluster kills its processes, and nothing
 * outlives the cluster. The process is the sandbox's trainer stand-in over a file:// store.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  BatchV1Api,
  CoreV1Api,
  type V1Container,
  type V1Job,
  type V1Pod,
  type V1Volume,
} from "@kubernetes/client-node";
import { listCheckpoints } from "../../../operator/checkpoints/repository.ts";
import { openStore } from "../../../operator/dataplane/store.ts";
import {
  type ContainerLogLine,
  expandVars,
  PathMap,
  SimulatedCluster,
} from "../../../operator/sandbox/cluster/index.ts";

const GPU = "nvidia.com/gpu";
let dir: string;
let cluster: SimulatedCluster;
let core: CoreV1Api;
let batch: BatchV1Api;
const logs: ContainerLogLine[] = [];

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function startCluster(name: string): Promise<SimulatedCluster> {
  return SimulatedCluster.start({
    name,
    pools: [{ name: "gpu", nodes: 2, gpusPerNode: 8, gpuType: "H100" }],
    podStartupMs: 20,
    jobDurationMs: 200,
    onContainerLog: (l) => logs.push(l),
  });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "spillway-kubelet-exec-"));
  cluster = await startCluster("exec");
  const kc = cluster.kubeConfig();
  core = kc.makeApiClient(CoreV1Api);
  batch = kc.makeApiClient(BatchV1Api);
}, 30_000);

afterAll(async () => {
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function namespace(name: string): Promise<string> {
  await core.createNamespace({ body: { metadata: { name } } });
  return name;
}

/** Polls until `check` returns a value (the limit only ends a hung test). */
async function eventually<T>(check: () => Promise<T | undefined>, what: string, ms = 40_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The trainer stand-in as a container: restore → agent → trainer, checkpoints in an emptyDir. */
function workloadContainer(env: V1Container["env"], extra: Partial<V1Container> = {}): V1Container {
  return {
    name: "trainer",
    image: "ghcr.io/spillway/spillway:dev",
    command: ["spillway", "checkpoint", "workload"],
    env,
    volumeMounts: [{ name: "checkpoints", mountPath: "/checkpoints" }],
    resources: { limits: { [GPU]: "8" }, requests: { [GPU]: "8" } },
    ...extra,
  };
}

const checkpointVolume: V1Volume = { name: "checkpoints", emptyDir: {} };

function job(
  name: string,
  containers: V1Container[],
  opts: { completions?: number; backoffLimit?: number } = {},
): V1Job {
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: { name },
    spec: {
      completions: opts.completions ?? 1,
      parallelism: opts.completions ?? 1,
      completionMode: "Indexed",
      backoffLimit: opts.backoffLimit ?? 0,
      template: {
        metadata: { labels: { team: "ml" } },
        spec: { restartPolicy: "Never", containers, volumes: [checkpointVolume] },
      },
    },
  };
}

async function jobPods(ns: string, name: string): Promise<V1Pod[]> {
  return (
    await core.listNamespacedPod({ namespace: ns, labelSelector: `batch.kubernetes.io/job-name=${name}` })
  ).items;
}

async function finishedJob(ns: string, name: string): Promise<V1Job> {
  return eventually(async () => {
    const j = await batch.readNamespacedJob({ name, namespace: ns });
    const done = j.status?.conditions?.find(
      (c) => (c.type === "Complete" || c.type === "Failed") && c.status === "True",
    );
    return done ? j : undefined;
  }, `Job ${ns}/${name} to finish`);
}

function jobFinish(j: V1Job): string | undefined {
  return j.status?.conditions?.find(
    (c) => (c.type === "Complete" || c.type === "Failed") && c.status === "True",
  )?.type;
}

const storeUri = (name: string) => `file://${join(dir, name)}`;

describe("the kubelet's expansion and path rules", () => {
  it("expands $(VAR) like Kubernetes: defined names, $$ escapes, unknown references kept", () => {
    const vars: Record<string, string> = { A: "x", B: "y" };
    expect(expandVars("$(A)-$(B)/$(C)/$$(A)/$", (n) => vars[n])).toBe("x-y/$(C)/$(A)/$");
    expect(expandVars("$(A", (n) => vars[n])).toBe("$(A");
  });

  it("maps paths under a mount, in values, file:// URIs and --flag= arguments", () => {
    const m = new PathMap([
      { mountPath: "/data", hostPath: "/h/data" },
      { mountPath: "/data/ckpt", hostPath: "/h/ckpt" },
    ]);
    expect(m.value("/data/x")).toBe("/h/data/x");
    expect(m.value("/data/ckpt/step-1")).toBe("/h/ckpt/step-1");
    expect(m.value("/database")).toBe("/database");
    expect(m.value("file:///data/a")).toBe("file:///h/data/a");
    expect(m.value("--path=/data/ckpt")).toBe("--path=/h/ckpt");
    expect(m.value("s3://b/data")).toBe("s3://b/data");
  });
});

describe("a spillway container runs for real", () => {
  it("gets its env from values, fieldRefs, Secrets (env and envFrom) and its index annotation, and exits 0 → Complete", async () => {
    const ns = await namespace("env");
    await core.createNamespacedSecret({
      namespace: ns,
      body: {
        metadata: { name: "store" },
        stringData: { SPILLWAY_CHECKPOINT_STORE: storeUri("env-store") },
      },
    });
    await core.createNamespacedSecret({
      namespace: ns,
      body: { metadata: { name: "knobs" }, stringData: { TRAINER_STEPS: "4" } },
    });
    const container = workloadContainer([
      { name: "SPILLWAY_CHECKPOINT_DIR", value: "/checkpoints" },
      {
        name: "SPILLWAY_CHECKPOINT_STORE",
        valueFrom: { secretKeyRef: { name: "store", key: "SPILLWAY_CHECKPOINT_STORE" } },
      },
      { name: "TEAM", valueFrom: { fieldRef: { fieldPath: "metadata.labels['team']" } } },
      { name: "POD_NS", valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } } },
      {
        name: "RANK",
        valueFrom: {
          fieldRef: { fieldPath: "metadata.annotations['batch.kubernetes.io/job-completion-index']" },
        },
      },
      // Only variables defined above a value can be referenced in it (as in Kubernetes).
      { name: "SPILLWAY_RUN_UID", value: "$(TEAM)-$(POD_NS)-$(RANK)" },
      { name: "SPILLWAY_TRAINER_STEPS", value: "$(STEPS_TRAINER_STEPS)" },
      { name: "SPILLWAY_TRAINER_EVERY", value: "2" },
      { name: "SPILLWAY_NNODES", value: "1" },
    ]);
    container.envFrom = [{ secretRef: { name: "knobs" }, prefix: "STEPS_" }];
    await batch.createNamespacedJob({ namespace: ns, body: job("train", [container]) });

    const done = await finishedJob(ns, "train");
    expect(jobFinish(done)).toBe("Complete");
    const [pod] = await jobPods(ns, "train");
    expect(pod?.status?.phase).toBe("Succeeded");
    expect(pod?.status?.containerStatuses?.[0]?.state?.terminated).toMatchObject({
      exitCode: 0,
      reason: "Completed",
    });
    // The manifests in the store say what the process was given.
    const listing = await listCheckpoints(await openStore(storeUri("env-store"), {}));
    expect(listing.committed.map((c) => c.step).sort((a, b) => a - b)).toEqual([2, 4]);
    expect(listing.committed.every((c) => c.runUid === "ml-env-0")).toBe(true);
    // Its stdout is its log: the stand-in's JSON events.
    const events = logs
      .filter((l) => l.namespace === ns && l.stream === "stdout")
      .map((l) => JSON.parse(l.line) as { event: string; step?: number });
    expect(events.filter((e) => e.event === "finished")).toEqual([{ event: "finished", step: 4 }]);
    expect(cluster.containerLogs(ns, pod!.metadata!.name!)).toContain('"event":"finished"');
  }, 60_000);

  it("expands $(JOB_COMPLETION_INDEX) and maps mount paths in the args of each index's process", async () => {
    const ns = await namespace("args");
    const container: V1Container = {
      name: "trainer",
      image: "ghcr.io/spillway/spillway:dev",
      command: ["spillway", "checkpoint", "trainer"],
      // Index 0 trains to step 1, index 1 to step 11.
      args: ["--path=/checkpoints/run", "--steps", "$(JOB_COMPLETION_INDEX)1", "--every", "5"],
      volumeMounts: [{ name: "checkpoints", mountPath: "/checkpoints" }],
      resources: { limits: { [GPU]: "8" }, requests: { [GPU]: "8" } },
    };
    await batch.createNamespacedJob({ namespace: ns, body: job("indexed", [container], { completions: 2 }) });
    const done = await finishedJob(ns, "indexed");
    expect(jobFinish(done)).toBe("Complete");
    expect(done.status?.completedIndexes).toBe("0-1");
    const finished = cluster
      .containerRuns(ns)
      .map((r) => /finished at step (\d+)/.exec(r.logs)?.[1])
      .sort();
    expect(finished).toEqual(["1", "11"]);
    // The checkpoint directory was each pod's own volume on the host, not /checkpoints.
    expect(cluster.containerRuns(ns).every((r) => r.exit?.exitCode === 0)).toBe(true);
    expect(existsSync("/checkpoints/run")).toBe(false);
  }, 60_000);

  it("waits in CreateContainerConfigError while its Secret is missing, and starts once it exists", async () => {
    const ns = await namespace("nosecret");
    const container = workloadContainer([
      { name: "SPILLWAY_CHECKPOINT_DIR", value: "/checkpoints" },
      { name: "SPILLWAY_TRAINER_STEPS", value: "1" },
    ]);
    container.envFrom = [{ secretRef: { name: "late" } }];
    await batch.createNamespacedJob({ namespace: ns, body: job("wait", [container]) });
    const waiting = await eventually(async () => {
      const [p] = await jobPods(ns, "wait");
      return p?.status?.containerStatuses?.[0]?.state?.waiting ? p : undefined;
    }, "the container to wait");
    expect(waiting.status?.phase).toBe("Pending");
    expect(waiting.status?.containerStatuses?.[0]?.state?.waiting).toEqual({
      reason: "CreateContainerConfigError",
      message: 'secret "late" not found',
    });
    expect(cluster.processIds()).toEqual([]);

    await core.createNamespacedSecret({
      namespace: ns,
      body: { metadata: { name: "late" }, stringData: { SPILLWAY_CHECKPOINT_STORE: storeUri("late-store") } },
    });
    const done = await finishedJob(ns, "wait");
    expect(done.status?.succeeded).toBe(1);
  }, 60_000);

  it("reports a non-zero exit code as the container's, failing the pod and the Job", async () => {
    const ns = await namespace("exit");
    // Without SPILLWAY_CHECKPOINT_STORE the stand-in exits 1, naming the variable.
    const container = workloadContainer([{ name: "SPILLWAY_CHECKPOINT_DIR", value: "/checkpoints" }]);
    await batch.createNamespacedJob({ namespace: ns, body: job("bad", [container]) });
    const done = await finishedJob(ns, "bad");
    expect(jobFinish(done)).toBe("Failed");
    const [pod] = await jobPods(ns, "bad");
    expect(pod?.status?.phase).toBe("Failed");
    expect(pod?.status?.containerStatuses?.[0]?.state?.terminated).toMatchObject({
      exitCode: 1,
      reason: "Error",
    });
    expect(cluster.containerLogs(ns, pod!.metadata!.name!)).toContain(
      "SPILLWAY_CHECKPOINT_STORE is required",
    );
  }, 60_000);

  it("sends SIGTERM when its pod is deleted: the agent drains, then the pod goes", async () => {
    const ns = await namespace("sigterm");
    const store = storeUri("sigterm-store");
    const container = workloadContainer([
      { name: "SPILLWAY_CHECKPOINT_DIR", value: "/checkpoints" },
      { name: "SPILLWAY_CHECKPOINT_STORE", value: store },
      { name: "SPILLWAY_TRAINER_STEPS", value: "100000" },
      { name: "SPILLWAY_TRAINER_EVERY", value: "2" },
      { name: "SPILLWAY_TRAINER_STEP_DELAY", value: "50ms" },
    ]);
    await batch.createNamespacedJob({ namespace: ns, body: job("long", [container]) });
    const mine = () => logs.filter((l) => l.namespace === ns);
    await eventually(
      async () => (mine().some((l) => l.line.includes('"event":"committed"')) ? true : undefined),
      "a committed checkpoint",
    );
    const [pod] = await jobPods(ns, "long");
    expect(pod?.status?.phase).toBe("Running");
    const pids = cluster.processIds();
    expect(pids.length).toBe(1);

    await core.deleteNamespacedPod({ name: pod!.metadata!.name!, namespace: ns, gracePeriodSeconds: 20 });
    await eventually(
      async () =>
        (await jobPods(ns, "long")).some((p) => p.metadata?.uid === pod!.metadata!.uid) ? undefined : true,
      "the pod to go",
    );
    expect(alive(pids[0]!)).toBe(false);
    expect(mine().some((l) => l.line.includes("stopped; complete checkpoints were uploaded"))).toBe(true);
    // Drained: the newest checkpoint the trainer wrote is committed.
    const written = mine()
      .filter((l) => l.line.startsWith('{"event":"checkpoint"'))
      .map((l) => (JSON.parse(l.line) as { step: number }).step);
    const listing = await listCheckpoints(await openStore(store, {}));
    expect(Math.max(...listing.committed.map((c) => c.step))).toBe(Math.max(...written));
    await batch.deleteNamespacedJob({ name: "long", namespace: ns, propagationPolicy: "Background" });
    await eventually(async () => (cluster.processIds().length === 0 ? true : undefined), "no process left");
  }, 60_000);

  it("kills the processes of a lost node (NodeLost) and of a lost cluster, leaving none behind", async () => {
    const other = await startCluster("lost");
    try {
      const kc = other.kubeConfig();
      const oCore = kc.makeApiClient(CoreV1Api);
      const oBatch = kc.makeApiClient(BatchV1Api);
      await oCore.createNamespace({ body: { metadata: { name: "lost" } } });
      const container = workloadContainer([
        { name: "SPILLWAY_CHECKPOINT_DIR", value: "/checkpoints" },
        { name: "SPILLWAY_CHECKPOINT_STORE", value: storeUri("lost-store") },
        { name: "SPILLWAY_TRAINER_STEPS", value: "100000" },
        { name: "SPILLWAY_TRAINER_STEP_DELAY", value: "100ms" },
      ]);
      await oBatch.createNamespacedJob({
        namespace: "lost",
        body: job("two", [container], { completions: 2, backoffLimit: 5 }),
      });
      const pids = await eventually(async () => {
        const p = other.processIds();
        return p.length === 2 ? p : undefined;
      }, "two processes");
      const pods = (await oCore.listNamespacedPod({ namespace: "lost" })).items;
      const onFirst = pods.find((p) => p.status?.phase === "Running")!;
      const node = onFirst.spec!.nodeName!;

      await other.setNodeReady(node, false);
      const lost = await eventually(async () => {
        const p = await oCore.readNamespacedPod({ name: onFirst.metadata!.name!, namespace: "lost" });
        return p.status?.phase === "Failed" ? p : undefined;
      }, "the pod on the lost node to fail");
      expect(lost.status?.reason).toBe("NodeLost");
      await eventually(async () => (other.processIds().length === 1 ? true : undefined), "one process left");

      const survivors = other.processIds();
      await other.stop();
      for (const pid of [...pids, ...survivors]) expect(alive(pid)).toBe(false);
      expect(other.processIds()).toEqual([]);
    } finally {
      await other.stop();
    }
  }, 60_000);
});
