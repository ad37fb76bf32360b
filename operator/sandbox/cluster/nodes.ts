/**
 * The Node objects of a simulated cluster: what a GPU node pool's nodes look like to the API
 * (capacity and allocatable `nvidia.com/gpu`, the usual well-known labels, Ready). The
 * kubelet stand-in schedules against `status.allocatable`, as the real scheduler does.
 */
import { ApiException, CoreV1Api, type KubeConfig, type V1Node } from "@kubernetes/client-node";
import { GPU_RESOURCE } from "./kubelet.ts";

/** Marks the nodes the sandbox owns, so a resized cluster can drop the ones it no longer has. */
export const SIMULATED_NODE_LABEL = "sim.spillway.dev/node";
export const GPU_PRODUCT_LABEL = "nvidia.com/gpu.product";
export const GPU_COUNT_LABEL = "nvidia.com/gpu.count";
export const INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type";
export const REGION_LABEL = "topology.kubernetes.io/region";

export interface NodePoolShape {
  /** Prefix of the node names: `<prefix>-0`, `<prefix>-1`, … */
  prefix: string;
  nodes: number;
  gpusPerNode: number;
  gpuType: string;
  /** Instance type / shape label (e.g. `Standard_ND96isr_H100_v5`, `BM.GPU.H100.8`). */
  instanceType?: string;
  region?: string;
}

export function nodeNames(shape: NodePoolShape): string[] {
  return Array.from({ length: shape.nodes }, (_, i) => `${shape.prefix}-${i}`);
}

function nodeObject(name: string, shape: NodePoolShape): V1Node {
  const resources = {
    cpu: "96",
    memory: "1900Gi",
    pods: "110",
    "ephemeral-storage": "2Ti",
    [GPU_RESOURCE]: String(shape.gpusPerNode),
  };
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: {
      name,
      labels: {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        [SIMULATED_NODE_LABEL]: "true",
        [GPU_PRODUCT_LABEL]: shape.gpuType,
        [GPU_COUNT_LABEL]: String(shape.gpusPerNode),
        ...(shape.instanceType ? { [INSTANCE_TYPE_LABEL]: shape.instanceType } : {}),
        ...(shape.region ? { [REGION_LABEL]: shape.region } : {}),
      },
    },
    spec: {},
    status: {
      capacity: resources,
      allocatable: resources,
      addresses: [
        { type: "InternalIP", address: "127.0.0.1" },
        { type: "Hostname", address: name },
      ],
      conditions: [
        {
          type: "Ready",
          status: "True",
          reason: "KubeletReady",
          message: "simulated kubelet is posting ready status",
          lastHeartbeatTime: new Date(),
          lastTransitionTime: new Date(),
        },
      ],
      nodeInfo: {
        architecture: "amd64",
        bootID: "",
        containerRuntimeVersion: "sim://1.0",
        kernelVersion: "",
        kubeProxyVersion: "",
        kubeletVersion: "v1.32.0-spillway-sim",
        machineID: "",
        operatingSystem: "linux",
        osImage: "Spillway simulated node",
        systemUUID: "",
      },
    },
  };
}

/**
 * Makes the cluster's Node objects exactly the pools': creates missing nodes, rewrites the
 * status of existing ones (a restarted sandbox may have changed the size) and deletes
 * simulated nodes beyond the pools. Status is written through the status subresource, as a
 * kubelet does, since a create may drop it. Returns the node names.
 */
export async function ensureNodes(kc: KubeConfig, pools: NodePoolShape[]): Promise<string[]> {
  const core = kc.makeApiClient(CoreV1Api);
  const all: string[] = [];
  for (const shape of pools) {
    for (const name of nodeNames(shape)) {
      all.push(name);
      const want = nodeObject(name, shape);
      let current: V1Node;
      try {
        current = await core.readNode({ name });
        current = await core.replaceNode({
          name,
          body: { ...current, metadata: { ...current.metadata, labels: want.metadata!.labels } },
        });
      } catch (e) {
        if (!(e instanceof ApiException && e.code === 404)) throw e;
        current = await core.createNode({ body: want });
      }
      await core.replaceNodeStatus({ name, body: { ...current, status: want.status } });
    }
  }
  const existing = await core.listNode({ labelSelector: SIMULATED_NODE_LABEL });
  for (const node of existing.items) {
    const name = node.metadata?.name ?? "";
    if (all.includes(name)) continue;
    try {
      await core.deleteNode({ name });
    } catch (e) {
      if (!(e instanceof ApiException && e.code === 404)) throw e;
    }
  }
  return all;
}

/** Sets a node's Ready condition (through the status subresource, as its kubelet would). */
export async function setNodeReadyCondition(kc: KubeConfig, name: string, ready: boolean): Promise<void> {
  const core = kc.makeApiClient(CoreV1Api);
  const node = await core.readNode({ name });
  const now = new Date();
  const others = (node.status?.conditions ?? []).filter((c) => c.type !== "Ready");
  const before = node.status?.conditions?.find((c) => c.type === "Ready");
  const status = ready ? "True" : "Unknown";
  const condition = {
    type: "Ready",
    status,
    reason: ready ? "KubeletReady" : "NodeStatusUnknown",
    message: ready ? "simulated kubelet is posting ready status" : "Kubelet stopped posting node status.",
    lastHeartbeatTime: now,
    lastTransitionTime: before?.status === status ? before.lastTransitionTime : now,
  };
  await core.replaceNodeStatus({
    name,
    body: { ...node, status: { ...node.status, conditions: [...others, condition] } },
  });
}
