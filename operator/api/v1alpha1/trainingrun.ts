import { type Static, Type } from "@sinclair/typebox";
import {
  CONTAINER_PATH_PATTERN,
  Conditions,
  Duration,
  GPU_TYPE_PATTERN,
  Int,
  JURISDICTION_PATTERN,
  LabelName,
  ObjectName,
  ObservedGeneration,
  OpenObject,
  type Resource,
  Rules,
  resourceSchema,
  Str,
  StrEnum,
  StringMap,
  Timestamp,
} from "./common.ts";

export const WORKLOAD_CLASSES = ["training", "research", "serving"] as const;
export type WorkloadClass = (typeof WORKLOAD_CLASSES)[number];

/** The offer outcomes (capacityoffer.ts imports this module, so they are listed here too). */
const OFFER_OUTCOMES_FOR_STATUS = ["Accepted", "Declined", "TimedOut", "Withdrawn"] as const;

export const RUN_PHASES = [
  "Pending",
  "Offering",
  "Provisioning",
  "Staging",
  "Running",
  "Migrating",
  "Succeeded",
  "Failed",
] as const;
export type RunPhase = (typeof RUN_PHASES)[number];

const Container = OpenObject<{ name: string; image: string; [k: string]: unknown }>(
  "A container of the worker pod (core/v1 Container). name and image are required; other fields pass through to the Job.",
  {
    required: ["name", "image"],
    properties: {
      name: {
        type: "string",
        maxLength: 63,
        pattern: "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description: "Container name (DNS label).",
      },
      image: { type: "string", minLength: 1, maxLength: 1024, description: "Container image reference." },
    },
  },
);

export const PodTemplate = Type.Object(
  {
    metadata: Type.Optional(
      Type.Object(
        {
          labels: Type.Optional(StringMap("Labels added to every worker pod.")),
          annotations: Type.Optional(StringMap("Annotations added to every worker pod.")),
        },
        { description: "Labels and annotations for the worker pods." },
      ),
    ),
    spec: OpenObject<{
      containers: Array<{ name: string; image: string; [k: string]: unknown }>;
      [k: string]: unknown;
    }>(
      "The worker pod spec (core/v1 PodSpec). Spillway adds GPU requests, rendezvous environment, dataset and checkpoint locations.",
      {
        required: ["containers"],
        properties: {
          containers: {
            type: "array",
            minItems: 1,
            maxItems: 16,
            items: JSON.parse(JSON.stringify(Container)),
            description: "The containers of the worker pod; the first is the trainer.",
          },
        },
      },
    ),
  },
  { description: "The worker pod template: one pod per node runs it." },
);

export const GpuRequest = Type.Object(
  {
    type: Str("GPU type, as named in the CloudProviders' capacity mappings (e.g. H100).", {
      pattern: GPU_TYPE_PATTERN,
      minLength: 1,
      maxLength: 63,
    }),
    count: Int("GPUs per node.", { minimum: 1, maximum: 16 }),
  },
  { description: "The GPUs each node needs." },
);

export const TrainingRunResources = Type.Object(
  {
    gpu: GpuRequest,
    nodes: Type.Optional(
      Int("Number of nodes (one worker pod each).", { minimum: 1, maximum: 1024, default: 1 }),
    ),
  },
  {
    description: "The capacity the run needs. Immutable: a different size is a different run.",
    ...Rules({ rule: "self == oldSelf", message: "resources are immutable once the run is created" }),
  },
);

export const RofrPolicy = Type.Object(
  {
    decisionTimeout: Type.Optional(
      Duration("How long the primary has to answer an offer before it counts as TimedOut.", {
        default: "5m",
      }),
    ),
    matchCompetingOffers: Type.Optional(
      Type.Boolean({
        default: true,
        description: "Whether the offer carries the best competing quote so the primary may match it.",
      }),
    ),
  },
  { description: "Right-of-first-refusal settings of this run's offers." },
);

export const PlacementPolicy = Type.Object(
  {
    primary: Type.Optional(
      ObjectName(
        "The CloudProvider offered every attempt first. Defaults to the provider whose role is primary.",
      ),
    ),
    alternatives: Type.Optional(
      Type.Array(ObjectName("A CloudProvider name."), {
        maxItems: 16,
        "x-kubernetes-list-type": "set",
        description:
          "Alternative CloudProviders in order of preference. Empty means every eligible alternative.",
      }),
    ),
    jurisdictions: Type.Optional(
      Type.Array(
        Str("A jurisdiction code such as US or EU.", { pattern: JURISDICTION_PATTERN, maxLength: 8 }),
        {
          maxItems: 16,
          "x-kubernetes-list-type": "set",
          description: "Jurisdictions the run may be placed in. Empty means any.",
        },
      ),
    ),
    maxHourlyPrice: Type.Optional(
      Type.Number({
        minimum: 0,
        maximum: 1e7,
        description:
          "The most the whole run may cost per hour, in USD. Providers quoting more are not eligible.",
      }),
    ),
    rofr: Type.Optional(RofrPolicy),
    failback: Type.Optional(
      StrEnum(
        ["Never", "WhenPrimaryAccepts"] as const,
        "Whether a run placed on an alternative moves back to the primary when the primary accepts a re-offer.",
        { default: "Never" },
      ),
    ),
  },
  {
    description: "Where the run may go and how the primary is offered it.",
    ...Rules({
      rule: "!has(self.primary) || !has(self.alternatives) || !(self.primary in self.alternatives)",
      message: "the primary cannot also be listed as an alternative",
      fieldPath: ".alternatives",
    }),
  },
);

