/**
 * Step 2: quotes from the eligible alternatives, and their ranking.
 *
 * A quote is the alternative's price for the whole run per hour and when it could start
 * (now + the provider's `quoteLatency`). Ranking follows the run's policy: an explicit
 * alternatives list is an order of preference, so its order wins and price only breaks ties;
 * with no list every alternative is equal and the cheapest (then earliest, then by name) wins.
 */
import type { CloudProvider, TrainingRun } from "../api/v1alpha1/index.ts";
import { parseDuration } from "../util/duration.ts";
import { runPolicy } from "./eligibility.ts";
import { listPricePerHour } from "./pricing.ts";
import { timestamp } from "./time.ts";

export interface Quote {
  provider: string;
  region: string;
  pricePerHour: number;
  /** RFC 3339. */
  earliestStart: string;
  /** Position in the run's explicit alternatives list; 0 for all when the list is empty. */
  policyRank: number;
}

export function quoteFrom(run: TrainingRun, provider: CloudProvider, now: Date): Quote | undefined {
  const policy = runPolicy(run);
  const price = listPricePerHour(provider, policy.size);
  if (price === undefined) return undefined;
  const name = provider.metadata.name ?? "";
  const index = policy.alternatives.indexOf(name);
  const latencyMs = provider.spec.quoteLatency ? parseDuration(provider.spec.quoteLatency) : 0;
  return {
    provider: name,
    region: provider.spec.region,
    pricePerHour: price,
    earliestStart: timestamp(new Date(now.getTime() + latencyMs)),
    policyRank: index < 0 ? 0 : index,
  };
}

/** Quotes of the eligible alternatives, best first. */
export function collectQuotes(run: TrainingRun, alternatives: readonly CloudProvider[], now: Date): Quote[] {
  return rankQuotes(
    alternatives.map((p) => quoteFrom(run, p, now)).filter((q): q is Quote => q !== undefined),
  );
}

/** Policy order, then price, then earliest start, then name: best first. */
export function rankQuotes(quotes: readonly Quote[]): Quote[] {
  return [...quotes].sort(
    (a, b) =>
      a.policyRank - b.policyRank ||
      a.pricePerHour - b.pricePerHour ||
      a.earliestStart.localeCompare(b.earliestStart) ||
      a.provider.localeCompare(b.provider),
  );
}

/**
 * The competing quote the primary is offered to match: the alternative the run would go to
 * if the primary declined (the best by policy, then price).
 */
export function bestCompetingQuote(quotes: readonly Quote[]): Quote | undefined {
  return rankQuotes(quotes)[0];
}
