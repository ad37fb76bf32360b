/**
 * The ProvisionedCluster controller: turns a ProvisionedCluster (created by placement when a
 * run needs a cluster on an alternative) into a running cluster through the Provisioner port,
 * and tears it down again — never leaving cloud resources behind.
 *
 * - **Finalizer first**: `spillway.dev/destroy-stack` is added before any cloud resource
 *   exists, and removed only after `destroy` succeeded. A failed destroy stays visible
 *   (phase Destroying, `Ready=False DestroyFailed`, `destroyAttempts`, a Warning Event) and is
 *   retried with backoff for as long as it takes.
 * - **Phases**: Pending → Provisioning (with `lastOperation.message` following the engine's
 *   progress) → Ready (outputs in status, the kubeconfig only in a Secret of the operator's
 *   namespace) → Destroying; Failed when provisioning cannot succeed (quota, capacity, bad
 *   config, or transient errors past `maxUpAttempts`), so placement tries the next
 *   alternative. Conditions: Ready, Reconciling, Stalled (kstatus, as the Pulumi Kubernetes
 *   Operator).
 * - **Restart**: the stack name is the object's, so a second `up` is the same stack, not a
 *   second cluster; an operation recorded as InProgress when a reconcile starts was cut short
 *   (the operator died), so its stale lock is cancelled before the next operation.
 * - **Usage and idle TTL**: the runs placed on the cluster (from the TrainingRun cache) give
 *   `runs`, `freeGpus` and `idleSince`; a Ready or Failed cluster idle longer than the
 *   provider's `idleTTL` is deleted, which runs the finalizer.
 */
import { createHash } from "node:crypto";
import type {
  CloudProvider,
  ProvisionedCluster,
  ProvisionedClusterStatus,
  TrainingRun,
} from "../../api/v1alpha1/index.ts";
import {
  ProvisionError,
  type Provisioner,
  type ProvisionOutputs,
  type ProvisionProgress,
  type ProvisionRequest,
} from "../../ports/provisioner.ts";
import { isNotFound } from "../../runtime/client.ts";
import { type ConditionUpdate, setCondition, timestamp } from "../../runtime/conditions.ts";
import { Controller, type ReconcileContext, type ReconcileResult } from "../../runtime/controller.ts";
import { safeMessage } from "../../runtime/events.ts";
import { type KubeObject, Resources, SpillwayResources } from "../../runtime/resources.ts";
import { parseDuration } from "../../util/duration.ts";
import type { OperatorContext } from "../context.ts";
import { readSecret } from "../context.ts";

type PC = ProvisionedCluster & KubeObject;
type Run = TrainingRun & KubeObject;

export const FINALIZER = "spillway.dev/destroy-stack";
/** On the kubeconfig Secret: which ProvisionedCluster it belongs to. */
export const LABEL_CLUSTER = "spillway.dev/provisioned-cluster";
export const KUBECONFIG_KEY = "kubeconfig";
const DEFAULT_IDLE_TTL = "30m";

export interface ProvisionedClusterControllerOptions {
  /**
   * The provisioner for every cluster. Default: `ctx.provisionerFor(provider)` (one per
   * CloudProvider, e.g. per state backend).
   */
  provisioner?: Provisioner;
  /** Parallel reconciles; each `up`/`destroy` holds one for its whole duration. Default 4. */
  concurrency?: number;
  /** Attempts of `up` on retryable errors before the cluster is Failed. Default 5. */
  maxUpAttempts?: number;
  /** Least time between two progress writes to status during an operation. Default 2 s. */
  progressIntervalMs?: number;
  /** Retry backoff of the controller's queue (failed destroys, transient errors). */
  backoff?: { baseMs: number; maxMs: number; jitter?: number };
}

