/**
 * The sandbox scenario: what the simulated clouds look like (regions, jurisdictions, cluster
 * sizes, prices, capacity, latencies, injected failures) and the demo's runs. One YAML file
 * (`spillway sandbox --scenario FILE`); `DEFAULT_SCENARIO` when absent, which tells the spec's
 * demo story: Azure has no H100 capacity for run A (16 GPUs) → declined `NoCapacity` → OCI;
 * capacity for run B (8 GPUs) → accepted; the serving run then finds Azure full and waits.
 */
import { readFileSync } from "node:fs";
import { type Static, type TSchema, Type } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import { parse } from "yaml";
import {
  DNS_LABEL_PATTERN,
  DURATION_PATTERN,
  GPU_TYPE_PATTERN,
  JURISDICTION_PATTERN,
} from "../api/v1alpha1/common.ts";
import { parseDuration } from "../util/duration.ts";

const Name = (description: string) =>
  Type.String({ description, pattern: DNS_LABEL_PATTERN, minLength: 1, maxLength: 63 });
const Dur = (description: string, dflt?: string) =>
  Type.String({ description, pattern: DURATION_PATTERN, ...(dflt ? { default: dflt } : {}) });
const GpuType = Type.String({ pattern: GPU_TYPE_PATTERN, minLength: 1, maxLength: 63 });
const Jurisdiction = Type.String({ pattern: JURISDICTION_PATTERN, description: "e.g. US, EU" });
const Count = (description: string, min = 1, max = 10000) =>
  Type.Integer({ description, minimum: min, maximum: max });

export const ScenarioGpuSku = Type.Object(
  {
    type: GpuType,
    sku: Type.String({ minLength: 1, maxLength: 128, description: "SKU or shape of the cloud." }),
    gpusPerNode: Count("GPUs per node of this SKU.", 1, 16),
    maxNodes: Type.Optional(Count("Most nodes of this SKU Spillway may use.")),
  },
  { additionalProperties: false },
);

export const ScenarioPrice = Type.Object(
  {
    type: GpuType,
    pricePerGpuHour: Type.Number({ minimum: 0, maximum: 10000 }),
    floorPerGpuHour: Type.Optional(Type.Number({ minimum: 0, maximum: 10000 })),
  },
  { additionalProperties: false },
);

/** Nodes of one simulated Kubernetes cluster. */
export const ScenarioClusterSize = Type.Object(
  {
    nodes: Count("Nodes in the cluster.", 1, 1000),
    gpusPerNode: Count("GPUs per node.", 0, 16),
    gpuType: GpuType,
  },
  { additionalProperties: false },
);

export const ProvisioningFailure = Type.Object(
  {
    reason: Type.Union(
      [
        Type.Literal("QuotaExceeded"),
        Type.Literal("NoCapacity"),
        Type.Literal("ConfigInvalid"),
        Type.Literal("StackLocked"),
        Type.Literal("ProviderError"),
      ],
      { description: "The ProvisionError reason to raise." },
    ),
    message: Type.Optional(Type.String({ maxLength: 1024 })),
    /** How many `up` calls fail before provisioning succeeds; absent = every call fails. */
    times: Type.Optional(Count("Number of failing up calls.", 1)),
  },
  { additionalProperties: false },
);

export const AzureCloud = Type.Object(
  {
    name: Name("CloudProvider name of the primary."),
    region: Type.String({ minLength: 1, maxLength: 64 }),
    jurisdiction: Jurisdiction,
    capacity: Type.Array(ScenarioGpuSku, { minItems: 1 }),
    pricing: Type.Array(ScenarioPrice),
    cluster: ScenarioClusterSize,
    storage: Type.Object(
      { container: Type.String({ pattern: "^[a-z0-9]([a-z0-9-]{1,61}[a-z0-9])$", default: "datasets" }) },
      { additionalProperties: false, default: {} },
    ),
    /** The ARM simulator's own scenario (`operator/sandbox/arm`), passed through as is. */
    arm: Type.Record(Type.String(), Type.Unknown(), {
      default: {},
      description: "ARM simulator scenario: capacity per region and SKU, quota, latency, errors.",
    }),
  },
  { additionalProperties: false },
);

