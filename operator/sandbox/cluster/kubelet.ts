/**
 * The simulated cluster's kubelet, scheduler and Job controller in one small controller: it
 * plays the parts of a real cluster that a Spillway run depends on, against that cluster's
 * API server, through the same client library the operator uses.
 *
 * - Job controller: creates the pods of each `batch/v1` Job (Indexed: one pod per completion
 *   index, with the `batch.kubernetes.io/job-completion-index` label and annotation and the
 *   `JOB_COMPLETION_INDEX` env), retries failed pods until `backoffLimit`, writes the Job's
 *   status (active, ready, succeeded, failed, completedIndexes, Complete/Failed conditions)
 *   and deletes the pods of a deleted Job.
 * - Scheduler: binds Pending pods to Ready nodes with enough free `nvidia.com/gpu`, first
 *   come first served; a pod that does not fit stays Pending (`PodScheduled=False, Unschedulable`).
 * - Node lifecycle: the unfinished pods of a node that is deleted or not Ready fail with
 *   reason `NodeLost` (the Job controller then replaces them, capacity permitting).
 * - Kubelet: a bound pod turns Running after `podStartupMs` and Succeeded after `jobDurationMs`
 *   (or Failed with a non-zero exit code). Per pod: the annotations
 *   `sim.spillway.dev/duration` / `sim.spillway.dev/exit-code`, or the env vars
 *   `SPILLWAY_SIM_DURATION` / `SPILLWAY_SIM_EXIT_CODE` of its first container.
 * - Executed pods: a pod with a main container of the Spillway image (`command[0] ===
 *   "spillway"`) is run for real (containers.ts, executor.ts): after `podStartupMs` its
 *   environment is resolved (a missing Secret keeps it Pending in `CreateContainerConfigError`,
 *   retried) and each `spillway` container runs as a child process of the CLI, in Kubernetes'
 *   order: init containers one by one (each must exit 0; a failure fails the pod, as
 *   restartPolicy Never), native sidecars (`restartPolicy: Always` init containers) started
 *   and kept running, then the main containers; once every main container has exited the
 *   sidecars get SIGTERM, and the pod's phase follows the main containers only (Succeeded
 *   when every one exits 0). Containers of another image in such a pod are simulated in
 *   place (an init container completes at once; a main container runs the `sim.*` duration
 *   and exits with the `sim.*` code). A pod deletion sends SIGTERM to the main containers,
 *   then to the sidecars once those have exited, SIGKILL at the end of the grace period, and
 *   the pod object goes once the processes have exited; a lost node (or a stopped cluster)
 *   SIGKILLs them at once. A sidecar that exits early is not restarted (Kubernetes restarts
 *   it with back-off). A pod whose main containers are all simulated is simulated whole, its
 *   init containers included. restartPolicy is always Never (a Job's pods use no other).
 *
 * Level-triggered: every pass lists Jobs and Pods and moves each a step towards where it
 * should be. Passes are triggered by watches, by the next due transition, and by a periodic
 * resync; one pass runs at a time and a request during a pass runs one more after it.
 */
import {
  ApiException,
  BatchV1Api,
  CoreV1Api,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1Container,
  type V1ContainerState,
  type V1ContainerStatus,
  type V1Job,
  type V1JobCondition,
  type V1Node,
  type V1Pod,
  type V1PodCondition,
  Watch,
} from "@kubernetes/client-node";
import { parseDuration } from "../../util/duration.ts";
import {
  type ConfigSource,
  ContainerConfigError,
  isExecutedPod,
  isSpillwayContainer,
  type ProcessPlan,
  planContainer,
} from "./containers.ts";
import { type ContainerLogLine, type ContainerRun, Executor, type PodProcesses } from "./executor.ts";

export const GPU_RESOURCE = "nvidia.com/gpu";
export const COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index";
export const JOB_NAME_LABEL = "batch.kubernetes.io/job-name";
export const CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid";
export const SIM_DURATION_ANNOTATION = "sim.spillway.dev/duration";
export const SIM_EXIT_CODE_ANNOTATION = "sim.spillway.dev/exit-code";
export const SIM_DURATION_ENV = "SPILLWAY_SIM_DURATION";
export const SIM_EXIT_CODE_ENV = "SPILLWAY_SIM_EXIT_CODE";

export interface KubeletOptions {
  kubeConfig: KubeConfig;
  /** Names of the nodes this kubelet runs pods on (the Node objects must exist). */
  nodes: string[];
  podStartupMs: number;
  jobDurationMs: number;
  /** Full relist period; watches make passes happen sooner. Default 1 s. */
  resyncMs?: number;
  /** Called with errors of a pass (the pass is retried). */
  onError?: (e: unknown) => void;
  /** Cluster name (in the executed pods' work directory names). */
  name?: string;
  /** Each line an executed container writes. */
  onContainerLog?: (line: ContainerLogLine) => void;
}

/** How long a container waits in CreateContainerConfigError before the kubelet tries again. */
const CONFIG_RETRY_MS = 1000;
/** Longest wait for an executed sidecar's first log line before the main containers start anyway. */
const SIDECAR_STARTUP_MS = 30_000;
/** Kubernetes' default terminationGracePeriodSeconds. */
const DEFAULT_GRACE_SECONDS = 30;

interface PodTimes {
  scheduledAt?: number;
  startedAt?: number;
  /** Executed pods: the plan of each `spillway` container (init and main), made once. */
  plans?: Map<string, ProcessPlan>;
  /** Executed pods: when the main containers started (every regular init container exited 0). */
  mainsStartedAt?: number;
}

const MERGE_PATCH = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