export const DataRef = Type.Object(
  {
    dataset: ObjectName("Name of a DataSet in the run's namespace."),
    mountPath: Type.Optional(
      Str("Where the dataset's location is exposed in the container.", {
        pattern: CONTAINER_PATH_PATTERN,
        maxLength: 1024,
        default: "/data",
      }),
    ),
  },
  {
    description:
      "The dataset the run trains on; the run starts only once that version is present at the target.",
  },
);

export const CheckpointPolicy = Type.Object(
  {
    path: Type.Optional(
      Str("Directory inside the container where the trainer writes checkpoints.", {
        pattern: CONTAINER_PATH_PATTERN,
        maxLength: 1024,
        default: "/checkpoints",
      }),
    ),
    keep: Type.Optional(
      Int("How many committed checkpoints to keep.", { minimum: 1, maximum: 100, default: 3 }),
    ),
    resume: Type.Optional(
      StrEnum(["Latest", "None"] as const, "Resume from the latest committed checkpoint, or start fresh.", {
        default: "Latest",
      }),
    ),
  },
  {
    description:
      "Portable checkpoints: uploaded, verified, replicated to the primary's store, restored on a move.",
  },
);

export const RunPolicy = Type.Object(
  {
    backoffLimit: Type.Optional(
      Int("Retries of the worker Job before the run fails.", { minimum: 0, maximum: 100, default: 3 }),
    ),
    activeDeadlineSeconds: Type.Optional(
      Type.Integer({
        format: "int64",
        minimum: 1,
        maximum: 31536000,
        description: "Seconds the run may be Running before it is stopped and marked Failed.",
      }),
    ),
    suspend: Type.Optional(
      Type.Boolean({ default: false, description: "A suspended run is not offered, placed or dispatched." }),
    ),
  },
  { description: "Retries, deadline and suspension." },
);

export const TrainingRunSpec = Type.Object(
  {
    workloadClass: Type.Optional(
      StrEnum(
        WORKLOAD_CLASSES,
        "training and research may spill over to alternatives; serving is primary-exclusive and waits instead.",
        { default: "training", ...Rules({ rule: "self == oldSelf", message: "workloadClass is immutable" }) },
      ),
    ),
    template: PodTemplate,
    resources: TrainingRunResources,
    placement: Type.Optional(PlacementPolicy),
    data: Type.Optional(DataRef),
    checkpoints: Type.Optional(CheckpointPolicy),
    runPolicy: Type.Optional(RunPolicy),
  },
  {
    description: "The desired training job and its placement policy.",
    ...Rules({
      rule: "!has(self.workloadClass) || self.workloadClass != 'serving' || !has(self.placement) || !has(self.placement.alternatives) || size(self.placement.alternatives) == 0",
      message: "serving runs are primary-exclusive and must not name alternatives",
      fieldPath: ".placement.alternatives",
    }),
  },
);

export const Placement = Type.Object(
  {
    provider: ObjectName("The CloudProvider the run is placed on."),
    cluster: Type.Optional(Str("The cluster within the provider (existing or ProvisionedCluster name).")),
    region: Type.Optional(Str("The provider's region.", { maxLength: 64 })),
    pricePerHour: Type.Optional(
      Type.Number({ minimum: 0, description: "Price of the whole run per hour, USD." }),
    ),
    decidedAt: Type.Optional(Timestamp("When the placement was decided.")),
    reason: Type.Optional(
      Str("Why this provider: PrimaryAccepted, PrimaryDeclined:<reason>, PrimaryTimedOut.", {
        maxLength: 256,
      }),
    ),
    attempt: Type.Optional(Int("The placement attempt this placement belongs to.", { minimum: 1 })),
    offer: Type.Optional(ObjectName("The CapacityOffer of this attempt.")),
  },
  { description: "Where the current attempt runs. Locked once set for the attempt." },
);

