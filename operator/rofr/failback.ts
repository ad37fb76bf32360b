/**
 * Failback (placement step 8, `placement.failback: WhenPrimaryAccepts`): while a run runs on
 * an alternative, the primary is offered it again periodically; when it accepts, the run moves
 * back at a checkpoint boundary. Only runs with checkpoints to resume from fail back.
 *
 * A failback check is not a placement attempt of its own: it asks the primary on behalf of the
 * *next* attempt (`spec.attempt` = the running attempt + 1, `spec.purpose: Failback`), so that
 *   - an accepted check's reservation stays bound to that attempt (the CapacityOffer controller
 *     keeps an Accepted offer's reservation while the run's attempt is not past the offer's,
 *     and while the attempt's placement, once written, is on the offer's provider), and
 *   - when accepted, the check's offer *is* the next attempt's offer: the run starts attempt
 *     N+1 with it, so that attempt still has exactly one Accepted offer to the primary.
 * Declined checks leave the run where it is; they are kept in the ledger like every offer.
 *
 * Pure functions: no I/O, no clock (callers pass `now`).
 */
import { createHash } from "node:crypto";
import type { CapacityOffer, CloudProvider, TrainingRun } from "../api/v1alpha1/index.ts";
import { runPolicy } from "./eligibility.ts";
import { buildOffer, labelValue, timeoutStatus, untilDeadline } from "./offer.ts";
import { type Quote, quoteFrom } from "./quotes.ts";
import { timestamp } from "./time.ts";

export const LABEL_PURPOSE = "spillway.dev/purpose";

/** Why failback does not apply to a run without checkpoints to resume from. */
export const NO_CHECKPOINTS =
  "failback moves a run at a checkpoint boundary: it needs spec.checkpoints with resume Latest, else the run would start over";

export interface FailbackTiming {
  /** Wait after the primary last said no (or after the placement) before the next check. */
  intervalMs: number;
  /** Ceiling of the backoff: the interval doubles after each declined check up to this. */
  maxIntervalMs: number;
}

/** The name of a run's k-th failback offer: `<run>-fb<k>` (shortened with a hash past 253). */
export function failbackOfferName(runName: string, check: number): string {
  const suffix = `-fb${check}`;
  if (runName.length + suffix.length <= 253) return `${runName}${suffix}`;
  const hash = createHash("sha256").update(runName).digest("hex").slice(0, 8);
  const head = runName.slice(0, 253 - suffix.length - 9).replace(/[-.]+$/, "");
  return `${head}-${hash}${suffix}`;
}

/** Whether an offer is a failback check (spec or label; the label is what selectors use). */
export function isFailbackOffer(offer: CapacityOffer): boolean {
  return offer.spec.purpose === "Failback" || offer.metadata.labels?.[LABEL_PURPOSE] === "failback";
}

/**
 * Why failback does not apply to the run now, or undefined when it does. It applies to a
 * `training`/`research` run with `failback: WhenPrimaryAccepts` and checkpoints (resume
 * Latest) that is Running on a provider other than the primary. `serving` runs are always on
 * the primary.
 */
export function failbackNotApplicable(run: TrainingRun, primaryName: string | undefined): string | undefined {
  const policy = runPolicy(run);
  if ((run.spec.placement?.failback ?? "Never") !== "WhenPrimaryAccepts") return "failback is Never";
  if (policy.workloadClass === "serving") return "serving runs are always on the primary";
  // The move happens at a checkpoint boundary; a run with no checkpoints to resume from would
  // start over on the primary and lose all its work, so it stays where it is.
  if (!run.spec.checkpoints || run.spec.checkpoints.resume === "None") return NO_CHECKPOINTS;
  if (!primaryName) return "no eligible primary";
  const placed = run.status?.placement;
  if (!placed) return "not placed";
  if (placed.provider === primaryName) return "already on the primary";
  if (run.status?.phase !== "Running") return `the run is ${run.status?.phase ?? "Pending"}, not Running`;
  return undefined;
}

/**
 * Delay before check k+1 after `declines` declined checks in a row: the interval, doubling
 * with each further decline, capped. A deterministic per-run spread of up to +10 % (from the
 * run's uid) keeps many runs declined at once from asking again in the same instant, and is
 * the same after an operator restart.
 */
export function failbackDelayMs(declines: number, timing: FailbackTiming, runUid = ""): number {
  const n = Math.max(1, Math.floor(declines));
  const base = Math.min(
    Math.max(timing.maxIntervalMs, timing.intervalMs),
    timing.intervalMs * 2 ** Math.min(n - 1, 30),
  );
  const spread = runUid
    ? Number.parseInt(createHash("sha256").update(runUid).digest("hex").slice(0, 4), 16) / 0x10000
    : 0;
  return Math.round(base * (1 + 0.1 * spread));
}

/** Declined/TimedOut/Withdrawn failback offers in a row, newest first, since `since` (RFC 3339). */
export function consecutiveFailbackDeclines(
  offersNewestFirst: readonly CapacityOffer[],
  since?: string,
): number {
  const from = since ? Date.parse(since) : Number.NEGATIVE_INFINITY;
  let n = 0;
  for (const o of offersNewestFirst) {
    if (!isFailbackOffer(o)) continue;
    const outcome = o.status?.outcome;
    if (outcome === undefined) continue;
    if (outcome === "Accepted") break;
    if (Date.parse(o.status?.respondedAt ?? "") < from) break;
    n++;
  }
  return n;
}

