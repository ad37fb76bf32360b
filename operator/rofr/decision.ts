/**
 * Step 4: where the attempt goes, from the answered offer.
 *
 * Accepted → the primary, at the accepted price. Declined, TimedOut or Withdrawn → the best
 * alternative (policy order, then price). `serving` runs never spill over: they wait and the
 * primary is offered the run again after an exponential backoff (a new attempt, so a new
 * offer). A run with no eligible alternative waits the same way.
 */
import type { Static } from "@sinclair/typebox";
import type {
  CapacityOffer,
  CapacityOfferStatus,
  Placement as PlacementSchema,
  TrainingRun,
} from "../api/v1alpha1/index.ts";

/** The run's `status.placement`. */
export type Placement = Static<typeof PlacementSchema>;

import { runPolicy } from "./eligibility.ts";
import { timeoutStatus, untilDeadline } from "./offer.ts";
import { type Quote, rankQuotes } from "./quotes.ts";
import { timestamp } from "./time.ts";

export interface Backoff {
  baseMs: number;
  maxMs: number;
}

/** Default re-offer backoff of a waiting run: 30 s, doubling, at most 10 min. */
export const DEFAULT_REOFFER_BACKOFF: Backoff = { baseMs: 30_000, maxMs: 600_000 };

/**
 * Delay before offering a waiting run to the primary again, after `declines` declined offers
 * in a row (1 → base, 2 → 2×base, …, capped). `jitter` ∈ [0,1) spreads re-offers of many runs
 * declined at once over up to +10%; leave it 0 for a deterministic delay.
 */
export function reofferDelayMs(
  declines: number,
  backoff: Backoff = DEFAULT_REOFFER_BACKOFF,
  jitter = 0,
): number {
  const n = Math.max(1, Math.floor(declines));
  const delay = Math.min(backoff.maxMs, backoff.baseMs * 2 ** Math.min(n - 1, 30));
  return Math.round(delay * (1 + 0.1 * jitter));
}

/** Declined/TimedOut/Withdrawn offers in a row, counting from the newest (offers newest first). */
export function consecutiveDeclines(offersNewestFirst: readonly CapacityOffer[]): number {
  let n = 0;
  for (const o of offersNewestFirst) {
    const outcome = o.status?.outcome;
    if (outcome === undefined) continue;
    if (outcome === "Accepted") break;
    n++;
  }
  return n;
}

export type PlacementDecision =
  /** The offer is open: look again after `retryAfterMs` (its deadline). */
  | { action: "await"; retryAfterMs: number }
  /** Place the attempt. `offerStatus`, when set, must be written to the offer first (TimedOut). */
  | {
      action: "place";
      target: "primary" | "alternative";
      placement: Placement;
      offerStatus?: CapacityOfferStatus;
    }
  /** Do not place; re-offer to the primary (a new attempt) after `retryAfterMs`. */
  | {
      action: "wait";
      reason: "ServingWaitsForPrimary" | "NoEligibleAlternative";
      message: string;
      retryAfterMs: number;
      offerStatus?: CapacityOfferStatus;
    };

export interface DecisionInput {
  run: TrainingRun;
  offer: CapacityOffer;
  /** Quotes of the eligible alternatives (any order). */
  quotes: readonly Quote[];
  now: Date;
  /** Declined offers in a row including this one, for the backoff (default 1). */
  declines?: number;
  backoff?: Backoff;
}

function whyNotPrimary(status: CapacityOfferStatus): string {
  switch (status.outcome) {
    case "Declined":
      return `PrimaryDeclined:${status.reason ?? "ProviderError"}`;
    case "TimedOut":
      return "PrimaryTimedOut";
    default:
      return "PrimaryWithdrawn";
  }
}

/** "declined (NoCapacity: …)", "did not answer by the deadline", "withdrew the offer". */
function answerPhrase(status: CapacityOfferStatus): string {
  switch (status.outcome) {
    case "Declined":
      return `declined (${status.reason ?? "ProviderError"}${status.message ? `: ${status.message}` : ""})`;
    case "TimedOut":
      return "did not answer by the deadline";
    default:
      return "withdrew the offer";
  }
}

/** Decides the attempt's placement from its offer (and records the timeout when it is due). */
export function decidePlacement(input: DecisionInput): PlacementDecision {
  const { run, offer, now } = input;
  const expired = timeoutStatus(offer, now);
  const status = expired ?? offer.status;
  if (!status?.outcome) return { action: "await", retryAfterMs: untilDeadline(offer, now) };
  const common = { decidedAt: timestamp(now), attempt: offer.spec.attempt, offer: offer.metadata.name };
  const withStatus = expired ? { offerStatus: expired } : {};

  if (status.outcome === "Accepted") {
    return {
      action: "place",
      target: "primary",
      placement: {
        provider: offer.spec.provider,
        region: offer.spec.request.region,
        ...(status.acceptedPricePerHour !== undefined ? { pricePerHour: status.acceptedPricePerHour } : {}),
        reason: "PrimaryAccepted",
        ...common,
      },
      ...withStatus,
    };
  }

  const why = whyNotPrimary(status);
  const retryAfterMs = reofferDelayMs(input.declines ?? 1, input.backoff);
  if (runPolicy(run).workloadClass === "serving") {
    return {
      action: "wait",
      reason: "ServingWaitsForPrimary",
      message: `serving runs are primary-exclusive: ${offer.spec.provider} ${answerPhrase(status)}; offering again in ${Math.round(retryAfterMs / 1000)}s`,
      retryAfterMs,
      ...withStatus,
    };
  }
  const best = rankQuotes(input.quotes)[0];
  if (!best) {
    return {
      action: "wait",
      reason: "NoEligibleAlternative",
      message: `${offer.spec.provider}: ${why} and no eligible alternative; offering again in ${Math.round(retryAfterMs / 1000)}s`,
      retryAfterMs,
      ...withStatus,
    };
  }
  return {
    action: "place",
    target: "alternative",
    placement: {
      provider: best.provider,
      region: best.region,
      pricePerHour: best.pricePerHour,
      reason: why,
      ...common,
    },
    ...withStatus,
  };
}

/**
 * Placement when the primary is not eligible (e.g. its jurisdiction is not allowed): no offer
 * is made and the best alternative is taken directly. Undefined when there is none.
 */
export function placeWithoutPrimary(
  quotes: readonly Quote[],
  attempt: number,
  now: Date,
): Placement | undefined {
  const best = rankQuotes(quotes)[0];
  if (!best) return undefined;
  return {
    provider: best.provider,
    region: best.region,
    pricePerHour: best.pricePerHour,
    reason: "PrimaryIneligible",
    decidedAt: timestamp(now),
    attempt,
  };
}