export const DataStatus = Type.Object(
  {
    dataset: Type.Optional(ObjectName("The DataSet.")),
    version: Type.Optional(
      Str("The dataset version (manifest digest) the run trains on.", { maxLength: 128 }),
    ),
    phase: Type.Optional(
      StrEnum(["Pending", "Syncing", "Ready", "Failed"] as const, "Staging phase at the target."),
    ),
    objectsSynced: Type.Optional(
      Type.Integer({ format: "int64", minimum: 0, description: "Objects present at the target." }),
    ),
    objectsTotal: Type.Optional(
      Type.Integer({ format: "int64", minimum: 0, description: "Objects in the version." }),
    ),
    bytesSynced: Type.Optional(
      Type.Integer({ format: "int64", minimum: 0, description: "Bytes present at the target." }),
    ),
    bytesTotal: Type.Optional(
      Type.Integer({ format: "int64", minimum: 0, description: "Bytes in the version." }),
    ),
  },
  { description: "Data staging progress for the current placement." },
);

export const CheckpointStatus = Type.Object(
  {
    step: Type.Integer({
      format: "int64",
      minimum: 0,
      description: "Training step of the latest committed checkpoint.",
    }),
    digest: Type.Optional(Str("Digest of that checkpoint's manifest.", { maxLength: 128 })),
    committedAt: Type.Optional(Timestamp("When it was committed.")),
    replicatedTo: Type.Optional(
      Type.Array(ObjectName("A CloudProvider name."), {
        maxItems: 16,
        "x-kubernetes-list-type": "set",
        description: "Providers whose stores hold a verified copy.",
      }),
    ),
  },
  { description: "The latest committed checkpoint and where it is replicated." },
);

export const RemoteStatus = Type.Object(
  {
    namespace: Type.Optional(LabelName("Namespace on the target cluster.")),
    job: Type.Optional(ObjectName("The Indexed Job on the target cluster.")),
    active: Type.Optional(Int("Worker pods running.", { minimum: 0 })),
    succeeded: Type.Optional(Int("Worker pods succeeded.", { minimum: 0 })),
    failed: Type.Optional(Int("Worker pods failed.", { minimum: 0 })),
    lastSeen: Type.Optional(Timestamp("When the target cluster last answered.")),
  },
  { description: "The remote workload, mirrored from the target cluster." },
);

export const FailbackStatus = Type.Object(
  {
    checks: Int("Failback offers made to the primary so far (the list in offers keeps only the newest).", {
      minimum: 0,
    }),
    offer: Type.Optional(ObjectName("The newest failback CapacityOffer.")),
    outcome: Type.Optional(
      StrEnum(OFFER_OUTCOMES_FOR_STATUS, "The newest failback offer's answer, once the run has acted on it."),
    ),
  },
  {
    description:
      "Failback checks (placement.failback: WhenPrimaryAccepts): while the run runs on an alternative, the primary is offered it again periodically.",
  },
);

export const TrainingRunStatus = Type.Object(
  {
    phase: Type.Optional(StrEnum(RUN_PHASES, "Where the run is in its lifecycle.")),
    observedGeneration: ObservedGeneration,
    conditions: Type.Optional(Conditions),
    gpus: Type.Optional(Int("Total GPUs of the run (nodes × GPUs per node).", { minimum: 0 })),
    attempt: Type.Optional(Int("The current placement attempt, from 1.", { minimum: 0 })),
    placement: Type.Optional(Placement),
    offers: Type.Optional(
      Type.Array(ObjectName("A CapacityOffer name."), {
        maxItems: 64,
        description: "This run's CapacityOffers, newest first.",
      }),
    ),
    data: Type.Optional(DataStatus),
    checkpoint: Type.Optional(CheckpointStatus),
    remote: Type.Optional(RemoteStatus),
    failedProviders: Type.Optional(
      Type.Array(ObjectName("A CloudProvider name."), {
        maxItems: 16,
        "x-kubernetes-list-type": "set",
        description:
          "Alternatives that failed during this attempt (e.g. provisioning failed); skipped until the next attempt.",
      }),
    ),
    moves: Type.Optional(Int("How many times the run moved between clusters.", { minimum: 0 })),
    failback: Type.Optional(FailbackStatus),
    accruedCost: Type.Optional(Type.Number({ minimum: 0, description: "Cost accrued so far, USD." })),
    startTime: Type.Optional(Timestamp("When the run first started running.")),
    completionTime: Type.Optional(Timestamp("When the run succeeded or failed.")),
  },
  { description: "The observed state of the run." },
);

export const TrainingRunSchema = resourceSchema(
  "TrainingRun",
  "TrainingRun is one distributed training job, placed on the primary cloud first and spilled over under the right of first refusal.",
  TrainingRunSpec,
  TrainingRunStatus,
);

export type TrainingRunSpec = Static<typeof TrainingRunSpec>;
export type TrainingRunStatus = Static<typeof TrainingRunStatus>;
export type TrainingRun = Resource<"TrainingRun", TrainingRunSpec, TrainingRunStatus>;