export class Kubelet {
  private readonly core: CoreV1Api;
  private readonly batch: BatchV1Api;
  private readonly times = new Map<string, PodTimes>();
  private readonly watches: AbortController[] = [];
  private running = false;
  private passing: Promise<void> | undefined;
  private again = false;
  private wakeTimer: NodeJS.Timeout | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private gpuCapacity = new Map<string, number>();
  private gpuUsed = new Map<string, number>();

  private nodeNames: string[];
  private readonly executor: Executor;
  private readonly config: ConfigSource;

  constructor(private readonly opts: KubeletOptions) {
    this.nodeNames = [...opts.nodes];
    this.core = opts.kubeConfig.makeApiClient(CoreV1Api);
    this.batch = opts.kubeConfig.makeApiClient(BatchV1Api);
    this.executor = new Executor({
      name: opts.name ?? "cluster",
      ...(opts.onContainerLog ? { onLog: opts.onContainerLog } : {}),
      onExit: () => void this.kick(),
    });
    this.config = {
      secret: (namespace, name) => this.readData("Secret", namespace, name),
      configMap: (namespace, name) => this.readData("ConfigMap", namespace, name),
    };
  }

  async start(): Promise<void> {
    this.running = true;
    this.startWatch("/api/v1/pods");
    this.startWatch("/apis/batch/v1/jobs");
    this.resyncTimer = setInterval(() => this.kick(), this.opts.resyncMs ?? 1000);
    await this.pass();
  }

  /**
   * Stops the kubelet: no more passes, and every container process is SIGKILLed (a stopped
   * simulated cluster is a lost one). When it resolves, no child process is left.
   */
  async stop(): Promise<void> {
    this.running = false;
    clearInterval(this.resyncTimer);
    clearTimeout(this.wakeTimer);
    for (const w of this.watches.splice(0)) w.abort();
    await this.passing;
    await this.executor.stop();
  }

  /** The log (stdout and stderr, newest 256 KiB) of an executed pod's container. */
  containerLogs(namespace: string, pod: string, container?: string): string | undefined {
    return this.executor.logs(namespace, pod, container);
  }

  /** Containers run for real so far (deleted pods' too, the newest 64), with exit and logs. */
  containerRuns(): ContainerRun[] {
    return this.executor.history();
  }

  /** Pids of the container processes still running. */
  processIds(): number[] {
    return this.executor.pids();
  }

  /** Changes the nodes this kubelet runs (a resized node pool); takes effect with the next pass. */
  setNodes(nodes: string[]): Promise<void> {
    this.nodeNames = [...nodes];
    return this.kick();
  }

  /** Free GPUs as of the last pass (allocatable minus what bound, unfinished pods request). */
  freeGpus(): number {
    let free = 0;
    for (const [node, cap] of this.gpuCapacity) free += Math.max(0, cap - (this.gpuUsed.get(node) ?? 0));
    return free;
  }

  totalGpus(): number {
    let total = 0;
    for (const cap of this.gpuCapacity.values()) total += cap;
    return total;
  }

  /** Requests a pass; coalesced with one in progress. Resolves when a pass after the call ends. */
  kick(): Promise<void> {
    if (!this.running) return Promise.resolve();
    if (this.passing) {
      this.again = true;
      return this.passing;
    }
    this.passing = (async () => {
      try {
        do {
          this.again = false;
          try {
            await this.reconcile();
          } catch (e) {
            this.opts.onError?.(e);
            this.schedule(Date.now() + 200);
          }
        } while (this.again && this.running);
      } finally {
        this.passing = undefined;
      }
    })();
    return this.passing;
  }

  /** Runs one full pass now (waits for any pass in progress). */
  async pass(): Promise<void> {
    await this.passing;
    await this.kick();
  }

  private startWatch(path: string): void {
    const watch = new Watch(this.opts.kubeConfig);
    const begin = (): void => {
      if (!this.running) return;
      watch
        .watch(
          path,
          { allowWatchBookmarks: true },
          (phase) => {
            if (phase !== "BOOKMARK") void this.kick();
          },
          () => {
            // Ended or failed (server restarted, unreachable): resync and watch again.
            if (this.running) setTimeout(begin, 500).unref();
          },
        )
        .then(
          (ctrl) => {
            if (this.running) this.watches.push(ctrl);
            else ctrl.abort();
          },
          () => {
            if (this.running) setTimeout(begin, 500).unref();
          },
        );
    };
    begin();
  }

  private schedule(at: number): void {
    if (!this.running) return;
    clearTimeout(this.wakeTimer);
    this.wakeTimer = setTimeout(() => void this.kick(), Math.max(0, at - Date.now()));
  }

  // ---------------------------------------------------------------- one pass

