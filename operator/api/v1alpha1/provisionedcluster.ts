import { type Static, Type } from "@sinclair/typebox";
import {
  Conditions,
  GPU_TYPE_PATTERN,
  Int,
  LabelName,
  ObjectName,
  ObservedGeneration,
  type Resource,
  Rules,
  resourceSchema,
  SecretKeyRef,
  Str,
  StrEnum,
  StringMap,
  Timestamp,
} from "./common.ts";

export const CLUSTER_PHASES = ["Pending", "Provisioning", "Ready", "Destroying", "Failed"] as const;
export type ClusterPhase = (typeof CLUSTER_PHASES)[number];

export const NodePool = Type.Object(
  {
    name: LabelName("Node pool name."),
    shape: Str("Machine shape or SKU, e.g. BM.GPU.H100.8.", { minLength: 1, maxLength: 128 }),
    gpuType: Str("GPU type of the pool.", { pattern: GPU_TYPE_PATTERN, minLength: 1, maxLength: 63 }),
    gpusPerNode: Int("GPUs per node.", { minimum: 1, maximum: 16 }),
    nodes: Int("Node count.", { minimum: 1, maximum: 1000 }),
  },
  { description: "A GPU node pool of the cluster." },
);

export const ProvisionedClusterSpec = Type.Object(
  {
    provider: ObjectName("The CloudProvider this cluster belongs to."),
    stackName: Str("The Pulumi stack name (idempotent: derived from the cluster's name).", {
      pattern: "^[A-Za-z0-9_.-]+$",
      minLength: 1,
      maxLength: 100,
    }),
    program: StrEnum(["oci", "azure"] as const, "The infra/ program the stack runs."),
    region: Str("Region.", { minLength: 1, maxLength: 64 }),
    config: Type.Optional(StringMap("Stack configuration (non-secret).")),
    nodePools: Type.Array(NodePool, {
      minItems: 1,
      maxItems: 8,
      "x-kubernetes-list-type": "map",
      "x-kubernetes-list-map-keys": ["name"],
      description: "GPU node pools.",
    }),
  },
  {
    description: "The cluster to provision. Immutable: a different cluster is a different object.",
    ...Rules({
      rule: "self.provider == oldSelf.provider && self.stackName == oldSelf.stackName",
      message: "provider and stackName are immutable",
    }),
  },
);

export const PlacedRun = Type.Object(
  {
    namespace: LabelName("The run's namespace."),
    name: ObjectName("The run's name."),
    uid: Str("The run's uid.", { maxLength: 64 }),
    gpus: Int("GPUs the run uses here.", { minimum: 0 }),
  },
  { description: "A run using this cluster." },
);

export const ClusterOutputs = Type.Object(
  {
    clusterId: Type.Optional(Str("The cloud's cluster id (OCID or ARM id).", { maxLength: 1024 })),
    kubeconfigSecretRef: Type.Optional(SecretKeyRef),
    bucket: Type.Optional(
      Str("The object-store bucket or container created with the cluster.", { maxLength: 253 }),
    ),
    s3Endpoint: Type.Optional(Str("The S3-compatible endpoint of that bucket.", { maxLength: 512 })),
  },
  { description: "Stack outputs. The kubeconfig lives only in the referenced Secret." },
);

export const LastOperation = Type.Object(
  {
    type: StrEnum(["Up", "Destroy", "Refresh", "Cancel"] as const, "The stack operation."),
    startedAt: Timestamp("When it started."),
    finishedAt: Type.Optional(Timestamp("When it finished.")),
    result: Type.Optional(StrEnum(["Succeeded", "Failed", "InProgress"] as const, "How it ended.")),
    message: Type.Optional(
      Str("Details (errors are classified, secrets never included).", { maxLength: 4096 }),
    ),
  },
  { description: "The last Pulumi operation on the stack." },
);

export const ProvisionedClusterStatus = Type.Object(
  {
    phase: Type.Optional(StrEnum(CLUSTER_PHASES, "Lifecycle phase.")),
    observedGeneration: ObservedGeneration,
    conditions: Type.Optional(Conditions),
    outputs: Type.Optional(ClusterOutputs),
    totalGpus: Type.Optional(Int("GPUs in the cluster.", { minimum: 0 })),
    freeGpus: Type.Optional(Int("GPUs not used by runs.", { minimum: 0 })),
    runs: Type.Optional(
      Type.Array(PlacedRun, { maxItems: 1024, description: "Runs placed on the cluster." }),
    ),
    idleSince: Type.Optional(Timestamp("Since when no run uses the cluster.")),
    lastOperation: Type.Optional(LastOperation),
    destroyAttempts: Type.Optional(
      Int("Failed destroy attempts so far (retried with backoff).", { minimum: 0 }),
    ),
  },
  { description: "The observed state of the cluster." },
);

export const ProvisionedClusterSchema = resourceSchema(
  "ProvisionedCluster",
  "ProvisionedCluster is a cluster Spillway created through Pulumi. Its finalizer is removed only after destroy succeeded.",
  ProvisionedClusterSpec,
  ProvisionedClusterStatus,
);

export type ProvisionedClusterSpec = Static<typeof ProvisionedClusterSpec>;
export type ProvisionedClusterStatus = Static<typeof ProvisionedClusterStatus>;
export type ProvisionedCluster = Resource<
  "ProvisionedCluster",
  ProvisionedClusterSpec,
  ProvisionedClusterStatus
>;
