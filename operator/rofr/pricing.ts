/**
 * Prices of a request and the price-match rule of the right of first refusal.
 *
 * All prices here are for the whole run per hour (USD): nodes × GPUs per node × price per
 * GPU-hour. They are rounded to 1/10000 USD so that comparisons between a quote and a floor
 * computed from the same numbers never flip on floating-point noise.
 */
import type { Static } from "@sinclair/typebox";
import type { CapacityOffer, CloudProvider, GpuPrice as GpuPriceSchema } from "../api/v1alpha1/index.ts";

type GpuPrice = Static<typeof GpuPriceSchema>;

/** What one request asks for, in the units prices are multiplied by. */
export interface RequestSize {
  gpuType: string;
  gpusPerNode: number;
  nodes: number;
}

export function roundPrice(usd: number): number {
  return Math.round(usd * 10_000) / 10_000;
}

export function gpuPrice(provider: CloudProvider, gpuType: string): GpuPrice | undefined {
  return provider.spec.pricing?.gpus.find((p) => p.type === gpuType);
}

/** The provider's list price for the whole request per hour, or undefined when it has no price. */
export function listPricePerHour(provider: CloudProvider, size: RequestSize): number | undefined {
  const p = gpuPrice(provider, size.gpuType);
  return p === undefined ? undefined : roundPrice(p.pricePerGpuHour * size.gpusPerNode * size.nodes);
}

/**
 * The lowest price per hour the provider accepts for the request when matching a competing
 * offer. A provider with no configured floor does not discount: its floor is its list price.
 */
export function floorPricePerHour(provider: CloudProvider, size: RequestSize): number | undefined {
  const p = gpuPrice(provider, size.gpuType);
  if (p === undefined) return undefined;
  return roundPrice((p.floorPerGpuHour ?? p.pricePerGpuHour) * size.gpusPerNode * size.nodes);
}

export type PriceAnswer =
  | { accept: true; pricePerHour: number | undefined; matched: boolean; message: string }
  | { accept: false; reason: "PriceNotMatched"; message: string };

const usd = (n: number) => `$${n.toFixed(2)}/h`;

/**
 * The price-match rule, applied by the primary's responder to an offer:
 * - no competing quote, or matching off → accept at the list price;
 * - list price at or under the competing quote → accept at the list price;
 * - competing quote at or above the floor → accept at the competing price (matched);
 * - competing quote below the floor → decline with PriceNotMatched.
 */
export function priceMatch(offer: CapacityOffer, provider: CloudProvider): PriceAnswer {
  const size: RequestSize = offer.spec.request;
  const list = listPricePerHour(provider, size) ?? offer.spec.listPricePerHour;
  const competing = offer.spec.competingQuote;
  const matching = offer.spec.matchCompetingOffers ?? true;
  if (!competing || !matching) {
    return {
      accept: true,
      pricePerHour: list,
      matched: false,
      message:
        list === undefined
          ? "accepted (no list price configured)"
          : `accepted at the list price ${usd(list)}${competing ? " (matching is off)" : ""}`,
    };
  }
  if (list !== undefined && list <= competing.pricePerHour) {
    return {
      accept: true,
      pricePerHour: list,
      matched: false,
      message: `accepted at the list price ${usd(list)}, at or under ${competing.provider}'s ${usd(competing.pricePerHour)}`,
    };
  }
  const floor = floorPricePerHour(provider, size) ?? list;
  if (floor === undefined || competing.pricePerHour >= floor) {
    return {
      accept: true,
      pricePerHour: competing.pricePerHour,
      matched: true,
      message: `accepted at ${usd(competing.pricePerHour)}, matching ${competing.provider}'s quote`,
    };
  }
  return {
    accept: false,
    reason: "PriceNotMatched",
    message: `${competing.provider}'s quote ${usd(competing.pricePerHour)} is below ${provider.metadata.name ?? "the primary"}'s floor ${usd(floor)} for ${size.nodes}×${size.gpusPerNode} ${size.gpuType}`,
  };
}
