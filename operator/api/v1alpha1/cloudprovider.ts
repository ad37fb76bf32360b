import { type Static, Type } from "@sinclair/typebox";
import {
  Conditions,
  Duration,
  GPU_TYPE_PATTERN,
  Int,
  JURISDICTION_PATTERN,
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

/** Cloud types with an adapter. Adding `aws` or `gcp` is one value here and one adapter. */
export const PROVIDER_TYPES = ["azure", "oci"] as const;
export type ProviderType = (typeof PROVIDER_TYPES)[number];

const gpuTypeName = () =>
  Str("GPU type name used by TrainingRuns (e.g. H100).", {
    pattern: GPU_TYPE_PATTERN,
    minLength: 1,
    maxLength: 63,
  });

export const GpuSku = Type.Object(
  {
    type: gpuTypeName(),
    sku: Str(
      "The provider's machine SKU or shape: Standard_ND96isr_H100_v5 on Azure, BM.GPU.H100.8 on OCI.",
      {
        minLength: 1,
        maxLength: 128,
      },
    ),
    gpusPerNode: Int("GPUs per node of this SKU.", { minimum: 1, maximum: 16 }),
    maxNodes: Type.Optional(Int("Most nodes of this SKU Spillway may use.", { minimum: 1, maximum: 10000 })),
  },
  { description: "How one GPU type maps to this provider's SKU." },
);

export const AzureSettings = Type.Object(
  {
    subscriptionId: Str("Azure subscription id.", { minLength: 1, maxLength: 64 }),
    resourceGroup: Str("Resource group of the AKS cluster and capacity reservations.", {
      minLength: 1,
      maxLength: 90,
    }),
    aksCluster: Str("Name of the AKS cluster runs are placed on.", { minLength: 1, maxLength: 63 }),
    nodePool: Str("Name of the AKS GPU agent pool scaled for accepted offers.", {
      minLength: 1,
      maxLength: 12,
    }),
    capacityReservationGroup: Str("Capacity reservation group the GPU pool is bound to.", {
      minLength: 1,
      maxLength: 80,
    }),
    armEndpoint: Type.Optional(
      Str("Azure Resource Manager endpoint; the public cloud's when unset (the sandbox sets its own).", {
        format: "uri",
        maxLength: 512,
      }),
    ),
    credentialsSecretRef: Type.Optional(SecretKeyRef),
  },
  { description: "Azure Resource Manager coordinates the primary's responder uses." },
);

export const ExistingCluster = Type.Object(
  { kubeconfigSecretRef: SecretKeyRef },
  {
    description:
      "An existing cluster reached through a kubeconfig stored in a Secret (key defaults to kubeconfig).",
  },
);

export const ProvisionSettings = Type.Object(
  {
    program: StrEnum(["oci", "azure"] as const, "Which infra/ Pulumi program provisions clusters."),
    project: Type.Optional(Str("Pulumi project name.", { maxLength: 63, default: "spillway" })),
    backendUrl: Type.Optional(
      Str("Pulumi state backend URL (file://, s3://, azblob://).", { maxLength: 1024 }),
    ),
    config: Type.Optional(StringMap("Stack configuration passed to the program (non-secret).")),
    secretConfigRef: Type.Optional(SecretKeyRef),
    maxClusters: Type.Optional(
      Int("Most clusters Spillway may provision here.", { minimum: 1, maximum: 100, default: 1 }),
    ),
    idleTTL: Type.Optional(
      Duration("Idle time after which a provisioned cluster is destroyed.", { default: "30m" }),
    ),
  },
  { description: "Clusters are provisioned on demand through Pulumi (one stack per ProvisionedCluster)." },
);

export const ClusterSource = Type.Object(
  {
    existing: Type.Optional(ExistingCluster),
    provision: Type.Optional(ProvisionSettings),
  },
  {
    description:
      "Where runs placed on this provider execute: an existing cluster, or clusters provisioned on demand.",
    ...Rules({
      rule: "has(self.existing) != has(self.provision)",
      message: "set exactly one of existing or provision",
    }),
  },
);

export const Capacity = Type.Object(
  {
    gpus: Type.Array(GpuSku, {
      minItems: 1,
      maxItems: 32,
      "x-kubernetes-list-type": "map",
      "x-kubernetes-list-map-keys": ["type"],
      description: "GPU types this provider offers.",
    }),
  },
  { description: "What this provider can run." },
);

export const GpuPrice = Type.Object(
  {
    type: gpuTypeName(),
    pricePerGpuHour: Type.Number({
      minimum: 0,
      maximum: 10000,
      description: "List price per GPU-hour, USD.",
    }),
    floorPerGpuHour: Type.Optional(
      Type.Number({
        minimum: 0,
        maximum: 10000,
        description: "Lowest price per GPU-hour this provider accepts when matching a competing offer.",
      }),
    ),
  },
  { description: "Price of one GPU type." },
);

export const Pricing = Type.Object(
  {
    gpus: Type.Array(GpuPrice, {
      maxItems: 32,
      "x-kubernetes-list-type": "map",
      "x-kubernetes-list-map-keys": ["type"],
      description: "Per-GPU-type prices: the quote source.",
    }),
  },
  { description: "Prices Spillway quotes for this provider." },
);

export const Storage = Type.Object(
  {
    azureBlob: Type.Optional(
      Type.Object(
        {
          account: Str("Storage account name.", { pattern: "^[a-z0-9]{3,24}$", maxLength: 24 }),
          container: Str("Blob container.", {
            pattern: "^[a-z0-9]([a-z0-9-]{1,61}[a-z0-9])$",
            maxLength: 63,
          }),
          endpoint: Type.Optional(
            Str("Blob endpoint (emulators, sovereign clouds).", { format: "uri", maxLength: 512 }),
          ),
        },
        { description: "An Azure Blob Storage container." },
      ),
    ),
    s3: Type.Optional(
      Type.Object(
        {
          bucket: Str("Bucket name.", { pattern: "^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", maxLength: 63 }),
          endpoint: Str(
            "S3-compatible endpoint (OCI: https://<namespace>.compat.objectstorage.<region>.oraclecloud.com).",
            {
              format: "uri",
              maxLength: 512,
            },
          ),
          region: Type.Optional(Str("Signing region.", { maxLength: 64, default: "us-east-1" })),
        },
        { description: "An S3-compatible bucket (OCI Object Storage through its S3 compatibility API)." },
      ),
    ),
    credentialsSecretRef: Type.Optional(SecretKeyRef),
  },
  {
    description: "This cloud's object store for datasets and checkpoints.",
    ...Rules({ rule: "has(self.azureBlob) != has(self.s3)", message: "set exactly one of azureBlob or s3" }),
  },
);

export const CloudProviderSpec = Type.Object(
  {
    type: StrEnum(PROVIDER_TYPES, "The cloud: azure or oci."),
    role: Type.Optional(
      StrEnum(
        ["primary", "alternative"] as const,
        "primary holds the right of first refusal (at most one).",
        {
          default: "alternative",
        },
      ),
    ),
    region: Str("The provider's region, e.g. eastus or us-ashburn-1.", { minLength: 1, maxLength: 64 }),
    jurisdiction: Str("The jurisdiction the region is in, e.g. US or EU.", {
      pattern: JURISDICTION_PATTERN,
      maxLength: 8,
    }),
    cluster: ClusterSource,
    capacity: Capacity,
    pricing: Type.Optional(Pricing),
    storage: Type.Optional(Storage),
    azure: Type.Optional(AzureSettings),
    quoteLatency: Type.Optional(
      Duration("Expected time from placement to a running job, reported in quotes."),
    ),
  },
  {
    description: "A cloud region Spillway may place runs on.",
    ...Rules(
      {
        rule: "self.type == 'azure' || !has(self.azure)",
        message: "azure settings are only valid for type azure",
        fieldPath: ".azure",
      },
      {
        rule: "!has(self.role) || self.role != 'primary' || self.type != 'azure' || has(self.azure)",
        message: "an azure primary needs azure settings for its responder",
        fieldPath: ".azure",
      },
    ),
  },
);

export const ProviderClusterStatus = Type.Object(
  {
    name: Str("Cluster name (existing, or a ProvisionedCluster)."),
    ready: Type.Boolean({ description: "Whether the cluster answers and is ready." }),
    totalGpus: Int("GPUs in the cluster.", { minimum: 0 }),
    freeGpus: Int("GPUs not used by Spillway runs.", { minimum: 0 }),
  },
  { description: "One cluster of this provider." },
);

export const CloudProviderStatus = Type.Object(
  {
    observedGeneration: ObservedGeneration,
    conditions: Type.Optional(Conditions),
    clusters: Type.Optional(
      Type.Array(ProviderClusterStatus, {
        maxItems: 128,
        description: "Clusters in use and their capacity.",
      }),
    ),
    freeGpus: Type.Optional(Int("Free GPUs seen across this provider's clusters.", { minimum: 0 })),
    lastProbeTime: Type.Optional(Timestamp("When the provider was last probed.")),
  },
  { description: "The observed state of the provider." },
);

export const CloudProviderSchema = resourceSchema(
  "CloudProvider",
  "CloudProvider is one cloud region Spillway may use: the primary (right of first refusal) or an alternative.",
  CloudProviderSpec,
  CloudProviderStatus,
);

export type CloudProviderSpec = Static<typeof CloudProviderSpec>;
export type CloudProviderStatus = Static<typeof CloudProviderStatus>;
export type CloudProvider = Resource<"CloudProvider", CloudProviderSpec, CloudProviderStatus>;
