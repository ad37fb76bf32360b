/**
 * The ARM emulator's scenario: the `clouds.azure.arm` section of the sandbox scenario
 * (`operator/sandbox/scenario.ts` passes it through untyped; it is validated here).
 *
 * What it models, and nothing more: free nodes per region and SKU (what a capacity
 * reservation draws from), vCPU quota per VM family and region (what `Usage.list` reports and
 * a reservation is charged against), the SKU catalogue (`ResourceSkus.list`: which SKUs a
 * region offers, their family and vCPUs), one AKS cluster with its GPU agent pool, a latency
 * added to every call, and ARM error bodies injected into named operations.
 *
 * Prices are not here on purpose: ARM has no price or floor API (the Retail Prices API is a
 * separate public service and a negotiated floor is a contract term), so the responder takes
 * list price and floor from the CloudProvider's `spec.pricing`, which the sandbox fills from
 * the scenario's `clouds.azure.pricing`.
 */
import { type Static, Type } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import { parseDuration } from "../../util/duration.ts";

/** The operations the emulator serves; an injected error names one of them (or `*`). */
export const ARM_OPERATIONS = [
  "token",
  "resourceSkus.list",
  "usage.list",
  "capacityReservationGroups.get",
  "capacityReservationGroups.createOrUpdate",
  "capacityReservations.get",
  "capacityReservations.createOrUpdate",
  "capacityReservations.delete",
  "capacityReservations.list",
  "agentPools.get",
  "agentPools.createOrUpdate",
  "operations.get",
] as const;
export type ArmOperation = (typeof ARM_OPERATIONS)[number];

const Region = Type.String({ minLength: 1, maxLength: 64 });
const SkuName = Type.String({ minLength: 1, maxLength: 128 });

export const ArmCapacity = Type.Object(
  {
    region: Region,
    sku: SkuName,
    available: Type.Integer({ minimum: 0, description: "Free nodes of this SKU in the region." }),
  },
  { additionalProperties: false },
);

export const ArmQuota = Type.Object(
  {
    region: Region,
    family: Type.String({ minLength: 1, description: "VM family (standardNDSH100v5Family) or `cores`." }),
    limit: Type.Integer({ minimum: 0, description: "vCPU limit." }),
    used: Type.Optional(Type.Integer({ minimum: 0, description: "vCPUs used by things outside Spillway." })),
  },
  { additionalProperties: false },
);

export const ArmSku = Type.Object(
  {
    name: SkuName,
    family: Type.String({ minLength: 1 }),
    vcpus: Type.Integer({ minimum: 1 }),
    gpus: Type.Optional(Type.Integer({ minimum: 0 })),
  },
  { additionalProperties: false },
);

export const ArmInjectedError = Type.Object(
  {
    operation: Type.Union([...ARM_OPERATIONS.map((o) => Type.Literal(o)), Type.Literal("*")], {
      description: "Which call fails.",
    }),
    code: Type.String({ minLength: 1, description: "ARM error code, e.g. ZonalAllocationFailed." }),
    message: Type.Optional(Type.String()),
    status: Type.Optional(
      Type.Integer({
        minimum: 400,
        maximum: 599,
        description: "HTTP status; Azure's usual one for the code.",
      }),
    ),
    times: Type.Optional(
      Type.Integer({ minimum: 1, description: "Fail the next N calls; absent = every call." }),
    ),
    retryAfterSeconds: Type.Optional(
      Type.Integer({ minimum: 0, description: "Retry-After header (429/503)." }),
    ),
    via: Type.Optional(
      Type.Union([Type.Literal("response"), Type.Literal("operation")], {
        description:
          "response (default): the call itself fails; operation: with asyncOperations, the call is accepted and its async operation ends Failed with this error, as Azure reports allocation failures.",
      }),
    ),
    details: Type.Optional(
      Type.Array(
        Type.Object({ code: Type.String({ minLength: 1 }), message: Type.Optional(Type.String()) }),
        {
          description: "Nested errors, as wrapper codes (InvalidTemplateDeployment) carry them.",
        },
      ),
    ),
  },
  { additionalProperties: false },
);

export const ArmAuth = Type.Object(
  {
    tenantId: Type.Optional(Type.String({ minLength: 1 })),
    clientId: Type.Optional(Type.String({ minLength: 1 })),
    clientSecret: Type.Optional(Type.String({ minLength: 1 })),
  },
  { additionalProperties: false, description: "When set, the token endpoint accepts only these." },
);

