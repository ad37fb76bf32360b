/** Simulated clusters: an API server with GPU nodes and a kubelet stand-in (see simulated-cluster.ts). */

export {
  ContainerConfigError,
  expandVars,
  isExecutedPod,
  isSpillwayContainer,
  PathMap,
  SPILLWAY_COMMAND,
} from "./containers.ts";
export { type ContainerExit, type ContainerLogLine, type ContainerRun, spillwayEntry } from "./executor.ts";
export { clientKubeconfig, kubeConfigFromYaml } from "./kubeconfig.ts";
export {
  COMPLETION_INDEX,
  formatIndexes,
  GPU_RESOURCE,
  JOB_NAME_LABEL,
  Kubelet,
  type KubeletOptions,
  podGpus,
  SIM_DURATION_ANNOTATION,
  SIM_DURATION_ENV,
  SIM_EXIT_CODE_ANNOTATION,
  SIM_EXIT_CODE_ENV,
} from "./kubelet.ts";
export {
  ensureNodes,
  GPU_PRODUCT_LABEL,
  INSTANCE_TYPE_LABEL,
  type NodePoolShape,
  nodeNames,
  REGION_LABEL,
  SIMULATED_NODE_LABEL,
  setNodeReadyCondition,
} from "./nodes.ts";
export {
  type ClusterSize,
  type GpuUsage,
  type NodePool,
  SimulatedCluster,
  type SimulatedClusterOptions,
} from "./simulated-cluster.ts";