  private async reconcile(): Promise<void> {
    const [nodeList, jobList, podList] = await Promise.all([
      this.core.listNode(),
      this.batch.listJobForAllNamespaces(),
      this.core.listPodForAllNamespaces(),
    ]);
    const nodes = nodeList.items.filter((n) => this.nodeNames.includes(n.metadata?.name ?? ""));
    const jobs = jobList.items;
    let pods = podList.items;
    const now = Date.now();

    // Job controller: pods of deleted Jobs go; each live Job gets the pods it lacks.
    const jobUids = new Set(jobs.map((j) => j.metadata?.uid));
    for (const pod of pods) {
      const owner = controllerJobUid(pod);
      if (owner && !jobUids.has(owner)) await this.deletePod(pod);
    }
    pods = pods.filter((p) => {
      const owner = controllerJobUid(p);
      return !owner || jobUids.has(owner);
    });
    for (const job of jobs) {
      const created = await this.syncJobPods(job, podsOf(job, pods), now);
      pods.push(...created);
    }

    // Pods being deleted (graceful deletion): the kubelet confirms at once, or, for pods with
    // processes, once they have exited after SIGTERM (SIGKILL at the end of the grace period).
    for (const pod of pods.filter((p) => p.metadata?.deletionTimestamp)) await this.deletePod(pod);
    pods = pods.filter((p) => !p.metadata?.deletionTimestamp);
    await this.reapVanished(new Set(podList.items.map((p) => p.metadata?.uid ?? "")));

    // Node lifecycle: the pods of a node that is gone or not Ready fail (NodeLost), so their
    // Job replaces them elsewhere (or they wait for capacity), as on a real cluster.
    const ready = nodes.filter(isNodeReady);
    const readyNames = new Set(ready.map((n) => n.metadata!.name!));
    for (const pod of pods) {
      const node = pod.spec?.nodeName;
      if (!node || isTerminal(pod) || readyNames.has(node)) continue;
      // The machine is gone: its processes die with it, no grace period.
      this.executor.get(pod.metadata?.uid ?? "")?.kill();
      await this.writePodStatus(pod, (s) => {
        s.phase = "Failed";
        s.reason = "NodeLost";
        s.message = `Node ${node} which was running pod ${name(pod)} is unresponsive`;
        setPodCondition(s, { type: "Ready", status: "False", reason: "NodeLost" }, now);
        setPodCondition(
          s,
          { type: "DisruptionTarget", status: "True", reason: "DeletionByTaintManager" },
          now,
        );
      });
      pod.status = { ...pod.status, phase: "Failed" };
    }

    // Scheduler and kubelet (on Ready nodes only).
    this.gpuCapacity = new Map(ready.map((n) => [n.metadata!.name!, nodeGpus(n)]));
    this.gpuUsed = new Map();
    for (const pod of pods) {
      const node = pod.spec?.nodeName;
      if (node && !isTerminal(pod)) this.gpuUsed.set(node, (this.gpuUsed.get(node) ?? 0) + podGpus(pod));
    }
    let nextDue = Number.POSITIVE_INFINITY;
    const pending = pods
      .filter((p) => !p.spec?.nodeName && !isTerminal(p))
      .sort((a, b) => creationMs(a) - creationMs(b) || name(a).localeCompare(name(b)));
    for (const pod of pending) await this.bindOrMarkUnschedulable(pod, ready, now);
    for (const pod of pods) {
      const node = pod.spec?.nodeName;
      if (!node || isTerminal(pod) || !this.gpuCapacity.has(node)) continue;
      nextDue = Math.min(nextDue, await this.advancePod(pod, now));
    }

    // Job status from the pods as they are now.
    const fresh = (await this.core.listPodForAllNamespaces()).items;
    for (const job of jobs)
      nextDue = Math.min(nextDue, await this.syncJobStatus(job, podsOf(job, fresh), now));
    for (const uid of this.times.keys()) {
      if (!fresh.some((p) => p.metadata?.uid === uid && !isTerminal(p))) this.times.delete(uid);
    }
    if (Number.isFinite(nextDue)) this.schedule(nextDue);
  }

  // ---------------------------------------------------------------- Job controller

  private async syncJobPods(job: V1Job, pods: V1Pod[], now: number): Promise<V1Pod[]> {
    if (isFinished(job) || job.spec?.suspend) {
      for (const pod of pods.filter((p) => !isTerminal(p))) await this.deletePod(pod);
      return [];
    }
    if (exceededDeadline(job, now) || failedCount(pods) > backoffLimit(job)) return [];
    const completions = job.spec?.completions ?? job.spec?.parallelism ?? 1;
    const parallelism = job.spec?.parallelism ?? completions;
    const active = pods.filter((p) => !isTerminal(p) && !p.metadata?.deletionTimestamp);
    const created: V1Pod[] = [];
    if (job.spec?.completionMode === "Indexed") {
      const succeeded = new Set(pods.filter((p) => phase(p) === "Succeeded").map(indexOf));
      const running = new Set(active.map(indexOf));
      let slots = parallelism - active.length;
      for (let i = 0; i < completions && slots > 0; i++) {
        if (succeeded.has(i) || running.has(i)) continue;
        created.push(await this.createPod(job, i));
        slots--;
      }
    } else {
      const succeeded = pods.filter((p) => phase(p) === "Succeeded").length;
      const want = Math.min(parallelism, completions - succeeded) - active.length;
      for (let i = 0; i < want; i++) created.push(await this.createPod(job, undefined));
    }
    return created;
  }

