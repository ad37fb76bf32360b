/**
 * The sandbox's `Provisioner`: where Pulumi would create an OKE (or AKS) cluster, it stands up
 * a new simulated cluster (an API server with GPU nodes and a kubelet stand-in), after the
 * scenario's provisioning latency, failing as the scenario says (injected failures, the
 * cloud's cluster limit and GPU node capacity).
 *
 * It behaves like a Pulumi stack where the controllers can tell:
 * - `up` is idempotent by stack name; two `up`s of one stack at once share one operation;
 * - an operation in progress holds the stack's lock: `destroy` during `up` (or the reverse)
 *   fails `StackLocked`; an operation killed with the process leaves its lock in the state
 *   file, and only `cancel` clears it (as `pulumi cancel` does);
 * - stacks are recorded in `<stateDir>/stacks.json` and each cluster keeps its objects under
 *   `<stateDir>/clusters/<stack>/`, so a restarted sandbox brings the same clusters back (on
 *   the same port when it is free) and `outputs` finds them.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  ProvisionError,
  type Provisioner,
  type ProvisionFailureReason,
  type ProvisionOutputs,
  type ProvisionProgress,
  type ProvisionRequest,
} from "../ports/provisioner.ts";
import { parseDuration } from "../util/duration.ts";
import { type NodePool, SimulatedCluster } from "./cluster/simulated-cluster.ts";
import type { ScenarioOci } from "./scenario.ts";

export interface SandboxProvisionerOptions {
  /** Where stacks are recorded and provisioned clusters keep their objects. */
  stateDir: string;
  /** The provisioning cloud of the scenario: latencies, failures, limits, default cluster size. */
  cloud: ScenarioOci;
  /** Kubelet timings of the clusters it creates. */
  podStartupMs: number;
  jobDurationMs: number;
  /** The S3-compatible endpoint reported in the outputs (the sandbox's s3rver). */
  s3Endpoint?: string;
  /** Errors of the provisioned clusters' kubelets (retried by them); default ignored. */
  onClusterError?: (stack: string, e: unknown) => void;
}

type StackState = "creating" | "ready" | "destroying";

interface StackRecord {
  stackName: string;
  program: ProvisionRequest["program"];
  provider: string;
  region: string;
  clusterId: string;
  state: StackState;
  pools: NodePool[];
  /** Port of the cluster's API server, reused after a restart when free. */
  port?: number;
  /** Pid of the process whose operation holds the stack's lock. */
  lockPid?: number;
  createdAt: string;
}

interface StateFile {
  version: 1;
  /** `up` calls failed by the scenario's injected failure so far (its `times` counts these). */
  injectedFailures: number;
  stacks: Record<string, StackRecord>;
}

interface Operation {
  kind: "up" | "destroy";
  promise: Promise<unknown>;
  abort: AbortController;
}

const STACK_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

/** Whether retrying the same call later may succeed, per failure reason. */
function retryableReason(reason: ProvisionFailureReason): boolean {
  return reason !== "ConfigInvalid";
}

export class SandboxProvisioner implements Provisioner {
  private readonly clusters = new Map<string, SimulatedCluster>();
  private readonly ops = new Map<string, Operation>();
  private closed = false;

  private constructor(
    private readonly opts: SandboxProvisionerOptions,
    private state: StateFile,
  ) {}

  /**
   * Opens the provisioner on its state directory and brings back the clusters of every
   * stack recorded ready (a restarted sandbox), so their kubeconfigs work again.
   */
  static async open(opts: SandboxProvisionerOptions): Promise<SandboxProvisioner> {
    mkdirSync(join(opts.stateDir, "clusters"), { recursive: true });
    const p = new SandboxProvisioner(opts, readState(join(opts.stateDir, "stacks.json")));
    try {
      for (const rec of Object.values(p.state.stacks)) {
        if (rec.state === "ready" && rec.lockPid === undefined) await p.ensureRunning(rec);
      }
    } catch (e) {
      await p.close();
      throw e;
    }
    return p;
  }

  // ---------------------------------------------------------------- Provisioner

  up(
    req: ProvisionRequest,
    onProgress?: (p: ProvisionProgress) => void,
    signal?: AbortSignal,
  ): Promise<ProvisionOutputs> {
    this.checkOpen();
    checkStackName(req.stackName);
    const inFlight = this.ops.get(req.stackName);
    if (inFlight) {
      if (inFlight.kind === "up") return inFlight.promise as Promise<ProvisionOutputs>;
      return Promise.reject(locked(req.stackName, "a destroy is in progress"));
    }
    return this.runOperation(req.stackName, "up", (abort) =>
      this.doUp(req, onProgress ?? (() => {}), abortedBy(abort, signal)),
    );
  }

