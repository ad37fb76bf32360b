/**
 * Step 3: the CapacityOffer to the primary — the ledger entry of one placement attempt.
 *
 * The name is a function of the run and the attempt only (`<run>-a<attempt>`), so there is
 * exactly one offer per attempt: an operator that restarts and builds the offer again gets
 * AlreadyExists from the API server instead of a duplicate. The spec is built from the run,
 * the primary and the quotes once; the API makes it immutable after creation.
 */
import { createHash } from "node:crypto";
import {
  API_VERSION,
  type CapacityOffer,
  type CapacityOfferStatus,
  type CloudProvider,
  type TrainingRun,
} from "../api/v1alpha1/index.ts";
import { parseDuration } from "../util/duration.ts";
import { runPolicy, skuFor } from "./eligibility.ts";
import { listPricePerHour } from "./pricing.ts";
import { bestCompetingQuote, type Quote } from "./quotes.ts";
import { timestamp } from "./time.ts";

export const LABEL_RUN_UID = "spillway.dev/run-uid";
export const LABEL_RUN_NAME = "spillway.dev/run";
export const LABEL_ATTEMPT = "spillway.dev/attempt";
export const LABEL_PROVIDER = "spillway.dev/provider";

const shortHash = (s: string) => createHash("sha256").update(s).digest("hex").slice(0, 8);

/** Truncates to `max` characters keeping it unique (a hash of the whole) and DNS-valid. */
function shorten(s: string, max: number): string {
  if (s.length <= max) return s;
  const head = s.slice(0, max - 9).replace(/[-.]+$/, "");
  return `${head}-${shortHash(s)}`;
}

/** The offer's name for a run's attempt: `<run>-a<attempt>` (shortened with a hash past 253). */
export function offerName(runName: string, attempt: number): string {
  const suffix = `-a${attempt}`;
  if (runName.length + suffix.length <= 253) return `${runName}${suffix}`;
  return `${shorten(runName, 253 - suffix.length)}${suffix}`;
}

/** A label value (≤ 63 characters, alphanumeric at both ends). */
export function labelValue(s: string): string {
  return shorten(s, 63).replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, "");
}

/** Labels selecting a run's offers (by uid, so a new run with the same name is separate). */
export function offerSelector(run: TrainingRun): string {
  return `${LABEL_RUN_UID}=${run.metadata.uid}`;
}

export interface OfferInput {
  run: TrainingRun;
  attempt: number;
  primary: CloudProvider;
  /** The eligible alternatives' quotes; the best becomes the competing quote. */
  quotes: readonly Quote[];
  now: Date;
}

/** Builds the attempt's offer. Pure: the same input gives the same object. */
export function buildOffer({ run, attempt, primary, quotes, now }: OfferInput): CapacityOffer {
  const runName = run.metadata.name;
  const uid = run.metadata.uid;
  if (!runName || !uid || !run.metadata.namespace) {
    throw new Error("buildOffer needs a stored run (name, namespace and uid)");
  }
  if (!Number.isInteger(attempt) || attempt < 1) throw new Error(`attempt must be ≥ 1, got ${attempt}`);
  const policy = runPolicy(run);
  const primaryName = primary.metadata.name ?? "";
  const sku = skuFor(primary, policy.size.gpuType);
  const competing = bestCompetingQuote(quotes);
  const list = listPricePerHour(primary, policy.size);
  const deadline = new Date(now.getTime() + parseDuration(policy.decisionTimeout));

  return {
    apiVersion: API_VERSION,
    kind: "CapacityOffer",
    metadata: {
      name: offerName(runName, attempt),
      namespace: run.metadata.namespace,
      labels: {
        [LABEL_RUN_UID]: labelValue(uid),
        [LABEL_RUN_NAME]: labelValue(runName),
        [LABEL_ATTEMPT]: String(attempt),
        [LABEL_PROVIDER]: labelValue(primaryName),
      },
    },
    spec: {
      run: { name: runName, uid },
      attempt,
      provider: primaryName,
      workloadClass: policy.workloadClass,
      request: {
        gpuType: policy.size.gpuType,
        gpusPerNode: policy.size.gpusPerNode,
        nodes: policy.size.nodes,
        ...(sku ? { sku: sku.sku } : {}),
        region: primary.spec.region,
      },
      ...(competing
        ? {
            competingQuote: {
              provider: competing.provider,
              pricePerHour: competing.pricePerHour,
              region: competing.region,
              earliestStart: competing.earliestStart,
            },
          }
        : {}),
      matchCompetingOffers: policy.matchCompetingOffers,
      ...(list !== undefined ? { listPricePerHour: list } : {}),
      deadline: timestamp(deadline),
    },
  };
}

/** Whether the offer has its answer (the outcome is written once). */
export function isAnswered(offer: CapacityOffer): boolean {
  return offer.status?.outcome !== undefined;
}

/**
 * The timeout rule: an offer still unanswered when its deadline has passed is TimedOut.
 * Returns the status to write, or undefined when the offer is answered or still open.
 */
export function timeoutStatus(offer: CapacityOffer, now: Date): CapacityOfferStatus | undefined {
  if (isAnswered(offer)) return undefined;
  if (now.getTime() < Date.parse(offer.spec.deadline)) return undefined;
  return {
    ...offer.status,
    outcome: "TimedOut",
    message: `${offer.spec.provider} did not answer by the deadline ${offer.spec.deadline}`,
    respondedAt: timestamp(now),
  };
}

/** Milliseconds until the offer's deadline (0 when passed): when to look again. */
export function untilDeadline(offer: CapacityOffer, now: Date): number {
  return Math.max(0, Date.parse(offer.spec.deadline) - now.getTime());
}

/** The status that withdraws an unanswered offer (the run was deleted, suspended or changed). */
export function withdrawnStatus(
  offer: CapacityOffer,
  now: Date,
  why: string,
): CapacityOfferStatus | undefined {
  if (isAnswered(offer)) return undefined;
  return { ...offer.status, outcome: "Withdrawn", message: why, respondedAt: timestamp(now) };
}