  private async createPod(job: V1Job, index: number | undefined): Promise<V1Pod> {
    const jobName = job.metadata!.name!;
    const uid = job.metadata!.uid!;
    const template = structuredClone(job.spec?.template ?? {});
    const labels: Record<string, string> = {
      ...(template.metadata?.labels ?? {}),
      [JOB_NAME_LABEL]: jobName,
      "job-name": jobName,
      [CONTROLLER_UID_LABEL]: uid,
      "controller-uid": uid,
    };
    const annotations: Record<string, string> = { ...(template.metadata?.annotations ?? {}) };
    const spec = template.spec ?? { containers: [] };
    if (index !== undefined) {
      labels[COMPLETION_INDEX] = String(index);
      annotations[COMPLETION_INDEX] = String(index);
      spec.hostname ??= `${jobName}-${index}`;
      for (const c of spec.containers ?? []) {
        c.env = [...(c.env ?? []), { name: "JOB_COMPLETION_INDEX", value: String(index) }];
      }
    }
    const pod: V1Pod = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: {
        generateName: index !== undefined ? `${jobName}-${index}-` : `${jobName}-`,
        namespace: job.metadata!.namespace!,
        labels,
        annotations,
        ownerReferences: [
          {
            apiVersion: "batch/v1",
            kind: "Job",
            name: jobName,
            uid,
            controller: true,
            blockOwnerDeletion: true,
          },
        ],
      },
      spec,
    };
    return this.core.createNamespacedPod({ namespace: job.metadata!.namespace!, body: pod });
  }

  private async syncJobStatus(job: V1Job, pods: V1Pod[], now: number): Promise<number> {
    const status = structuredClone(job.status ?? {});
    const before = JSON.stringify(status);
    const active = pods.filter((p) => !isTerminal(p));
    const succeededPods = pods.filter((p) => phase(p) === "Succeeded");
    const failed = failedCount(pods);
    const indexed = job.spec?.completionMode === "Indexed";
    const completions = job.spec?.completions ?? job.spec?.parallelism ?? 1;
    const succeededIndexes = [...new Set(succeededPods.map(indexOf))].filter(
      (i) => i >= 0 && i < completions,
    );
    const succeeded = indexed ? succeededIndexes.length : succeededPods.length;
    let nextDue = Number.POSITIVE_INFINITY;

    status.active = active.length;
    status.ready = active.filter((p) => phase(p) === "Running").length;
    status.succeeded = succeeded;
    status.failed = failed;
    if (indexed) status.completedIndexes = formatIndexes(succeededIndexes);
    if (!status.startTime && !job.spec?.suspend) status.startTime = new Date(now);

    if (!isFinished(job)) {
      const deadline = deadlineMs(job);
      if (failed > backoffLimit(job)) {
        finish(status, "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit", now);
      } else if (deadline !== undefined && now >= deadline) {
        finish(status, "Failed", "DeadlineExceeded", "Job was active longer than specified deadline", now);
      } else if (succeeded >= completions) {
        finish(status, "Complete", "CompletionsReached", "Reached expected number of succeeded pods", now);
        status.completionTime = new Date(now);
      } else if (deadline !== undefined) {
        nextDue = deadline;
      }
    }
    if (JSON.stringify(status) === before) return nextDue;
    try {
      await this.batch.replaceNamespacedJobStatus({
        name: job.metadata!.name!,
        namespace: job.metadata!.namespace!,
        body: { ...job, status },
      });
    } catch (e) {
      if (!isCode(e, 404) && !isCode(e, 409)) throw e;
      this.again = true;
    }
    return nextDue;
  }

  // ---------------------------------------------------------------- scheduler and kubelet

  private async bindOrMarkUnschedulable(pod: V1Pod, nodes: V1Node[], now: number): Promise<void> {
    const need = podGpus(pod);
    const node = nodes.find((n) => {
      const nodeName = n.metadata!.name!;
      return (this.gpuCapacity.get(nodeName) ?? 0) - (this.gpuUsed.get(nodeName) ?? 0) >= need;
    });
    if (!node) {
      const msg = `0/${nodes.length} nodes are available: ${nodes.length} Insufficient ${GPU_RESOURCE}.`;
      const cond = condition(pod, "PodScheduled");
      if (cond?.status === "False" && cond.message === msg) return;
      await this.writePodStatus(pod, (s) => {
        s.phase = "Pending";
        setPodCondition(
          s,
          { type: "PodScheduled", status: "False", reason: "Unschedulable", message: msg },
          now,
        );
      });
      return;
    }
    const nodeName = node.metadata!.name!;
    let bound: V1Pod;
    try {
      bound = await this.core.patchNamespacedPod(
        { name: name(pod), namespace: pod.metadata!.namespace!, body: { spec: { nodeName } } },
        MERGE_PATCH,
      );
    } catch (e) {
      if (isCode(e, 404) || isCode(e, 409)) return;
      throw e;
    }
    this.gpuUsed.set(nodeName, (this.gpuUsed.get(nodeName) ?? 0) + need);
    this.times.set(bound.metadata!.uid!, { scheduledAt: now });
    await this.writePodStatus(bound, (s) => {
      s.phase = "Pending";
      s.hostIP = "127.0.0.1";
      setPodCondition(s, { type: "PodScheduled", status: "True" }, now);
    });
    this.schedule(now + this.opts.podStartupMs);
  }

  /** Moves a bound pod along; returns when it is next due for a transition. */
  private async advancePod(pod: V1Pod, now: number): Promise<number> {
    const uid = pod.metadata!.uid!;
    const t = this.times.get(uid) ?? {};
    this.times.set(uid, t);
    t.scheduledAt ??= condition(pod, "PodScheduled")?.lastTransitionTime?.getTime() ?? now;
    if (isExecutedPod(pod)) return this.advanceExecutedPod(pod, t, now);
    const p = phase(pod);
    if (p !== "Running") {
      const due = t.scheduledAt + this.opts.podStartupMs;
      if (now < due) return due;
      t.startedAt = now;
      await this.writePodStatus(pod, (s) => {
        s.phase = "Running";
        s.startTime = new Date(now);
        s.podIP = "127.0.0.1";
        setPodCondition(s, { type: "Initialized", status: "True" }, now);
        setPodCondition(s, { type: "ContainersReady", status: "True" }, now);
        setPodCondition(s, { type: "Ready", status: "True" }, now);
        s.containerStatuses = (pod.spec?.containers ?? []).map((c) => ({
          name: c.name,
          image: c.image ?? "",
          imageID: "",
          ready: true,
          restartCount: 0,
          started: true,
          state: { running: { startedAt: new Date(now) } },
        }));
      });
      return now + simDuration(pod, this.opts.jobDurationMs);
    }
    t.startedAt ??= pod.status?.startTime?.getTime() ?? now;
    const due = t.startedAt + simDuration(pod, this.opts.jobDurationMs);
    if (now < due) return due;
    const exitCode = simExitCode(pod);
    await this.writePodCompleted(
      pod,
      (pod.spec?.containers ?? []).map((c) => ({
        c,
        exitCode,
        reason: exitCode === 0 ? "Completed" : "Error",
        startedAt: new Date(t.startedAt!),
        finishedAt: new Date(now),
      })),
      now,
    );
    return Number.POSITIVE_INFINITY;
  }

  private async writePodStatus(pod: V1Pod, mutate: (s: NonNullable<V1Pod["status"]>) => void): Promise<void> {
    const status = structuredClone(pod.status ?? {});
    mutate(status);
    try {
      await this.core.replaceNamespacedPodStatus({
        name: name(pod),
        namespace: pod.metadata!.namespace!,
        body: { ...pod, status },
      });
    } catch (e) {
      if (!isCode(e, 404) && !isCode(e, 409)) throw e;
      this.again = true;
    }
  }

  /**
   * An executed pod, as a kubelet runs it: when due, every `spillway` container is configured
   * (a config error keeps the pod Pending, retried); then the init containers in order — a
   * regular one must exit 0 before the next starts (a failure fails the pod: restartPolicy
   * Never), a native sidecar (`restartPolicy: Always`) starts and keeps running; then the
   * main containers. Once every main container has exited, the sidecars get SIGTERM (SIGKILL
   * after the grace period) and the pod's phase follows the main containers only. Containers
   * of another image are simulated in place: an init container completes at once, a main
   * container runs for the pod's simulated duration and exits with its simulated code.
   */
  private async advanceExecutedPod(pod: V1Pod, t: PodTimes, now: number): Promise<number> {
    const uid = pod.metadata!.uid!;
    const ns = pod.metadata!.namespace!;
    let procs = this.executor.get(uid);
    if (!procs || !t.plans) {
      if (phase(pod) === "Running") {
        // Running before this kubelet started (a restarted sandbox): the process is gone, as
        // a rebooted node's containers are.
        await this.writeTerminated(pod, now, () => ({ exitCode: 137, reason: "ContainerStatusUnknown" }));
        return Number.POSITIVE_INFINITY;
      }
      const due = t.scheduledAt! + this.opts.podStartupMs;
      if (now < due) return due;
      const dir = await this.executor.podDir(uid, ns, name(pod));
      const plans = new Map<string, ProcessPlan>();
      try {
        const all = [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])];
        for (const c of all.filter(isSpillwayContainer))
          plans.set(c.name, await planContainer(pod, c, dir, this.config));
      } catch (e) {
        if (!(e instanceof ContainerConfigError)) throw e;
        await this.writeConfigError(pod, e.message, now);
        return now + CONFIG_RETRY_MS;
      }
      if (!this.running) return Number.POSITIVE_INFINITY;
      t.startedAt = now;
      t.plans = plans;
      procs = this.executor.open(uid, ns, name(pod), dir);
    }
    const plans = t.plans;

    // Init containers, in order.
    for (const c of pod.spec?.initContainers ?? []) {
      const plan = plans.get(c.name);
      if (isSidecar(c)) {
        if (plan) this.executor.run(procs, plan, "sidecar");
        continue;
      }
      if (!plan) continue;
      const proc = procs.containers.get(c.name);
      if (!proc) this.executor.run(procs, plan, "init");
      if (!proc?.exit) {
        await this.writeExecutedStatus(pod, procs, t, now);
        return Number.POSITIVE_INFINITY;
      }
      if (proc.exit.exitCode !== 0) {
        // restartPolicy Never: the pod fails; its sidecars are stopped first.
        if (!procs.done) {
          procs.terminate(graceOf(pod));
          await this.writeExecutedStatus(pod, procs, t, now);
          return Number.POSITIVE_INFINITY;
        }
        await this.writeExecutedStatus(pod, procs, t, now, "Failed");
        return Number.POSITIVE_INFINITY;
      }
    }

    // Main containers, once every executed sidecar is up. A kubelet waits for a sidecar's
    // startupProbe; the sandbox takes its first log line as the sign (the checkpoint agent
    // logs once it has learned the store and handles SIGTERM), waiting at most
    // SIDECAR_STARTUP_MS, so a trainer that finishes at once still has a draining agent.
    if (t.mainsStartedAt === undefined) {
      const waiting = (pod.spec?.initContainers ?? [])
        .filter((c) => isSidecar(c) && plans.has(c.name))
        .map((c) => procs.containers.get(c.name)!)
        .filter((p) => !p.exit && !p.firstOutputAt);
      const upBy = Math.max(0, ...waiting.map((p) => p.startedAt.getTime() + SIDECAR_STARTUP_MS));
      if (waiting.length > 0 && now < upBy) {
        await this.writeExecutedStatus(pod, procs, t, now);
        return upBy;
      }
    }
    if (t.mainsStartedAt === undefined) {
      t.mainsStartedAt = now;
      for (const c of pod.spec?.containers ?? []) {
        const plan = plans.get(c.name);
        if (plan) this.executor.run(procs, plan);
      }
    }
    const simulatedDue = simulatedMains(pod)
      ? t.mainsStartedAt + simDuration(pod, this.opts.jobDurationMs)
      : 0;
    if (!procs.mainsDone || now < simulatedDue) {
      await this.writeExecutedStatus(pod, procs, t, now);
      return now < simulatedDue ? simulatedDue : Number.POSITIVE_INFINITY;
    }
    if (!procs.done) {
      // Training is over: the sidecars (the checkpoint agent) get SIGTERM and drain.
      procs.terminate(graceOf(pod));
      await this.writeExecutedStatus(pod, procs, t, now);
      return Number.POSITIVE_INFINITY;
    }
    const mainsOk = (pod.spec?.containers ?? []).every((c) => this.mainExit(pod, procs, c) === 0);
    await this.writeExecutedStatus(pod, procs, t, now, mainsOk ? "Succeeded" : "Failed");
    return Number.POSITIVE_INFINITY;
  }

  /** A main container's exit code once it has exited (simulated ones: the pod's simulated code). */
  private mainExit(pod: V1Pod, procs: PodProcesses, c: V1Container): number | undefined {
    if (!isSpillwayContainer(c)) return simExitCode(pod);
    return procs.containers.get(c.name)?.exit?.exitCode;
  }

  /**
   * The status of an executed pod from its processes: the phase (given when final, else
   * Pending while initialising and Running once the main containers started), init and main
   * container states. Written only when it changed.
   */
  private async writeExecutedStatus(
    pod: V1Pod,
    procs: PodProcesses,
    t: PodTimes,
    now: number,
    final?: "Succeeded" | "Failed",
  ): Promise<void> {
    const started = t.mainsStartedAt;
    const simulatedDue =
      started === undefined ? undefined : started + simDuration(pod, this.opts.jobDurationMs);
    const stateOf = (c: V1Container, init: boolean): V1ContainerState => {
      const proc = procs.containers.get(c.name);
      if (proc) {
        if (!proc.exit) return { running: { startedAt: proc.startedAt } };
        const { exitCode, finishedAt, signal } = proc.exit;
        return {
          terminated: {
            exitCode,
            reason: exitCode === 0 ? "Completed" : "Error",
            ...(signal ? { signal: SIGNALS[signal] ?? 9 } : {}),
            startedAt: proc.startedAt,
            finishedAt,
          },
        };
      }
      if (isSpillwayContainer(c)) return { waiting: { reason: "PodInitializing" } };
      // Simulated containers of an executed pod.
      const at = new Date(t.startedAt ?? now);
      if (init && !isSidecar(c)) {
        return { terminated: { exitCode: 0, reason: "Completed", startedAt: at, finishedAt: at } };
      }
      if (init) {
        return final
          ? { terminated: { exitCode: 0, reason: "Completed", startedAt: at, finishedAt: new Date(now) } }
          : { running: { startedAt: at } };
      }
      if (started === undefined) return { waiting: { reason: "PodInitializing" } };
      if (now < simulatedDue!) return { running: { startedAt: new Date(started) } };
      const exitCode = simExitCode(pod);
      return {
        terminated: {
          exitCode,
          reason: exitCode === 0 ? "Completed" : "Error",
          startedAt: new Date(started),
          finishedAt: new Date(simulatedDue!),
        },
      };
    };
    const statusOf = (c: V1Container, init: boolean): V1ContainerStatus => {
      const state = stateOf(c, init);
      return {
        name: c.name,
        image: c.image ?? "",
        imageID: "",
        ready: state.running !== undefined,
        restartCount: 0,
        started: state.running !== undefined,
        state,
      };
    };
    const initStatuses = (pod.spec?.initContainers ?? []).map((c) => statusOf(c, true));
    const mainStatuses = (pod.spec?.containers ?? []).map((c) => statusOf(c, false));
    const nextPhase = final ?? (started === undefined ? "Pending" : "Running");
    const current = pod.status ?? {};
    if (
      statusSignature(current.phase, [
        ...(current.initContainerStatuses ?? []),
        ...(current.containerStatuses ?? []),
      ]) === statusSignature(nextPhase, [...initStatuses, ...mainStatuses])
    )
      return;
    const initialized = started !== undefined;
    const running = nextPhase === "Running";
    await this.writePodStatus(pod, (s) => {
      s.phase = nextPhase;
      s.startTime ??= new Date(t.startedAt ?? now);
      s.podIP = "127.0.0.1";
      setPodCondition(
        s,
        initialized
          ? { type: "Initialized", status: "True" }
          : { type: "Initialized", status: "False", reason: "ContainersNotInitialized" },
        now,
      );
      const ready = running
        ? { status: "True" }
        : { status: "False", reason: final ? "PodCompleted" : "ContainersNotReady" };
      setPodCondition(s, { type: "ContainersReady", ...ready }, now);
      setPodCondition(s, { type: "Ready", ...ready }, now);
      if (initStatuses.length > 0) s.initContainerStatuses = initStatuses;
      s.containerStatuses = mainStatuses;
    });
  }

  /** The pod's containers terminated: Succeeded when every exit code is 0, else Failed. */
  private async writeTerminated(
    pod: V1Pod,
    now: number,
    exitOf: (container: string) => { exitCode: number; reason: string; exit?: { finishedAt: Date } },
  ): Promise<void> {
    const exits = (pod.spec?.containers ?? []).map((c) => ({ c, ...exitOf(c.name) }));
    const started = pod.status?.startTime ?? new Date(now);
    const uid = pod.metadata?.uid ?? "";
    await this.writePodCompleted(
      pod,
      exits.map(({ c, exitCode, reason, exit }) => ({
        c,
        exitCode,
        reason,
        startedAt: this.executor.get(uid)?.containers.get(c.name)?.startedAt ?? started,
        finishedAt: exit?.finishedAt ?? new Date(now),
      })),
      now,
    );
  }

  /**
   * A finished pod, as the kubelet reports it: Succeeded when every main container exited 0,
   * else Failed; each container terminated with its exit code and times.
   */
  private async writePodCompleted(
    pod: V1Pod,
    done: { c: V1Container; exitCode: number; reason: string; startedAt: Date; finishedAt: Date }[],
    now: number,
  ): Promise<void> {
    await this.writePodStatus(pod, (s) => {
      s.phase = done.every((d) => d.exitCode === 0) ? "Succeeded" : "Failed";
      setPodCondition(s, { type: "Ready", status: "False", reason: "PodCompleted" }, now);
      setPodCondition(s, { type: "ContainersReady", status: "False", reason: "PodCompleted" }, now);
      s.containerStatuses = done.map(({ c, exitCode, reason, startedAt, finishedAt }) => ({
        name: c.name,
        image: c.image ?? "",
        imageID: "",
        ready: false,
        restartCount: 0,
        started: false,
        state: { terminated: { exitCode, reason, startedAt, finishedAt } },
      }));
    });
  }

  /** The container cannot be configured (a missing Secret): Pending, waiting, as the kubelet reports it. */
  private async writeConfigError(pod: V1Pod, message: string, now: number): Promise<void> {
    const current = pod.status?.containerStatuses?.[0]?.state?.waiting;
    if (current?.reason === "CreateContainerConfigError" && current.message === message) return;
    await this.writePodStatus(pod, (s) => {
      s.phase = "Pending";
      setPodCondition(s, { type: "Initialized", status: "True" }, now);
      setPodCondition(s, { type: "ContainersReady", status: "False", reason: "ContainersNotReady" }, now);
      setPodCondition(s, { type: "Ready", status: "False", reason: "ContainersNotReady" }, now);
      s.containerStatuses = (pod.spec?.containers ?? []).map((c) => ({
        name: c.name,
        image: c.image ?? "",
        imageID: "",
        ready: false,
        restartCount: 0,
        started: false,
        state: { waiting: { reason: "CreateContainerConfigError", message } },
      }));
    });
  }

  /** A Secret's or ConfigMap's data, decoded; undefined when it does not exist. */
  private async readData(
    kind: "Secret" | "ConfigMap",
    namespace: string,
    objName: string,
  ): Promise<Record<string, string> | undefined> {
    try {
      if (kind === "ConfigMap") {
        const cm = await this.core.readNamespacedConfigMap({ name: objName, namespace });
        const out: Record<string, string> = { ...(cm.data ?? {}) };
        for (const [k, v] of Object.entries(cm.binaryData ?? {}))
          out[k] ??= Buffer.from(v, "base64").toString("utf8");
        return out;
      }
      const secret = await this.core.readNamespacedSecret({ name: objName, namespace });
      const out: Record<string, string> = {};
      for (const [k, v] of Object.entries(secret.data ?? {}))
        out[k] = Buffer.from(v, "base64").toString("utf8");
      for (const [k, v] of Object.entries(secret.stringData ?? {})) out[k] = v;
      return out;
    } catch (e) {
      if (isCode(e, 404)) return undefined;
      throw e;
    }
  }

  /**
   * Deletes a pod. A pod whose processes still run is first marked for graceful deletion
   * and its processes get SIGTERM (SIGKILL after the grace period); the object goes in the
   * pass after they have exited (each exit triggers a pass).
   */
  private async deletePod(pod: V1Pod): Promise<void> {
    const uid = pod.metadata?.uid ?? "";
    const procs = this.executor.get(uid);
    if (procs && !procs.done) {
      const grace =
        pod.metadata?.deletionGracePeriodSeconds ??
        pod.spec?.terminationGracePeriodSeconds ??
        DEFAULT_GRACE_SECONDS;
      if (!pod.metadata?.deletionTimestamp) {
        try {
          await this.core.deleteNamespacedPod({
            name: name(pod),
            namespace: pod.metadata!.namespace!,
            gracePeriodSeconds: grace,
          });
        } catch (e) {
          if (!isCode(e, 404)) throw e;
        }
      }
      procs.terminate(grace);
      return;
    }
    try {
      await this.core.deleteNamespacedPod({
        name: name(pod),
        namespace: pod.metadata!.namespace!,
        gracePeriodSeconds: 0,
      });
    } catch (e) {
      if (!isCode(e, 404)) throw e;
    }
    this.times.delete(uid);
    if (procs) await this.executor.forget(uid);
  }

  /** Processes of pods that no longer exist (deleted at once): terminated, then forgotten. */
  private async reapVanished(live: Set<string>): Promise<void> {
    for (const uid of this.executor.uids()) {
      if (live.has(uid)) continue;
      const procs = this.executor.get(uid)!;
      if (procs.done) await this.executor.forget(uid);
      else procs.terminate(DEFAULT_GRACE_SECONDS);
    }
  }
}