  destroy(req: ProvisionRequest, onProgress?: (p: ProvisionProgress) => void): Promise<void> {
    this.checkOpen();
    checkStackName(req.stackName);
    const inFlight = this.ops.get(req.stackName);
    if (inFlight) {
      if (inFlight.kind === "destroy") return inFlight.promise as Promise<void>;
      return Promise.reject(locked(req.stackName, "an update is in progress"));
    }
    return this.runOperation(req.stackName, "destroy", (abort) =>
      this.doDestroy(req, onProgress ?? (() => {}), abort.signal),
    );
  }

  async cancel(req: ProvisionRequest): Promise<void> {
    this.checkOpen();
    const inFlight = this.ops.get(req.stackName);
    if (inFlight) {
      inFlight.abort.abort(new Error("cancelled"));
      await inFlight.promise.catch(() => undefined);
    }
    const rec = this.state.stacks[req.stackName];
    if (rec?.lockPid !== undefined) {
      delete rec.lockPid;
      this.save();
    }
  }

  async outputs(req: ProvisionRequest): Promise<ProvisionOutputs | undefined> {
    this.checkOpen();
    const rec = this.state.stacks[req.stackName];
    if (rec?.state !== "ready") return undefined;
    const cluster = await this.ensureRunning(rec);
    return this.outputsOf(rec, cluster);
  }

  // ---------------------------------------------------------------- for the sandbox and tests

  /** The running simulated cluster of a stack, if any. */
  cluster(stackName: string): SimulatedCluster | undefined {
    return this.clusters.get(stackName);
  }

  /** Stack names recorded (any state), sorted. */
  stacks(): string[] {
    return Object.keys(this.state.stacks).sort();
  }

  /**
   * Stops every provisioned cluster, keeping the stacks recorded (the sandbox stops, the
   * "cloud" keeps its clusters). Operations in progress are aborted and keep their lock.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const op of this.ops.values()) op.abort.abort(new Error("sandbox stopping"));
    await Promise.allSettled([...this.ops.values()].map((op) => op.promise));
    const clusters = [...this.clusters.values()];
    this.clusters.clear();
    await Promise.allSettled(clusters.map((c) => c.stop()));
  }

  // ---------------------------------------------------------------- operations

  private runOperation<T>(
    stackName: string,
    kind: Operation["kind"],
    run: (abort: AbortController) => Promise<T>,
  ): Promise<T> {
    const abort = new AbortController();
    const promise = run(abort).finally(() => this.ops.delete(stackName));
    this.ops.set(stackName, { kind, promise, abort });
    return promise;
  }

  private async doUp(
    req: ProvisionRequest,
    progress: (p: ProvisionProgress) => void,
    signal: AbortSignal,
  ): Promise<ProvisionOutputs> {
    const cloud = this.opts.cloud;
    const existing = this.state.stacks[req.stackName];
    if (existing?.lockPid !== undefined) {
      throw locked(
        req.stackName,
        `an operation of process ${existing.lockPid} did not finish; cancel it first`,
      );
    }
    const pools = this.poolsOf(req);
    const latencyMs = parseDuration(cloud.provisioning.latency);
    if (existing?.state === "ready") {
      const cluster = await this.ensureRunning(existing);
      // Pulumi `up` of an unchanged stack: no changes, same outputs.
      if (JSON.stringify(existing.pools) === JSON.stringify(pools)) return this.outputsOf(existing, cluster);
      return this.updatePools(existing, cluster, pools, progress, signal, latencyMs);
    }

    const failure = cloud.provisioning.failure;
    if (failure && (failure.times === undefined || this.state.injectedFailures < failure.times)) {
      this.state.injectedFailures++;
      this.save();
      progress({ message: `creating cluster for stack ${req.stackName}` });
      await delay(latencyMs / 2, signal, req.stackName);
      throw new ProvisionError(
        failure.reason,
        failure.message ?? `${cloud.name}: injected provisioning failure (${failure.reason})`,
        retryableReason(failure.reason),
      );
    }
    if (!existing) {
      this.checkClusterLimit(req.stackName);
      this.checkNodeCapacity(req.stackName, pools);
    }

    const rec: StackRecord = existing ?? {
      stackName: req.stackName,
      program: req.program,
      provider: req.provider,
      region: req.region,
      clusterId: clusterIdOf(req),
      state: "creating",
      pools,
      createdAt: new Date().toISOString(),
    };
    rec.state = "creating";
    rec.pools = pools;
    rec.lockPid = process.pid;
    this.state.stacks[req.stackName] = rec;
    this.save();
    try {
      const total = 2 + pools.length;
      progress({ message: "creating network", resourcesDone: 0, resourcesTotal: total });
      await delay(latencyMs / 3, signal, req.stackName);
      progress({ message: "creating cluster control plane", resourcesDone: 1, resourcesTotal: total });
      await delay(latencyMs / 3, signal, req.stackName);
      progress({ message: "creating node pools", resourcesDone: 2, resourcesTotal: total });
      await delay(latencyMs - 2 * Math.floor(latencyMs / 3), signal, req.stackName);
      const cluster = await this.ensureRunning(rec);
      rec.state = "ready";
      progress({ message: "cluster ready", resourcesDone: total, resourcesTotal: total });
      return this.outputsOf(rec, cluster);
    } finally {
      // A cancelled or failed up leaves the stack "creating" (partly created resources) and
      // unlocked: the next up carries on, a destroy removes what is there.
      delete rec.lockPid;
      this.save();
    }
  }

  /** `up` of a ready stack whose node pools changed: the pools are scaled in place. */
  private async updatePools(
    rec: StackRecord,
    cluster: SimulatedCluster,
    pools: NodePool[],
    progress: (p: ProvisionProgress) => void,
    signal: AbortSignal,
    latencyMs: number,
  ): Promise<ProvisionOutputs> {
    this.checkNodeCapacity(rec.stackName, pools);
    rec.lockPid = process.pid;
    this.save();
    try {
      progress({ message: "updating node pools", resourcesDone: 0, resourcesTotal: pools.length });
      await delay(latencyMs / 3, signal, rec.stackName);
      await cluster.resize(pools);
      rec.pools = pools;
      progress({ message: "cluster ready", resourcesDone: pools.length, resourcesTotal: pools.length });
      return this.outputsOf(rec, cluster);
    } finally {
      delete rec.lockPid;
      this.save();
    }
  }

