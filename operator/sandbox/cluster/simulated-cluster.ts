/**
 * A simulated Kubernetes cluster: one sandbox API server plus the kubelet stand-in that plays
 * its nodes (scheduler, Job controller, pod lifecycle), sized as a GPU node pool. It is what
 * the sandbox runs for the AKS cluster and what the sandbox provisioner stands up where Pulumi
 * would create an OKE cluster. The operator reaches it only through its kubeconfig, exactly
 * as it reaches a real cluster.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import type { KubeConfig } from "@kubernetes/client-node";
import { type ApiServer, startApiServer } from "../apiserver/index.ts";
import type { ContainerLogLine, ContainerRun } from "./executor.ts";
import { clientKubeconfig, kubeConfigFromYaml } from "./kubeconfig.ts";
import { Kubelet } from "./kubelet.ts";
import { ensureNodes, type NodePoolShape, setNodeReadyCondition } from "./nodes.ts";

export interface ClusterSize {
  nodes: number;
  gpusPerNode: number;
  gpuType: string;
}

/** One node pool of a cluster: its name (node-name prefix `<cluster>-<pool>`) and size. */
export interface NodePool extends ClusterSize {
  name: string;
  /** Instance type / shape label of the nodes. */
  instanceType?: string;
}

export interface SimulatedClusterOptions {
  /** Cluster name: the kubeconfig's context and cluster name, and the node-name prefix. */
  name: string;
  /** The node pools (at least one; a pool may have zero nodes). */
  pools: NodePool[];
  region?: string;
  /** Time a bound pod stays Pending before Running. */
  podStartupMs: number;
  /** Time a pod runs before it succeeds (per pod overridable, see kubelet.ts). */
  jobDurationMs: number;
  /** Port of the API server; a free one when absent. */
  port?: number;
  /** Where the API server persists its objects; in memory only when absent. */
  stateDir?: string;
  /** Errors of kubelet passes (they are retried); default: ignored. */
  onError?: (e: unknown) => void;
  /** Each line written by a container the kubelet runs for real (`spillway` containers). */
  onContainerLog?: (line: ContainerLogLine) => void;
}

export interface GpuUsage {
  total: number;
  free: number;
}

export class SimulatedCluster {
  private stopped = false;

  private constructor(
    readonly name: string,
    private readonly server: ApiServer,
    private readonly kubelet: Kubelet,
    private nodeList: string[],
    private readonly region: string | undefined,
  ) {}

  /** Names of the simulated nodes. */
  get nodes(): string[] {
    return [...this.nodeList];
  }

  static async start(opts: SimulatedClusterOptions): Promise<SimulatedCluster> {
    if (opts.stateDir) mkdirSync(opts.stateDir, { recursive: true });
    const server = await startApiServer({ name: opts.name, port: opts.port, stateDir: opts.stateDir });
    try {
      const kc = kubeConfigFromYaml(server.kubeconfig());
      const nodes = await ensureNodes(kc, shapesOf(opts.name, opts.pools, opts.region));
      const kubelet = new Kubelet({
        kubeConfig: kc,
        nodes,
        podStartupMs: opts.podStartupMs,
        jobDurationMs: opts.jobDurationMs,
        onError: opts.onError,
        name: opts.name,
        ...(opts.onContainerLog ? { onContainerLog: opts.onContainerLog } : {}),
      });
      await kubelet.start();
      return new SimulatedCluster(opts.name, server, kubelet, nodes, opts.region);
    } catch (e) {
      await server.close();
      throw e;
    }
  }

  /** Base URL of the cluster's API server (`http://127.0.0.1:PORT`). */
  get url(): string {
    return this.server.url;
  }

  get port(): number {
    return Number(new URL(this.server.url).port);
  }

  /** The kubeconfig (YAML) a client uses to reach this cluster. */
  kubeconfig(): string {
    return clientKubeconfig(this.server.kubeconfig());
  }

  writeKubeconfig(path: string): void {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, this.kubeconfig(), { mode: 0o600 });
  }

  kubeConfig(): KubeConfig {
    return kubeConfigFromYaml(this.kubeconfig());
  }

  /** GPUs of the nodes and those not requested by bound, unfinished pods, after a fresh pass. */
  async gpus(): Promise<GpuUsage> {
    await this.kubelet.pass();
    return { total: this.kubelet.totalGpus(), free: this.kubelet.freeGpus() };
  }

  /**
   * Makes the nodes those of `pools` (a node pool scaled or added). Pods on removed nodes
   * fail `NodeLost`, as when a real pool scales down under them.
   */
  async resize(pools: NodePool[]): Promise<void> {
    this.nodeList = await ensureNodes(this.kubeConfig(), shapesOf(this.name, pools, this.region));
    await this.kubelet.setNodes(this.nodeList);
  }

  /**
   * Marks a node NotReady (a lost machine, revoked capacity) or Ready again. Pods running on
   * a NotReady node fail with reason `NodeLost` and nothing new is scheduled there.
   */
  async setNodeReady(node: string, ready: boolean): Promise<void> {
    await setNodeReadyCondition(this.kubeConfig(), node, ready);
    await this.kubelet.pass();
  }

  /** Runs one kubelet pass now (tests use it to move the cluster along without waiting for resync). */
  settle(): Promise<void> {
    return this.kubelet.pass();
  }

  /**
   * The log (stdout and stderr) of a container the kubelet runs for real, while its pod
   * exists; the pod's first container when `container` is absent.
   */
  containerLogs(namespace: string, pod: string, container?: string): string | undefined {
    return this.kubelet.containerLogs(namespace, pod, container);
  }

  /**
   * The containers this cluster's kubelet ran for real (also of deleted pods and after the
   * cluster stopped), optionally of one namespace: exit codes and logs.
   */
  containerRuns(namespace?: string): ContainerRun[] {
    return this.kubelet.containerRuns().filter((r) => namespace === undefined || r.namespace === namespace);
  }

  /** Pids of the container processes still running on this cluster. */
  processIds(): number[] {
    return this.kubelet.processIds();
  }

  /**
   * Stops the kubelet (SIGKILLing every container process: a stopped cluster is a lost one),
   * then the API server (its port is free when this resolves). Idempotent.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.kubelet.stop();
    await this.server.close();
  }
}

function shapesOf(cluster: string, pools: NodePool[], region: string | undefined): NodePoolShape[] {
  return pools.map((p) => ({
    prefix: `${cluster}-${p.name}`,
    nodes: p.nodes,
    gpusPerNode: p.gpusPerNode,
    gpuType: p.gpuType,
    instanceType: p.instanceType,
    region,
  }));
}