// ---------------------------------------------------------------- helpers

/** A native sidecar: an init container with `restartPolicy: Always` (Kubernetes 1.29+). */
function isSidecar(c: V1Container): boolean {
  return c.restartPolicy === "Always";
}

/** Whether a pod has main containers the kubelet simulates (not of the Spillway image). */
function simulatedMains(p: V1Pod): boolean {
  return (p.spec?.containers ?? []).some((c) => !isSpillwayContainer(c));
}

/** Phase and each container's state kind and exit code: what a status write would change. */
function statusSignature(phase: string | undefined, statuses: V1ContainerStatus[]): string {
  return JSON.stringify([
    phase,
    ...statuses.map((c) => [
      c.name,
      c.state?.terminated ? "terminated" : c.state?.running ? "running" : "waiting",
      c.state?.terminated?.exitCode,
    ]),
  ]);
}

function graceOf(p: V1Pod): number {
  return p.spec?.terminationGracePeriodSeconds ?? DEFAULT_GRACE_SECONDS;
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGABRT: 6, SIGKILL: 9, SIGTERM: 15 };

function name(o: { metadata?: { name?: string } }): string {
  return o.metadata?.name ?? "";
}

function phase(p: V1Pod): string {
  return p.status?.phase ?? "Pending";
}

function isTerminal(p: V1Pod): boolean {
  const ph = phase(p);
  return ph === "Succeeded" || ph === "Failed";
}