  private async doDestroy(
    req: ProvisionRequest,
    progress: (p: ProvisionProgress) => void,
    signal: AbortSignal,
  ): Promise<void> {
    const rec = this.state.stacks[req.stackName];
    if (!rec) return;
    if (rec.lockPid !== undefined) {
      throw locked(req.stackName, `an operation of process ${rec.lockPid} did not finish; cancel it first`);
    }
    rec.state = "destroying";
    rec.lockPid = process.pid;
    this.save();
    try {
      progress({ message: `destroying stack ${req.stackName}`, resourcesDone: 0, resourcesTotal: 1 });
      await delay(parseDuration(this.opts.cloud.provisioning.destroyLatency), signal, req.stackName);
      const cluster = this.clusters.get(req.stackName);
      this.clusters.delete(req.stackName);
      await cluster?.stop();
      rmSync(this.clusterDir(req.stackName), { recursive: true, force: true });
      delete this.state.stacks[req.stackName];
      progress({ message: "destroyed", resourcesDone: 1, resourcesTotal: 1 });
    } finally {
      delete rec.lockPid;
      this.save();
    }
  }

  // ---------------------------------------------------------------- helpers

  /** The node pools asked for, or the scenario's cluster size when the request names none. */
  private poolsOf(req: ProvisionRequest): NodePool[] {
    const cloud = this.opts.cloud;
    if (req.nodePools.length === 0) {
      const sku = cloud.capacity.find((c) => c.type === cloud.cluster.gpuType)?.sku;
      return [{ name: "gpu", ...cloud.cluster, instanceType: sku }];
    }
    return req.nodePools.map((p) => {
      if (!cloud.capacity.some((c) => c.type === p.gpuType)) {
        throw new ProvisionError(
          "ConfigInvalid",
          `${cloud.name}: node pool ${p.name}: GPU type ${p.gpuType} is not offered`,
          false,
        );
      }
      return {
        name: p.name,
        nodes: p.nodes,
        gpusPerNode: p.gpusPerNode,
        gpuType: p.gpuType,
        instanceType: p.shape,
      };
    });
  }

  /** The cloud's cluster limit, over every stack recorded. */
  private checkClusterLimit(stackName: string): void {
    const cloud = this.opts.cloud;
    const others = Object.values(this.state.stacks).filter((r) => r.stackName !== stackName);
    if (others.length >= cloud.maxClusters) {
      throw new ProvisionError(
        "QuotaExceeded",
        `${cloud.name}: cluster limit reached (${others.length} of maxClusters ${cloud.maxClusters})`,
        true,
      );
    }
  }

