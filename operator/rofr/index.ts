/**
 * The right-of-first-refusal protocol, as pure functions (no I/O, no clock: callers pass
 * `now`). The TrainingRun controller runs one placement attempt as:
 *
 *   1. `evaluateEligibility(run, providers)` — the primary, the alternatives, and why others are out
 *   2. `collectQuotes(run, eligibility.alternatives, now)` — price and earliest start of each
 *   3. `buildOffer({ run, attempt, primary, quotes, now })` — create it (AlreadyExists = done)
 *   4. `decidePlacement({ run, offer, quotes, now, declines })` — primary, best alternative, or wait
 *
 * The primary's responder answers offers with `priceMatch(offer, provider)` plus its cloud's
 * capacity. While a run with `failback: WhenPrimaryAccepts` runs on an alternative,
 * `decideFailback` says when to offer it to the primary again (`buildFailbackOffer`) and when
 * to move back. See docs/rofr.md.
 */
export * from "./decision.ts";
export * from "./eligibility.ts";
export * from "./failback.ts";
export * from "./offer.ts";
export * from "./pricing.ts";
export * from "./quotes.ts";
export * from "./time.ts";