function creationMs(o: V1Pod): number {
  const t = o.metadata?.creationTimestamp;
  return t ? new Date(t).getTime() : 0;
}

function controllerJobUid(p: V1Pod): string | undefined {
  return p.metadata?.ownerReferences?.find((r) => r.controller && r.kind === "Job")?.uid;
}

function podsOf(job: V1Job, pods: V1Pod[]): V1Pod[] {
  const uid = job.metadata?.uid;
  return pods.filter((p) => controllerJobUid(p) === uid);
}

function indexOf(p: V1Pod): number {
  const raw = p.metadata?.annotations?.[COMPLETION_INDEX] ?? p.metadata?.labels?.[COMPLETION_INDEX];
  const n = raw === undefined ? Number.NaN : Number(raw);
  return Number.isInteger(n) ? n : -1;
}

function quantity(q: unknown): number {
  const n = Number(q ?? 0);
  return Number.isFinite(n) ? n : 0;
}

export function podGpus(p: V1Pod): number {
  let total = 0;
  for (const c of p.spec?.containers ?? []) {
    const r = c.resources;
    total += quantity(r?.limits?.[GPU_RESOURCE] ?? r?.requests?.[GPU_RESOURCE]);
  }
  return total;
}

function isNodeReady(n: V1Node): boolean {
  return n.status?.conditions?.find((c) => c.type === "Ready")?.status === "True";
}