/** Builds the controller; the caller (the manager) starts it with the others. */
export function provisionedClusterController(
  ctx: OperatorContext,
  opts: ProvisionedClusterControllerOptions = {},
): Controller {
  // Retry schedule of `up` per cluster. Kept here rather than in the queue's backoff: this
  // controller's own status writes re-enqueue the key at once, which would skip a backoff.
  const upRetries: UpRetries = new Map();
  const controller = new Controller({
    name: "provisionedcluster",
    reconcile: (key, rc) => reconcileCluster(ctx, opts, upRetries, key, rc),
    concurrency: opts.concurrency ?? 4,
    backoff: opts.backoff ?? { baseMs: 2_000, maxMs: 300_000, jitter: 0.2 },
    logContext: (key) => ({ cluster: key }),
    logger: ctx.log,
    metrics: ctx.metrics,
  });
  controller.watch(ctx.caches.clusters);
  // Runs placed on (or leaving) a cluster change its usage and idle time.
  controller.watch(ctx.caches.runs, (run) => {
    const cluster = run.status?.placement?.cluster;
    return cluster && ctx.caches.clusters.get(cluster) ? [cluster] : [];
  });
  // A provider's config, secret reference or idle TTL apply to all of its clusters.
  controller.watch(ctx.caches.providers, (p) =>
    ctx.caches.clusters
      .list()
      .filter((pc) => pc.spec.provider === p.metadata.name)
      .map((pc) => pc.metadata.name ?? ""),
  );
  // A deleted kubeconfig Secret is written again.
  controller.watch(ctx.caches.secrets, (s) => {
    const owner = s.metadata.labels?.[LABEL_CLUSTER];
    return owner ? [owner] : [];
  });
  return controller;
}

/** `registerProvisionedClusterController(ctx, provisioner)`: the same, with the provisioner given. */
export function registerProvisionedClusterController(
  ctx: OperatorContext,
  provisioner?: Provisioner,
  opts: Omit<ProvisionedClusterControllerOptions, "provisioner"> = {},
): Controller {
  return provisionedClusterController(ctx, { ...opts, ...(provisioner ? { provisioner } : {}) });
}

// ---------------------------------------------------------------------------------------

/** Name of the Secret holding a cluster's kubeconfig (a DNS subdomain, ≤ 253 characters). */
export function kubeconfigSecretName(cluster: string): string {
  const name = `${cluster}-kubeconfig`;
  if (name.length <= 253) return name;
  const h = createHash("sha256").update(cluster).digest("hex").slice(0, 10);
  return `${cluster.slice(0, 253 - 11 - h.length).replace(/[.-]+$/, "")}-${h}-kubeconfig`;
}

/** GPUs of the cluster's node pools. */
export function totalGpus(pc: ProvisionedCluster): number {
  return pc.spec.nodePools.reduce((sum, p) => sum + p.nodes * p.gpusPerNode, 0);
}

function runGpus(run: TrainingRun): number {
  return (run.spec.resources.nodes ?? 1) * run.spec.resources.gpu.count;
}