export const OciCloud = Type.Object(
  {
    name: Name("CloudProvider name of the alternative."),
    region: Type.String({ minLength: 1, maxLength: 64 }),
    jurisdiction: Jurisdiction,
    capacity: Type.Array(ScenarioGpuSku, { minItems: 1 }),
    pricing: Type.Array(ScenarioPrice),
    /** Size of each cluster the sandbox provisioner stands up. */
    cluster: ScenarioClusterSize,
    provisioning: Type.Object(
      {
        latency: Dur("Time from `up` to a ready cluster.", "2s"),
        destroyLatency: Dur("Time `destroy` takes.", "500ms"),
        failure: Type.Optional(ProvisioningFailure),
      },
      { additionalProperties: false, default: {} },
    ),
    maxClusters: Count("Most clusters Spillway may provision here.", 1, 100),
    idleTTL: Dur("Idle time after which a provisioned cluster is destroyed.", "1m"),
    storage: Type.Object(
      {
        bucket: Type.String({ pattern: "^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", default: "spillway-datasets" }),
      },
      { additionalProperties: false, default: {} },
    ),
  },
  { additionalProperties: false },
);

export const ScenarioTimings = Type.Object(
  {
    podStartup: Dur("Time a scheduled pod spends Pending before Running.", "500ms"),
    jobDuration: Dur("Time a pod runs before it succeeds.", "5s"),
  },
  { additionalProperties: false, default: {} },
);

export const DemoRun = Type.Object(
  {
    name: Name("TrainingRun name."),
    namespace: Type.Optional(Name("Namespace (default ml-team).")),
    workloadClass: Type.Union([Type.Literal("training"), Type.Literal("research"), Type.Literal("serving")]),
    gpuType: GpuType,
    gpusPerNode: Count("GPUs per node.", 1, 16),
    nodes: Count("Nodes.", 1, 1000),
    startAfter: Dur("Delay after the previous run was applied.", "0s"),
    /** What the demo expects to happen, printed beside the story. */
    expect: Type.Optional(Type.String({ maxLength: 256 })),
  },
  { additionalProperties: false },
);

export const ScenarioSchema = Type.Object(
  {
    clouds: Type.Object({ azure: AzureCloud, oci: OciCloud }, { additionalProperties: false }),
    timings: ScenarioTimings,
    demo: Type.Object(
      {
        namespace: Type.Optional(Name("Namespace of the demo's runs (default ml-team).")),
        runs: Type.Array(DemoRun, { default: [] }),
      },
      { additionalProperties: false, default: {} },
    ),
  },
  { additionalProperties: false },
);

export type Scenario = Static<typeof ScenarioSchema>;
export type ScenarioAzure = Static<typeof AzureCloud>;
export type ScenarioOci = Static<typeof OciCloud>;
export type ScenarioDemoRun = Static<typeof DemoRun>;

/** The demo story of the spec (see the file comment). */
export const DEFAULT_SCENARIO: Scenario = {
  clouds: {
    azure: {
      name: "azure-eastus",
      region: "eastus",
      jurisdiction: "US",
      capacity: [{ type: "H100", sku: "Standard_ND96isr_H100_v5", gpusPerNode: 8, maxNodes: 64 }],
      pricing: [{ type: "H100", pricePerGpuHour: 6.98, floorPerGpuHour: 4.1 }],
      cluster: { nodes: 2, gpusPerNode: 8, gpuType: "H100" },
      storage: { container: "datasets" },
      arm: {
        subscriptionId: "00000000-0000-0000-0000-000000000000",
        resourceGroup: "spillway-rg",
        aksCluster: "spillway-aks",
        nodePool: "gpuh100",
        capacityReservationGroup: "spillway-crg",
        // One H100 node free in eastus: run A (2 nodes) is declined NoCapacity, run B (1 node)
        // takes it, and the serving run (1 node) finds none left and waits.
        capacity: [{ region: "eastus", sku: "Standard_ND96isr_H100_v5", available: 1 }],
        quota: [{ region: "eastus", family: "standardNDSH100v5Family", limit: 192 }],
        latency: "200ms",
        errors: [],
      },
    },
    oci: {
      name: "oci-ashburn",
      region: "us-ashburn-1",
      jurisdiction: "US",
      capacity: [{ type: "H100", sku: "BM.GPU.H100.8", gpusPerNode: 8, maxNodes: 32 }],
      pricing: [{ type: "H100", pricePerGpuHour: 4.5 }],
      cluster: { nodes: 2, gpusPerNode: 8, gpuType: "H100" },
      provisioning: { latency: "3s", destroyLatency: "500ms" },
      maxClusters: 2,
      idleTTL: "1m",
      storage: { bucket: "spillway-datasets" },
    },
  },
  timings: { podStartup: "500ms", jobDuration: "8s" },
  demo: {
    namespace: "ml-team",
    runs: [
      {
        name: "run-a",
        workloadClass: "training",
        gpuType: "H100",
        gpusPerNode: 8,
        nodes: 2,
        startAfter: "0s",
        expect: "Azure declines (NoCapacity) → provisioned on OCI",
      },
      {
        name: "run-b",
        workloadClass: "training",
        gpuType: "H100",
        gpusPerNode: 8,
        nodes: 1,
        startAfter: "2s",
        expect: "Azure accepts",
      },
      {
        name: "serving",
        workloadClass: "serving",
        gpuType: "H100",
        gpusPerNode: 8,
        nodes: 1,
        startAfter: "2s",
        expect: "Azure has no capacity left → waits (never spills over)",
      },
    ],
  },
};