function nodeGpus(n: V1Node): number {
  return quantity(n.status?.allocatable?.[GPU_RESOURCE] ?? n.status?.capacity?.[GPU_RESOURCE]);
}

function failedCount(pods: V1Pod[]): number {
  return pods.filter((p) => phase(p) === "Failed").length;
}

function backoffLimit(job: V1Job): number {
  return job.spec?.backoffLimit ?? 6;
}

function deadlineMs(job: V1Job): number | undefined {
  const secs = job.spec?.activeDeadlineSeconds;
  const start = job.status?.startTime?.getTime();
  return secs === undefined || start === undefined ? undefined : start + secs * 1000;
}

function exceededDeadline(job: V1Job, now: number): boolean {
  const d = deadlineMs(job);
  return d !== undefined && now >= d;
}

function isFinished(job: V1Job): boolean {
  return (job.status?.conditions ?? []).some(
    (c) => (c.type === "Complete" || c.type === "Failed") && c.status === "True",
  );
}

function finish(
  status: NonNullable<V1Job["status"]>,
  type: "Complete" | "Failed",
  reason: string,
  message: string,
  now: number,
): void {
  const at = new Date(now);
  const extra: V1JobCondition = {
    type: type === "Complete" ? "SuccessCriteriaMet" : "FailureTarget",
    status: "True",
    reason,
    message,
    lastProbeTime: at,
    lastTransitionTime: at,
  };
  const main: V1JobCondition = { ...extra, type };
  status.conditions = [
    ...(status.conditions ?? []).filter((c) => c.type !== type && c.type !== extra.type),
    extra,
    main,
  ];
}