/** Runs placed on this cluster that still hold it: not finished, not being deleted. */
export function runsOn(
  pc: ProvisionedCluster,
  runs: readonly Run[],
): NonNullable<ProvisionedClusterStatus["runs"]> {
  return runs
    .filter(
      (r) =>
        !r.metadata.deletionTimestamp &&
        r.status?.phase !== "Succeeded" &&
        r.status?.phase !== "Failed" &&
        r.status?.placement?.provider === pc.spec.provider &&
        r.status.placement.cluster === pc.metadata.name,
    )
    .map((r) => ({
      namespace: r.metadata.namespace ?? "",
      name: r.metadata.name ?? "",
      uid: r.metadata.uid ?? "",
      gpus: runGpus(r),
    }))
    .sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`));
}

/**
 * Secret stack configuration from the provider's `secretConfigRef`: with a `key`, that one
 * entry as `{key: value}`; without, every entry. Secret keys cannot hold ':', so the first '.'
 * of a key stands for it (`oci.privateKey` → `oci:privateKey`); a key without either is a
 * key of the program's own project.
 */
export function secretConfigFrom(data: Record<string, string>, key?: string): Record<string, string> {
  const entries = key ? (data[key] !== undefined ? [[key, data[key]!] as const] : []) : Object.entries(data);
  const out: Record<string, string> = {};
  for (const [k, v] of entries) {
    const dot = k.indexOf(".");
    out[k.includes(":") || dot < 0 ? k : `${k.slice(0, dot)}:${k.slice(dot + 1)}`] = v;
  }
  return out;
}

export function provisionRequest(
  pc: ProvisionedCluster,
  secretConfig: Record<string, string>,
): ProvisionRequest {
  return {
    stackName: pc.spec.stackName,
    program: pc.spec.program,
    provider: pc.spec.provider,
    region: pc.spec.region,
    nodePools: pc.spec.nodePools.map((p) => ({ ...p })),
    config: { ...(pc.spec.config ?? {}) },
    secretConfig,
  };
}

// ---------------------------------------------------------------------------------------

type UpRetries = Map<string, { failures: number; notBefore: number }>;

const DEFAULT_BACKOFF = { baseMs: 2_000, maxMs: 300_000 };

/** Nominal exponential backoff (no jitter: a schedule recomputed from status must not move). */
export function retryDelayMs(
  failures: number,
  backoff: { baseMs: number; maxMs: number } = DEFAULT_BACKOFF,
): number {
  return Math.min(backoff.maxMs, backoff.baseMs * 2 ** Math.min(Math.max(0, failures - 1), 30));
}

class Reconcile {
  private pc: PC;
  private readonly provider: (CloudProvider & KubeObject) | undefined;
  private status: ProvisionedClusterStatus;

  constructor(
    private readonly ctx: OperatorContext,
    private readonly opts: ProvisionedClusterControllerOptions,
    private readonly upRetries: UpRetries,
    pc: PC,
    private readonly rc: ReconcileContext,
  ) {
    this.pc = pc;
    this.provider = ctx.caches.providers.get(pc.spec.provider);
    this.status = structuredClone(pc.status ?? {});
  }

  private get name(): string {
    return this.pc.metadata.name ?? "";
  }

  private now(): number {
    return this.ctx.now().getTime();
  }

  private retryDelay(failures: number): number {
    return retryDelayMs(failures, this.opts.backoff ?? DEFAULT_BACKOFF);
  }

  private provisioner(): Provisioner | undefined {
    return this.opts.provisioner ?? (this.provider ? this.ctx.provisionerFor(this.provider) : undefined);
  }

  /** The request, with secret config read from the provider's Secret (none if it is gone). */
  private request(): ProvisionRequest {
    const ref = this.provider?.spec.cluster.provision?.secretConfigRef;
    const data = ref ? readSecret(this.ctx, ref) : undefined;
    return provisionRequest(this.pc, data ? secretConfigFrom(data, ref?.key) : {});
  }

  private condition(update: Omit<ConditionUpdate, "observedGeneration">): void {
    this.status.conditions ??= [];
    setCondition(
      this.status.conditions,
      {
        ...update,
        message: safeMessage(update.message ?? ""),
        observedGeneration: this.pc.metadata.generation,
      },
      this.now(),
    );
  }

  /** Writes status when it changed (merge patch of the status subresource: no lost updates). */
  private async writeStatus(): Promise<void> {
    this.status.observedGeneration = this.pc.metadata.generation;
    if (JSON.stringify(this.status) === JSON.stringify(this.pc.status ?? {})) return;
    const patch: Record<string, unknown> = { ...this.status };
    // Merge patch removes a field only when told so with null.
    for (const k of ["idleSince", "lastOperation"] as const)
      if (this.status[k] === undefined) patch[k] = null;
    this.pc = await this.ctx.mgmt.patch<PC>(
      SpillwayResources.ProvisionedCluster,
      this.name,
      undefined,
      { status: patch },
      "merge",
      { subresource: "status" },
    );
  }

  private event(type: "Normal" | "Warning", reason: string, message: string): void {
    this.ctx.events.record(this.pc, type, reason, safeMessage(message));
  }

  // --- the top level ---

  async run(): Promise<ReconcileResult | undefined> {
    if (this.pc.metadata.deletionTimestamp) return this.teardown();
    if (!this.pc.metadata.finalizers?.includes(FINALIZER)) await this.addFinalizer();
    this.observeUsage();
    const result = await this.converge();
    await this.writeStatus();
    return result;
  }

  private async addFinalizer(): Promise<void> {
    // Before any cloud resource exists, so none can outlive the object.
    this.pc = await this.ctx.mgmt.update<PC>(SpillwayResources.ProvisionedCluster, {
      ...this.pc,
      metadata: { ...this.pc.metadata, finalizers: [...(this.pc.metadata.finalizers ?? []), FINALIZER] },
    });
  }

  private observeUsage(): void {
    const runs = runsOn(this.pc, this.ctx.caches.runs.list());
    const total = totalGpus(this.pc);
    const used = runs.reduce((s, r) => s + r.gpus, 0);
    this.status.runs = runs;
    this.status.totalGpus = total;
    this.status.freeGpus = Math.max(0, total - used);
    const phase = this.status.phase;
    if (runs.length > 0 || (phase !== "Ready" && phase !== "Failed")) delete this.status.idleSince;
    else this.status.idleSince ??= timestamp(this.now());
  }

  private async converge(): Promise<ReconcileResult | undefined> {
    const phase = this.status.phase;
    const failedThisGeneration =
      phase === "Failed" && (this.pc.status?.observedGeneration ?? 0) === (this.pc.metadata.generation ?? 0);
    if (failedThisGeneration) return this.idleCheck();
    if (phase === "Ready" && (await this.kubeconfigStored())) return this.idleCheck();

    const provisioner = this.provisioner();
    if (!this.provider?.spec.cluster.provision || !provisioner) {
      const why = !this.provider
        ? `CloudProvider ${this.pc.spec.provider} does not exist`
        : !this.provider.spec.cluster.provision
          ? `CloudProvider ${this.pc.spec.provider} does not provision clusters`
          : `no provisioner for CloudProvider ${this.pc.spec.provider}`;
      this.status.phase ??= "Pending";
      this.condition({ type: "Ready", status: "False", reason: "ProviderUnavailable", message: why });
      this.condition({ type: "Reconciling", status: "False", reason: "ProviderUnavailable", message: why });
      return undefined; // the provider watch brings us back
    }

    // Ready, but the kubeconfig Secret is gone: the stack's outputs have it, no `up` needed.
    if (phase === "Ready") {
      const outputs = await provisioner.outputs(this.request()).catch(() => undefined);
      if (outputs) {
        await this.storeOutputs(outputs);
        return this.idleCheck();
      }
    }
    return this.provision(provisioner);
  }

  private async kubeconfigStored(): Promise<boolean> {
    const ref = this.status.outputs?.kubeconfigSecretRef;
    if (!ref) return false;
    if (this.ctx.caches.secrets.get(`${this.ctx.settings.namespace}/${ref.name}`)) return true;
    // The cache may not have seen the Secret written a moment ago: ask before re-reading outputs.
    return !!(await this.ctx.mgmt.tryGet(Resources.Secret, ref.name, this.ctx.settings.namespace));
  }

  // --- up ---

  private async provision(provisioner: Provisioner): Promise<ReconcileResult | undefined> {
    const scheduled = this.upRetries.get(this.name);
    if (scheduled && this.now() < scheduled.notBefore)
      return { requeueAfter: scheduled.notBefore - this.now() };
    const req = this.request();
    await this.clearStaleLock(provisioner, req);
    const attempt = (scheduled?.failures ?? 0) + 1;
    const max = this.opts.maxUpAttempts ?? 5;
    this.status.phase = "Provisioning";
    this.status.lastOperation = { type: "Up", startedAt: timestamp(this.now()), result: "InProgress" };
    this.condition({
      type: "Ready",
      status: "False",
      reason: "Provisioning",
      message: `pulumi up of stack ${req.stackName} (attempt ${attempt} of ${max})`,
    });
    this.condition({ type: "Reconciling", status: "True", reason: "Provisioning", message: "pulumi up" });
    this.condition({ type: "Stalled", status: "False", reason: "Provisioning", message: "" });
    await this.writeStatus();
    if (attempt === 1) this.event("Normal", "Provisioning", `pulumi up of stack ${req.stackName}`);

    let outputs: ProvisionOutputs;
    const progress = this.progressWriter();
    try {
      outputs = await provisioner.up(req, progress.report, this.rc.signal);
    } catch (err) {
      await progress.flush();
      return this.upFailed(err, attempt, max, provisioner, req);
    }
    await progress.flush();
    this.upRetries.delete(this.name);
    this.status.lastOperation = {
      ...this.status.lastOperation!,
      finishedAt: timestamp(this.now()),
      result: "Succeeded",
      message: "stack is up",
    };
    await this.storeOutputs(outputs);
    this.event("Normal", "Provisioned", `cluster ${outputs.clusterId} is ready in ${outputs.region}`);
    return this.idleCheck();
  }

  private async upFailed(
    err: unknown,
    attempt: number,
    max: number,
    provisioner: Provisioner,
    req: ProvisionRequest,
  ): Promise<ReconcileResult | undefined> {
    const e =
      err instanceof ProvisionError
        ? err
        : new ProvisionError(
            "ProviderError",
            `up: ${err instanceof Error ? err.message : String(err)}`,
            true,
          );
    this.status.lastOperation = {
      ...this.status.lastOperation!,
      finishedAt: timestamp(this.now()),
      result: "Failed",
      message: safeMessage(e.message),
    };
    // Quota and capacity fail at once: placement moves to the next alternative rather than
    // wait here. A stale lock is cleared and retried; other retryable errors are retried
    // with backoff up to maxUpAttempts.
    const retry =
      e.reason === "StackLocked" ||
      (e.retryable && e.reason !== "NoCapacity" && e.reason !== "QuotaExceeded" && attempt < max);
    if (retry) {
      // With one active operator (leader election), a lock our own up ran into is stale.
      if (e.reason === "StackLocked") await this.cancelLock(provisioner, req);
      const delay = this.retryDelay(attempt);
      this.upRetries.set(this.name, { failures: attempt, notBefore: this.now() + delay });
      this.condition({ type: "Ready", status: "False", reason: e.reason, message: e.message });
      this.event("Warning", "ProvisionRetrying", `attempt ${attempt} of ${max}: ${e.message}`);
      this.rc.log.warn("pulumi up failed; retrying", { reason: e.reason, attempt, retryInMs: delay });
      return { requeueAfter: delay };
    }
    this.upRetries.delete(this.name);
    this.status.phase = "Failed";
    this.condition({ type: "Ready", status: "False", reason: e.reason, message: e.message });
    this.condition({ type: "Reconciling", status: "False", reason: e.reason, message: "" });
    this.condition({ type: "Stalled", status: "True", reason: e.reason, message: e.message });
    this.event("Warning", "ProvisionFailed", e.message);
    this.observeUsage();
    return this.idleCheck();
  }

  private async storeOutputs(outputs: ProvisionOutputs): Promise<void> {
    const secretName = kubeconfigSecretName(this.name);
    await this.ctx.mgmt.apply(Resources.Secret, {
      apiVersion: "v1",
      kind: "Secret",
      metadata: {
        name: secretName,
        namespace: this.ctx.settings.namespace,
        labels: { [LABEL_CLUSTER]: this.name },
        // Garbage-collected with the cluster object even if the finalizer's own delete is missed.
        ownerReferences: [
          {
            apiVersion: this.pc.apiVersion ?? "spillway.dev/v1alpha1",
            kind: "ProvisionedCluster",
            name: this.name,
            uid: this.pc.metadata.uid ?? "",
          },
        ],
      },
      type: "Opaque",
      data: { [KUBECONFIG_KEY]: Buffer.from(outputs.kubeconfig, "utf8").toString("base64") },
    } as KubeObject);
    this.status.phase = "Ready";
    this.status.outputs = {
      clusterId: outputs.clusterId,
      kubeconfigSecretRef: { name: secretName, namespace: this.ctx.settings.namespace, key: KUBECONFIG_KEY },
      ...(outputs.bucket ? { bucket: outputs.bucket } : {}),
      ...(outputs.s3Endpoint ? { s3Endpoint: outputs.s3Endpoint } : {}),
    };
    this.condition({
      type: "Ready",
      status: "True",
      reason: "Provisioned",
      message: `cluster ${outputs.clusterId}`,
    });
    this.condition({ type: "Reconciling", status: "False", reason: "Provisioned", message: "" });
    this.condition({ type: "Stalled", status: "False", reason: "Provisioned", message: "" });
    this.observeUsage();
  }

  private async cancelLock(provisioner: Provisioner, req: ProvisionRequest): Promise<void> {
    try {
      await provisioner.cancel(req);
      this.event("Normal", "StaleLockCleared", `stack ${req.stackName} was locked; the lock was cleared`);
    } catch (err) {
      this.rc.log.warn("could not clear the stack's lock", { err });
    }
  }

  /**
   * An operation still InProgress in status when a reconcile starts was cut short (the
   * operator died or the reconcile was aborted): its lock is stale. The provisioner ignores
   * `cancel` for a stack it is itself working on.
   */
  private async clearStaleLock(provisioner: Provisioner, req: ProvisionRequest): Promise<void> {
    if (this.status.lastOperation?.result !== "InProgress") return;
    const was = this.status.lastOperation.type;
    await provisioner.cancel(req);
    this.status.lastOperation = {
      type: "Cancel",
      startedAt: timestamp(this.now()),
      finishedAt: timestamp(this.now()),
      result: "Succeeded",
      message: `cleared the lock of an interrupted ${was}`,
    };
    this.event("Normal", "StaleLockCleared", `the ${was} in progress was interrupted; its lock was cleared`);
  }

  /** Progress into `lastOperation.message`, at most every progressIntervalMs, in order. */
  private progressWriter(): { report: (p: ProvisionProgress) => void; flush: () => Promise<void> } {
    let chain: Promise<void> = Promise.resolve();
    let lastWrite = 0;
    const interval = this.opts.progressIntervalMs ?? 2_000;
    return {
      report: (p) => {
        const counts =
          p.resourcesTotal !== undefined ? ` (${p.resourcesDone ?? 0}/${p.resourcesTotal} resources)` : "";
        if (this.status.lastOperation)
          this.status.lastOperation.message = safeMessage(`${p.message}${counts}`);
        const now = this.now();
        if (now - lastWrite < interval) return;
        lastWrite = now;
        chain = chain.then(() => this.writeStatus()).catch(() => undefined);
      },
      flush: () => chain,
    };
  }

  // --- idle TTL ---

  private idleTtlMs(): number {
    const text = this.provider?.spec.cluster.provision?.idleTTL ?? DEFAULT_IDLE_TTL;
    try {
      return parseDuration(text);
    } catch {
      return parseDuration(DEFAULT_IDLE_TTL);
    }
  }

  private async idleCheck(): Promise<ReconcileResult | undefined> {
    const since = this.status.idleSince;
    if (!since) return undefined;
    const ttl = this.idleTtlMs();
    const left = Date.parse(since) + ttl - this.now();
    if (left > 0) return { requeueAfter: left + 1_000 };
    await this.writeStatus();
    this.event("Normal", "IdleTimeout", `no run has used the cluster since ${since}; destroying it`);
    try {
      await this.ctx.mgmt.delete(SpillwayResources.ProvisionedCluster, this.name, undefined, {
        uid: this.pc.metadata.uid,
      });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    return undefined;
  }

  // --- destroy ---

  private async teardown(): Promise<ReconcileResult | undefined> {
    if (!this.pc.metadata.finalizers?.includes(FINALIZER)) return undefined;
    const provisioner = this.provisioner();
    if (!provisioner) {
      // Without a provisioner nothing can be destroyed: keep the finalizer and say why.
      this.status.phase = "Destroying";
      this.condition({
        type: "Ready",
        status: "False",
        reason: "DestroyBlocked",
        message: `CloudProvider ${this.pc.spec.provider} is gone; recreate it so stack ${this.pc.spec.stackName} can be destroyed`,
      });
      await this.writeStatus();
      return { requeueAfter: 60_000 };
    }
    // A failed destroy is retried on a schedule computed from status (so it holds across
    // restarts and is not shortened by the watch events of our own status writes).
    const failures = this.status.destroyAttempts ?? 0;
    const last = this.status.lastOperation;
    if (failures > 0 && last?.type === "Destroy" && last.result === "Failed" && last.finishedAt) {
      const due = Date.parse(last.finishedAt) + this.retryDelay(failures);
      if (this.now() < due) return { requeueAfter: due - this.now() };
    }
    // With the provider gone the secret config is empty: the stack's own config (kept in its
    // workspace from the last `up`) still holds the credentials `destroy` needs.
    const req = this.request();
    await this.clearStaleLock(provisioner, req);
    this.status.phase = "Destroying";
    this.status.lastOperation = { type: "Destroy", startedAt: timestamp(this.now()), result: "InProgress" };
    // A retry keeps the failure visible until a destroy succeeds.
    const failedBefore = this.status.destroyAttempts ?? 0;
    this.condition(
      failedBefore > 0
        ? {
            type: "Ready",
            status: "False",
            reason: "DestroyFailed",
            message: `retrying pulumi destroy of ${req.stackName} after ${failedBefore} failed attempts`,
          }
        : {
            type: "Ready",
            status: "False",
            reason: "Destroying",
            message: `pulumi destroy of ${req.stackName}`,
          },
    );
    this.condition({ type: "Reconciling", status: "True", reason: "Destroying", message: "pulumi destroy" });
    await this.writeStatus();
    if ((this.status.destroyAttempts ?? 0) === 0)
      this.event("Normal", "Destroying", `pulumi destroy of ${req.stackName}`);

    const progress = this.progressWriter();
    try {
      await provisioner.destroy(req, progress.report);
    } catch (err) {
      await progress.flush();
      const e =
        err instanceof ProvisionError
          ? err
          : new ProvisionError(
              "ProviderError",
              `destroy: ${err instanceof Error ? err.message : String(err)}`,
              true,
            );
      this.status.destroyAttempts = (this.status.destroyAttempts ?? 0) + 1;
      this.status.lastOperation = {
        ...this.status.lastOperation!,
        finishedAt: timestamp(this.now()),
        result: "Failed",
        message: safeMessage(e.message),
      };
      this.condition({
        type: "Ready",
        status: "False",
        reason: "DestroyFailed",
        message: `destroy attempt ${this.status.destroyAttempts} failed (${e.reason}): ${e.message}`,
      });
      await this.writeStatus();
      this.event("Warning", "DestroyFailed", e.message);
      if (e.reason === "StackLocked") await this.cancelLock(provisioner, req);
      // The finalizer stays; destroy is retried with backoff, as long as it takes.
      const delay = this.retryDelay(this.status.destroyAttempts);
      this.rc.log.warn("pulumi destroy failed; retrying", {
        reason: e.reason,
        attempts: this.status.destroyAttempts,
        retryInMs: delay,
      });
      return { requeueAfter: delay };
    }
    await progress.flush();
    this.status.lastOperation = {
      ...this.status.lastOperation!,
      finishedAt: timestamp(this.now()),
      result: "Succeeded",
      message: "stack destroyed",
    };
    await this.writeStatus();
    try {
      await this.ctx.mgmt.delete(
        Resources.Secret,
        kubeconfigSecretName(this.name),
        this.ctx.settings.namespace,
      );
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    this.event("Normal", "Destroyed", `stack ${req.stackName} destroyed`);
    await this.removeFinalizer();
    this.upRetries.delete(this.name);
    return undefined;
  }

  private async removeFinalizer(): Promise<void> {
    // A fresh read: the finalizer list is edited with the object's current version.
    const current = await this.ctx.mgmt.get<PC>(SpillwayResources.ProvisionedCluster, this.name);
    await this.ctx.mgmt.update<PC>(SpillwayResources.ProvisionedCluster, {
      ...current,
      metadata: {
        ...current.metadata,
        finalizers: (current.metadata.finalizers ?? []).filter((f) => f !== FINALIZER),
      },
    });
  }
}

async function reconcileCluster(
  ctx: OperatorContext,
  opts: ProvisionedClusterControllerOptions,
  upRetries: UpRetries,
  key: string,
  rc: ReconcileContext,
): Promise<ReconcileResult | undefined> {
  if (!ctx.caches.clusters.get(key)) return undefined;
  // A fresh read, not the cache: the cache can lag behind this controller's own last status
  // write, and an "Up InProgress" seen from a lagging cache would look like an interrupted
  // operation (cancel, then a needless second up).
  const pc = await ctx.mgmt.tryGet<PC>(SpillwayResources.ProvisionedCluster, key);
  if (!pc) return undefined;
  rc.with({ provider: pc.spec.provider });
  return new Reconcile(ctx, opts, upRetries, pc, rc).run();
}
