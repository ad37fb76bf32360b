/**
 * Step 1 of every placement attempt: which providers may take the run.
 *
 * The run's policy names the primary (default: the provider whose role is primary) and the
 * alternatives in order of preference (empty: every other provider). A provider is eligible
 * when it is in an allowed jurisdiction, offers the GPU type with enough GPUs per node and
 * nodes, and (when the run caps its price) can be at or under the cap. `serving` runs are
 * primary-exclusive: no alternative is ever eligible for them. Every provider left out gets a
 * reason a user can act on.
 */
import type { Static } from "@sinclair/typebox";
import type {
  CloudProvider,
  GpuSku as GpuSkuSchema,
  TrainingRun,
  WorkloadClass,
} from "../api/v1alpha1/index.ts";

type GpuSku = Static<typeof GpuSkuSchema>;

import { floorPricePerHour, listPricePerHour, type RequestSize } from "./pricing.ts";

export interface RunPolicy {
  workloadClass: WorkloadClass;
  size: RequestSize;
  /** The primary's name as the policy says, or undefined to use the provider with role primary. */
  primary?: string;
  /** Alternatives in order of preference; empty means every non-primary provider. */
  alternatives: string[];
  jurisdictions: string[];
  maxHourlyPrice?: number;
  decisionTimeout: string;
  matchCompetingOffers: boolean;
}

/** The run's placement policy with the API's defaults applied. */
export function runPolicy(run: TrainingRun): RunPolicy {
  const p = run.spec.placement ?? {};
  return {
    workloadClass: run.spec.workloadClass ?? "training",
    size: {
      gpuType: run.spec.resources.gpu.type,
      gpusPerNode: run.spec.resources.gpu.count,
      nodes: run.spec.resources.nodes ?? 1,
    },
    primary: p.primary,
    alternatives: p.alternatives ?? [],
    jurisdictions: p.jurisdictions ?? [],
    maxHourlyPrice: p.maxHourlyPrice,
    decisionTimeout: p.rofr?.decisionTimeout ?? "5m",
    matchCompetingOffers: p.rofr?.matchCompetingOffers ?? true,
  };
}

export interface Ineligible {
  provider: string;
  reason: string;
}

export interface Eligibility {
  /** The primary, when it exists and may take the run: it gets the offer. */
  primary?: CloudProvider;
  /** Eligible alternatives in policy order (explicit list order, else by name). */
  alternatives: CloudProvider[];
  /** Providers left out and why, the primary first. */
  ineligible: Ineligible[];
}

const nameOf = (p: CloudProvider) => p.metadata.name ?? "";

/** The GPU SKU a provider maps the type to, if any. */
export function skuFor(provider: CloudProvider, gpuType: string): GpuSku | undefined {
  return provider.spec.capacity.gpus.find((g) => g.type === gpuType);
}

/** Why a provider cannot take a run of this policy, or undefined when it can. */
function whyNot(
  provider: CloudProvider,
  policy: RunPolicy,
  role: "primary" | "alternative",
): string | undefined {
  const { size } = policy;
  if (policy.jurisdictions.length > 0 && !policy.jurisdictions.includes(provider.spec.jurisdiction)) {
    return `jurisdiction ${provider.spec.jurisdiction} not in [${policy.jurisdictions.join(", ")}]`;
  }
  const sku = skuFor(provider, size.gpuType);
  if (!sku) {
    const offered = provider.spec.capacity.gpus.map((g) => g.type).join(", ");
    return `GPU type ${size.gpuType} not offered (offers ${offered || "none"})`;
  }
  if (sku.gpusPerNode < size.gpusPerNode) {
    return `${sku.sku} has ${sku.gpusPerNode} GPUs per node, the run needs ${size.gpusPerNode}`;
  }
  if (sku.maxNodes !== undefined && sku.maxNodes < size.nodes) {
    return `at most ${sku.maxNodes} ${size.gpuType} nodes, the run needs ${size.nodes}`;
  }
  const list = listPricePerHour(provider, size);
  if (role === "alternative" && list === undefined) {
    return `no price for ${size.gpuType} (spec.pricing), so it cannot quote`;
  }
  if (policy.maxHourlyPrice !== undefined && list !== undefined) {
    // The primary may still come under the cap by matching a competing quote down to its floor.
    const lowest =
      role === "primary" && policy.matchCompetingOffers ? floorPricePerHour(provider, size)! : list;
    if (lowest > policy.maxHourlyPrice) {
      return `price $${lowest.toFixed(2)}/h above maxHourlyPrice $${policy.maxHourlyPrice.toFixed(2)}/h`;
    }
  }
  return undefined;
}

/** Why a provider that failed earlier in the attempt (`status.failedProviders`) is skipped. */
export const FAILED_THIS_ATTEMPT = "failed earlier in this attempt";

/**
 * Step 1: which providers may take the run, and why the others may not. `failed` names
 * providers that failed earlier in this attempt: they exist but are skipped, and say so
 * (not "not found").
 */
export function evaluateEligibility(
  run: TrainingRun,
  providers: readonly CloudProvider[],
  failed: ReadonlySet<string> = new Set(),
): Eligibility {
  const policy = runPolicy(run);
  const byName = new Map(providers.map((p) => [nameOf(p), p]));
  const ineligible: Ineligible[] = [];

  let primary: CloudProvider | undefined;
  const primaryName = policy.primary ?? providers.find((p) => p.spec.role === "primary")?.metadata.name;
  if (primaryName === undefined) {
    ineligible.push({ provider: "(primary)", reason: "no CloudProvider has role primary" });
  } else if (!byName.has(primaryName)) {
    ineligible.push({ provider: primaryName, reason: "CloudProvider not found" });
  } else if (failed.has(primaryName)) {
    ineligible.push({ provider: primaryName, reason: FAILED_THIS_ATTEMPT });
  } else {
    const candidate = byName.get(primaryName)!;
    const reason = whyNot(candidate, policy, "primary");
    if (reason) ineligible.push({ provider: primaryName, reason });
    else primary = candidate;
  }

  const explicit = policy.alternatives.length > 0;
  const names = explicit
    ? policy.alternatives
    : providers
        .map(nameOf)
        .filter((n) => n !== primaryName)
        .sort();
  const alternatives: CloudProvider[] = [];
  for (const name of names) {
    if (name === primaryName) continue;
    const candidate = byName.get(name);
    if (!candidate) {
      ineligible.push({ provider: name, reason: "CloudProvider not found" });
      continue;
    }
    if (failed.has(name)) {
      ineligible.push({ provider: name, reason: FAILED_THIS_ATTEMPT });
      continue;
    }
    if (policy.workloadClass === "serving") {
      ineligible.push({ provider: name, reason: "serving runs are primary-exclusive" });
      continue;
    }
    const reason = whyNot(candidate, policy, "alternative");
    if (reason) ineligible.push({ provider: name, reason });
    else alternatives.push(candidate);
  }
  return { primary, alternatives, ineligible };
}

/** True when nothing can take the run: neither the primary nor any alternative. */
export function noEligibleProvider(e: Eligibility): boolean {
  return !e.primary && e.alternatives.length === 0;
}

/** The reasons as one line, for a condition message: "oci-ashburn: jurisdiction US not in [EU]; …". */
export function ineligibleSummary(e: Eligibility): string {
  return e.ineligible.map((i) => `${i.provider}: ${i.reason}`).join("; ");
}

/** The condition message when no provider is eligible. */
export function noEligibleProviderMessage(e: Eligibility): string {
  return `no eligible provider: ${ineligibleSummary(e) || "no CloudProviders"}`;
}