export interface FailbackInput {
  run: TrainingRun;
  primaryName?: string;
  /** The newest failback offer's name as the run's status records it, if any. */
  latestName?: string;
  /** That offer, when it exists (undefined: not created yet, e.g. a crash right after the status write). */
  latest?: CapacityOffer;
  /** The run's offers, newest first (for the backoff). */
  offersNewestFirst: readonly CapacityOffer[];
  now: Date;
  timing: FailbackTiming;
}

export type FailbackDecision =
  /** Failback does not apply (see `why`). */
  | { action: "none"; why: string }
  /** Nothing to do until `afterMs` from now (next check, or the open offer's deadline). */
  | { action: "wait"; afterMs: number }
  /** Create the offer status already names (its status was written before it was created). */
  | { action: "create"; name: string }
  /** A check is due: record check `check` in status, then create its offer. */
  | { action: "check"; check: number }
  /** The open offer's deadline passed: write `TimedOut`, then wait for the next check. */
  | { action: "timeout"; offerStatus: NonNullable<CapacityOffer["status"]> }
  /** The newest check was answered (not Accepted): record it in status, then wait. */
  | { action: "declined"; outcome: "Declined" | "TimedOut" | "Withdrawn"; afterMs: number }
  /** The primary accepted the newest check: move back. */
  | { action: "move"; offer: CapacityOffer };

/** What a Running run on an alternative does about failback now. */
export function decideFailback(input: FailbackInput): FailbackDecision {
  const { run, latest, now, timing } = input;
  const why = failbackNotApplicable(run, input.primaryName);
  if (why) return { action: "none", why };
  const checks = run.status?.failback?.checks ?? 0;
  const attempt = run.status?.attempt ?? 1;
  // The newest check counts only when it is this run's and asks for the next attempt; a check
  // left from an earlier attempt (the run moved since) is history.
  const current =
    latest && latest.spec.run.uid === run.metadata.uid && latest.spec.attempt === attempt + 1
      ? latest
      : undefined;
  if (input.latestName && !latest && checks > 0) return { action: "create", name: input.latestName };
  if (current) {
    const expired = timeoutStatus(current, now);
    if (expired) return { action: "timeout", offerStatus: expired };
    const outcome = current.status?.outcome;
    if (outcome === undefined) return { action: "wait", afterMs: untilDeadline(current, now) };
    if (outcome === "Accepted") return { action: "move", offer: current };
  }
  // The next check is due an interval (with backoff) after the primary last said no: the
  // newest answered check of this placement, else the placement's own decision.
  const placedAt = Date.parse(run.status?.placement?.decidedAt ?? "") || now.getTime();
  const answeredAt = current ? Date.parse(current.status?.respondedAt ?? "") : Number.NaN;
  const anchor = Number.isFinite(answeredAt) ? Math.max(placedAt, answeredAt) : placedAt;
  const declines = consecutiveFailbackDeclines(input.offersNewestFirst, run.status?.placement?.decidedAt);
  const dueIn = anchor + failbackDelayMs(declines, timing, run.metadata.uid) - now.getTime();
  const answered = current?.status?.outcome;
  if (answered && answered !== "Accepted" && run.status?.failback?.outcome !== answered) {
    return { action: "declined", outcome: answered, afterMs: Math.max(0, dueIn) };
  }
  if (dueIn > 0) return { action: "wait", afterMs: dueIn };
  return { action: "check", check: checks + 1 };
}

/**
 * The competing quote of a failback offer: what the run pays where it runs now (its
 * placement's price), else the current provider's list price. The primary matches it or not.
 */
export function currentQuote(
  run: TrainingRun,
  current: CloudProvider | undefined,
  now: Date,
): Quote | undefined {
  const p = run.status?.placement;
  if (!p) return undefined;
  if (p.pricePerHour !== undefined) {
    return {
      provider: p.provider,
      region: p.region ?? current?.spec.region ?? "",
      pricePerHour: p.pricePerHour,
      earliestStart: timestamp(now),
      policyRank: 0,
    };
  }
  return current ? quoteFrom(run, current, now) : undefined;
}

/** Builds failback check `check`'s offer: for attempt `attempt + 1`, named `name`. */
export function buildFailbackOffer(input: {
  run: TrainingRun;
  primary: CloudProvider;
  current?: CloudProvider;
  name: string;
  now: Date;
}): CapacityOffer {
  const { run, primary, current, name, now } = input;
  const quote = currentQuote(run, current, now);
  const offer = buildOffer({
    run,
    attempt: (run.status?.attempt ?? 1) + 1,
    primary,
    quotes: quote ? [quote] : [],
    now,
  });
  offer.metadata.name = name;
  offer.metadata.labels = { ...offer.metadata.labels, [LABEL_PURPOSE]: labelValue("failback") };
  offer.spec = { ...offer.spec, purpose: "Failback" };
  return offer;
}