export const ArmConfigSchema = Type.Object(
  {
    subscriptionId: Type.String({ minLength: 1, default: "00000000-0000-0000-0000-000000000000" }),
    resourceGroup: Type.String({ minLength: 1, default: "spillway-rg" }),
    aksCluster: Type.String({ minLength: 1, default: "spillway-aks" }),
    nodePool: Type.String({ minLength: 1, default: "gpuh100" }),
    /** VM size of the GPU pool; the first capacity entry's SKU when absent. */
    nodePoolSku: Type.Optional(SkuName),
    /** Nodes the pool starts with (usually 0: every node comes from a reservation). */
    nodePoolCount: Type.Integer({ minimum: 0, default: 0 }),
    capacityReservationGroup: Type.String({ minLength: 1, default: "spillway-crg" }),
    /** Location of the cluster and the group; the first capacity entry's region when absent. */
    location: Type.Optional(Region),
    capacity: Type.Array(ArmCapacity, { default: [] }),
    quota: Type.Array(ArmQuota, { default: [] }),
    /** Added to (or overriding) the built-in catalogue of Azure GPU SKUs. */
    skus: Type.Array(ArmSku, { default: [] }),
    latency: Type.String({ default: "0s", description: "Added to every call (Go duration)." }),
    /**
     * Long-running operations the Azure way: PUT/DELETE answer 201/202 with an
     * Azure-AsyncOperation URL that the SDK polls; allocation failures end the operation Failed.
     * Off: they complete in the response itself (fewer calls, same outcomes).
     */
    asyncOperations: Type.Boolean({ default: false }),
    errors: Type.Array(ArmInjectedError, { default: [] }),
    auth: Type.Optional(ArmAuth),
  },
  { additionalProperties: false },
);

export type ArmConfig = Static<typeof ArmConfigSchema>;
export type ArmConfigInput = Partial<ArmConfig>;
export type ArmCapacityEntry = Static<typeof ArmCapacity>;
export type ArmQuotaEntry = Static<typeof ArmQuota>;
export type ArmSkuInfo = Static<typeof ArmSku>;
export type ArmInjectedErrorSpec = Static<typeof ArmInjectedError>;

/**
 * Azure's GPU VM sizes with their quota family and vCPUs (learn.microsoft.com, "Sizes for
 * virtual machines in Azure", ND/NC series). The family names are what `Usage.list` reports.
 */
export const AZURE_GPU_SKUS: readonly ArmSkuInfo[] = [
  { name: "Standard_ND96isr_H100_v5", family: "standardNDSH100v5Family", vcpus: 96, gpus: 8 },
  { name: "Standard_ND96isr_H200_v5", family: "standardNDSH200V5Family", vcpus: 96, gpus: 8 },
  { name: "Standard_ND96asr_v4", family: "standardNDASv4_A100Family", vcpus: 96, gpus: 8 },
  { name: "Standard_ND96amsr_A100_v4", family: "standardNDAMSv4_A100Family", vcpus: 96, gpus: 8 },
  { name: "Standard_NC24ads_A100_v4", family: "StandardNCADSA100v4Family", vcpus: 24, gpus: 1 },
  { name: "Standard_NC40ads_H100_v5", family: "standardNCadsH100v5Family", vcpus: 40, gpus: 1 },
  { name: "Standard_NC80adis_H100_v5", family: "standardNCadsH100v5Family", vcpus: 80, gpus: 2 },
  { name: "Standard_ND96is_MI300X_v5", family: "standardNDISMI300Xv5Family", vcpus: 96, gpus: 8 },
];

export class ArmConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ArmConfigError";
  }
}

/** Validates the `arm` section, filling defaults; one-line errors naming the field. */
export function parseArmConfig(raw: unknown, source = "clouds.azure.arm"): ArmConfig {
  const value = Value.Default(ArmConfigSchema, structuredClone(raw ?? {}));
  const err = Value.Errors(ArmConfigSchema, value).First();
  if (err) throw new ArmConfigError(`${source}${err.path || ""}: ${err.message}`);
  const config = value as ArmConfig;
  try {
    parseDuration(config.latency);
  } catch (e) {
    throw new ArmConfigError(`${source}/latency: ${(e as Error).message}`);
  }
  for (const [i, c] of config.capacity.entries()) {
    if (!skuInfo(config, c.sku)) {
      throw new ArmConfigError(
        `${source}/capacity/${i}/sku: ${c.sku} is not in the SKU catalogue; add it under skus (name, family, vcpus)`,
      );
    }
  }
  return config;
}

export function skuInfo(config: Pick<ArmConfig, "skus">, name: string): ArmSkuInfo | undefined {
  const lower = name.toLowerCase();
  return (
    config.skus.find((s) => s.name.toLowerCase() === lower) ??
    AZURE_GPU_SKUS.find((s) => s.name.toLowerCase() === lower)
  );
}