function condition(p: V1Pod, type: string): V1PodCondition | undefined {
  return p.status?.conditions?.find((c) => c.type === type);
}

function setPodCondition(
  s: NonNullable<V1Pod["status"]>,
  c: { type: string; status: string; reason?: string; message?: string },
  now: number,
): void {
  const conditions = s.conditions ?? [];
  const existing = conditions.find((x) => x.type === c.type);
  const changed = !existing || existing.status !== c.status;
  const next: V1PodCondition = {
    ...c,
    lastProbeTime: undefined,
    lastTransitionTime: changed ? new Date(now) : existing.lastTransitionTime,
  };
  s.conditions = [...conditions.filter((x) => x.type !== c.type), next];
}

function simSetting(p: V1Pod, annotation: string, env: string): string | undefined {
  const a = p.metadata?.annotations?.[annotation];
  if (a !== undefined) return a;
  return p.spec?.containers?.[0]?.env?.find((e) => e.name === env)?.value;
}

function simDuration(p: V1Pod, fallback: number): number {
  const raw = simSetting(p, SIM_DURATION_ANNOTATION, SIM_DURATION_ENV);
  if (raw === undefined) return fallback;
  try {
    return parseDuration(raw);
  } catch {
    return fallback;
  }
}

function simExitCode(p: V1Pod): number {
  const raw = simSetting(p, SIM_EXIT_CODE_ANNOTATION, SIM_EXIT_CODE_ENV);
  const n = raw === undefined ? 0 : Number(raw);
  return Number.isInteger(n) ? n : 1;
}

/** `[0,1,2,5,7,8]` → `"0-2,5,7-8"`, the Job API's completedIndexes format. */
export function formatIndexes(indexes: number[]): string {
  const sorted = [...new Set(indexes)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    parts.push(j === i ? String(sorted[i]) : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(",");
}

function isCode(e: unknown, code: number): boolean {
  return e instanceof ApiException && e.code === code;
}