  /** The cloud's GPU nodes per SKU (`maxNodes`), over every stack recorded. */
  private checkNodeCapacity(stackName: string, pools: NodePool[]): void {
    const cloud = this.opts.cloud;
    const others = Object.values(this.state.stacks).filter((r) => r.stackName !== stackName);
    for (const sku of cloud.capacity) {
      if (sku.maxNodes === undefined) continue;
      const nodesOf = (ps: NodePool[]) =>
        ps.filter((p) => p.gpuType === sku.type).reduce((n, p) => n + p.nodes, 0);
      const used = others.reduce((n, r) => n + nodesOf(r.pools), 0);
      const want = nodesOf(pools);
      if (want > 0 && used + want > sku.maxNodes) {
        throw new ProvisionError(
          "NoCapacity",
          `${cloud.name}: not enough ${sku.type} capacity (${want} nodes asked, ${sku.maxNodes - used} of ${sku.maxNodes} left)`,
          true,
        );
      }
    }
  }

  /** The stack's cluster, started (on its recorded port when that is free) if not running. */
  private async ensureRunning(rec: StackRecord): Promise<SimulatedCluster> {
    const running = this.clusters.get(rec.stackName);
    if (running) return running;
    const base = {
      name: rec.stackName,
      pools: rec.pools,
      region: rec.region,
      podStartupMs: this.opts.podStartupMs,
      jobDurationMs: this.opts.jobDurationMs,
      stateDir: this.clusterDir(rec.stackName),
      onError: (e: unknown) => this.opts.onClusterError?.(rec.stackName, e),
    };
    let cluster: SimulatedCluster;
    try {
      cluster = await SimulatedCluster.start({ ...base, port: rec.port });
    } catch (e) {
      // The recorded port is taken by someone else: a new port (and a new kubeconfig, which
      // `outputs` returns) is what a re-created endpoint would look like.
      if (rec.port === undefined || !isAddressInUse(e)) throw e;
      cluster = await SimulatedCluster.start(base);
    }
    if (this.closed) {
      await cluster.stop();
      throw new ProvisionError("ProviderError", "the sandbox provisioner is closed", true);
    }
    this.clusters.set(rec.stackName, cluster);
    rec.port = cluster.port;
    this.save();
    return cluster;
  }

  private outputsOf(rec: StackRecord, cluster: SimulatedCluster): ProvisionOutputs {
    return {
      clusterId: rec.clusterId,
      kubeconfig: cluster.kubeconfig(),
      region: rec.region,
      ...(rec.program === "oci"
        ? { bucket: this.opts.cloud.storage.bucket, s3Endpoint: this.opts.s3Endpoint }
        : {}),
    };
  }

  private clusterDir(stackName: string): string {
    return join(this.opts.stateDir, "clusters", stackName);
  }

  private save(): void {
    const file = join(this.opts.stateDir, "stacks.json");
    const partial = `${file}.${process.pid}.partial`;
    writeFileSync(partial, `${JSON.stringify(this.state, null, 2)}\n`);
    renameSync(partial, file);
  }

  private checkOpen(): void {
    if (this.closed) throw new ProvisionError("ProviderError", "the sandbox provisioner is closed", true);
  }
}

function readState(file: string): StateFile {
  if (!existsSync(file)) return { version: 1, injectedFailures: 0, stacks: {} };
  const parsed = JSON.parse(readFileSync(file, "utf8")) as StateFile;
  if (parsed.version !== 1) throw new Error(`${file}: unknown state version ${String(parsed.version)}`);
  return parsed;
}

function checkStackName(name: string): void {
  if (!STACK_NAME.test(name)) {
    throw new ProvisionError("ConfigInvalid", `invalid stack name ${JSON.stringify(name)}`, false);
  }
}

function locked(stackName: string, why: string): ProvisionError {
  return new ProvisionError("StackLocked", `stack ${stackName} is locked: ${why}`, true);
}

/** A cluster id shaped like the cloud's own (an OCID on OCI, an ARM id on Azure). */
function clusterIdOf(req: ProvisionRequest): string {
  const h = createHash("sha256").update(`${req.provider}/${req.stackName}`).digest("hex").slice(0, 24);
  return req.program === "oci"
    ? `ocid1.cluster.oc1.${req.region}.sandbox${h}`
    : `/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/${req.stackName}/providers/Microsoft.ContainerService/managedClusters/${req.stackName}`;
}

function abortedBy(own: AbortController, external: AbortSignal | undefined): AbortSignal {
  return external ? AbortSignal.any([own.signal, external]) : own.signal;
}

function delay(ms: number, signal: AbortSignal, stackName: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const fail = () =>
      reject(
        new ProvisionError("ProviderError", `operation on stack ${stackName} was cancelled`, true, {
          cause: signal.reason,
        }),
      );
    if (signal.aborted) return fail();
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      fail();
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

function isAddressInUse(e: unknown): boolean {
  return (e as NodeJS.ErrnoException | undefined)?.code === "EADDRINUSE";
}
