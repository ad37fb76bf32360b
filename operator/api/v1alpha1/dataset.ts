import { type Static, Type } from "@sinclair/typebox";
import {
  Conditions,
  Duration,
  Int,
  ObjectName,
  ObservedGeneration,
  type Resource,
  resourceSchema,
  STORE_PREFIX_PATTERN,
  Str,
  StrEnum,
  Timestamp,
} from "./common.ts";

const Prefix = (description: string, opts: Record<string, unknown> = {}) =>
  Str(description, { pattern: STORE_PREFIX_PATTERN, maxLength: 1024, ...opts });

export const StoreLocation = Type.Object(
  {
    provider: ObjectName("The CloudProvider whose object store holds the data."),
    prefix: Type.Optional(
      Prefix("Key prefix within that store, relative; no '.' or '..' segments.", { default: "" }),
    ),
  },
  { description: "A prefix in a provider's object store." },
);

export const SyncPolicy = Type.Object(
  {
    mode: Type.Optional(
      StrEnum(
        ["Continuous", "OnDemand"] as const,
        "Continuous resyncs every interval; OnDemand only when a run needs it.",
        {
          default: "Continuous",
        },
      ),
    ),
    interval: Type.Optional(Duration("Time between resyncs in Continuous mode.", { default: "10m" })),
    delete: Type.Optional(
      Type.Boolean({
        default: false,
        description: "Delete replica objects missing from the source (only after a sync with no error).",
      }),
    ),
    concurrency: Type.Optional(
      Int("Parallel object transfers per sync.", { minimum: 1, maximum: 64, default: 8 }),
    ),
    workerThresholdBytes: Type.Optional(
      Type.Integer({
        format: "int64",
        minimum: 0,
        description:
          "Syncs larger than this run as an Indexed Job of sync workers instead of in the operator.",
      }),
    ),
    workers: Type.Optional(Int("Sync workers of such a Job.", { minimum: 1, maximum: 64, default: 4 })),
  },
  { description: "How replicas are kept in sync." },
);

export const DataSetSpec = Type.Object(
  {
    source: StoreLocation,
    replicas: Type.Optional(
      Type.Array(StoreLocation, {
        maxItems: 16,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["provider"],
        description: "Providers to keep a synchronised copy at. The provider a run is placed on is added.",
      }),
    ),
    syncPolicy: Type.Optional(SyncPolicy),
  },
  { description: "A training dataset and where it is replicated." },
);

export const DataSetVersion = Type.Object(
  {
    digest: Str("Digest of the manifest (keys, sizes, content hashes): the version.", { maxLength: 128 }),
    objects: Type.Integer({ format: "int64", minimum: 0, description: "Objects in the version." }),
    bytes: Type.Integer({ format: "int64", minimum: 0, description: "Bytes in the version." }),
    computedAt: Type.Optional(Timestamp("When the version was computed.")),
  },
  { description: "A consistent version of the dataset." },
);

export const ReplicaStatus = Type.Object(
  {
    provider: ObjectName("The replica's provider."),
    version: Type.Optional(Str("The version (digest) the replica holds.", { maxLength: 128 })),
    phase: StrEnum(["Pending", "Syncing", "Synced", "Failed"] as const, "Replica state."),
    objectsSynced: Type.Optional(
      Type.Integer({ format: "int64", minimum: 0, description: "Objects copied or verified." }),
    ),
    bytesSynced: Type.Optional(
      Type.Integer({ format: "int64", minimum: 0, description: "Bytes copied or verified." }),
    ),
    lastSyncTime: Type.Optional(Timestamp("When the last sync finished.")),
    message: Type.Optional(Str("Details, e.g. the last error.", { maxLength: 4096 })),
  },
  { description: "One replica's sync state." },
);

export const DataSetStatus = Type.Object(
  {
    observedGeneration: ObservedGeneration,
    conditions: Type.Optional(Conditions),
    version: Type.Optional(DataSetVersion),
    replicas: Type.Optional(
      Type.Array(ReplicaStatus, {
        maxItems: 16,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["provider"],
        description: "Per-replica progress.",
      }),
    ),
    replicasSynced: Type.Optional(Int("Replicas holding the current version.", { minimum: 0 })),
  },
  { description: "The observed state of the dataset." },
);

export const DataSetSchema = resourceSchema(
  "DataSet",
  "DataSet is a training dataset in a provider's object store and its verified replicas on other clouds.",
  DataSetSpec,
  DataSetStatus,
);

export type DataSetSpec = Static<typeof DataSetSpec>;
export type DataSetStatus = Static<typeof DataSetStatus>;
export type DataSet = Resource<"DataSet", DataSetSpec, DataSetStatus>;