export class ScenarioError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ScenarioError";
  }
}

function firstError(schema: TSchema, value: unknown): string | undefined {
  const err = Value.Errors(schema, value).First();
  if (!err) return undefined;
  const at = err.path === "" ? "(root)" : err.path;
  return `${at}: ${err.message}`;
}

/**
 * Validates a parsed scenario, filling defaults. Throws `ScenarioError` whose message is one
 * line naming the field (`/clouds/oci/maxClusters: Expected integer`).
 */
export function validateScenario(raw: unknown, source = "scenario"): Scenario {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new ScenarioError(`${source}: expected a mapping with clouds, timings and demo`);
  }
  const value = Value.Default(ScenarioSchema, structuredClone(raw));
  const problem = firstError(ScenarioSchema, value);
  if (problem) throw new ScenarioError(`${source}: ${problem}`);
  const scenario = value as Scenario;
  for (const [path, text] of durations(scenario)) {
    try {
      parseDuration(text);
    } catch (e) {
      throw new ScenarioError(`${source}: ${path}: ${(e as Error).message}`);
    }
  }
  for (const cloud of [scenario.clouds.azure, scenario.clouds.oci]) {
    if (!cloud.capacity.some((c) => c.type === cloud.cluster.gpuType)) {
      const where = cloud === scenario.clouds.azure ? "azure" : "oci";
      throw new ScenarioError(
        `${source}: /clouds/${where}/cluster/gpuType: ${cloud.cluster.gpuType} is not in the cloud's capacity list`,
      );
    }
  }
  if (scenario.clouds.azure.name === scenario.clouds.oci.name) {
    throw new ScenarioError(`${source}: /clouds/oci/name: must differ from the azure cloud's name`);
  }
  return scenario;
}

function durations(s: Scenario): Array<[string, string]> {
  return [
    ["/timings/podStartup", s.timings.podStartup],
    ["/timings/jobDuration", s.timings.jobDuration],
    ["/clouds/oci/provisioning/latency", s.clouds.oci.provisioning.latency],
    ["/clouds/oci/provisioning/destroyLatency", s.clouds.oci.provisioning.destroyLatency],
    ["/clouds/oci/idleTTL", s.clouds.oci.idleTTL],
    ...s.demo.runs.map((r, i): [string, string] => [`/demo/runs/${i}/startAfter`, r.startAfter]),
  ];
}

/** Reads and validates a scenario file (YAML or JSON); the default scenario when `file` is absent. */
export function loadScenario(file?: string): Scenario {
  if (!file) return structuredClone(DEFAULT_SCENARIO);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new ScenarioError(`${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = parse(text);
  } catch (e) {
    throw new ScenarioError(`${file}: ${(e as Error).message.split("\n")[0]}`);
  }
  return validateScenario(raw, file);
}

/** Timings in milliseconds, as the simulated clusters take them. */
export function scenarioTimingsMs(s: Scenario): { podStartupMs: number; jobDurationMs: number } {
  return {
    podStartupMs: parseDuration(s.timings.podStartup),
    jobDurationMs: parseDuration(s.timings.jobDuration),
  };
}
