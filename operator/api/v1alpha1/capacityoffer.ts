import { type Static, Type } from "@sinclair/typebox";
import {
  Conditions,
  GPU_TYPE_PATTERN,
  Int,
  ObjectName,
  ObservedGeneration,
  type Resource,
  Rules,
  resourceSchema,
  Str,
  StrEnum,
  Timestamp,
} from "./common.ts";
import { WORKLOAD_CLASSES } from "./trainingrun.ts";

export const OFFER_OUTCOMES = ["Accepted", "Declined", "TimedOut", "Withdrawn"] as const;
export type OfferOutcome = (typeof OFFER_OUTCOMES)[number];

export const DECLINE_REASONS = [
  "NoCapacity",
  "QuotaExceeded",
  "SkuUnavailable",
  "RegionNotAllowed",
  "PriceNotMatched",
  "ProviderError",
] as const;
export type DeclineReason = (typeof DECLINE_REASONS)[number];

/** Why an offer was made: a placement attempt, or a failback check of a run on an alternative. */
export const OFFER_PURPOSES = ["Placement", "Failback"] as const;
export type OfferPurpose = (typeof OFFER_PURPOSES)[number];

export const OfferRequest = Type.Object(
  {
    gpuType: Str("GPU type requested.", { pattern: GPU_TYPE_PATTERN, minLength: 1, maxLength: 63 }),
    gpusPerNode: Int("GPUs per node.", { minimum: 1, maximum: 16 }),
    nodes: Int("Nodes.", { minimum: 1, maximum: 1024 }),
    sku: Type.Optional(Str("The provider SKU the request maps to.", { maxLength: 128 })),
    region: Str("Region of the provider offered to.", { minLength: 1, maxLength: 64 }),
  },
  { description: "The capacity requested." },
);

export const CompetingQuote = Type.Object(
  {
    provider: ObjectName("The alternative CloudProvider that quoted."),
    pricePerHour: Type.Number({ minimum: 0, description: "Its price for the whole run per hour, USD." }),
    region: Type.Optional(Str("Its region.", { maxLength: 64 })),
    earliestStart: Type.Optional(Timestamp("When it could start the run.")),
  },
  { description: "The best competing quote, which the primary may match." },
);

export const CapacityOfferSpec = Type.Object(
  {
    run: Type.Object(
      {
        name: ObjectName("The TrainingRun's name."),
        uid: Str("The TrainingRun's uid.", { minLength: 1, maxLength: 64 }),
      },
      {
        description:
          "The run this offer is for (same namespace). Not an owner reference: offers outlive runs.",
      },
    ),
    attempt: Int("The run's placement attempt this offer belongs to (one offer per attempt).", {
      minimum: 1,
    }),
    provider: ObjectName("The CloudProvider offered to (the primary)."),
    purpose: Type.Optional(
      StrEnum(
        OFFER_PURPOSES,
        "Placement: the offer of a placement attempt. Failback: a periodic re-offer of a run running on an alternative (failback: WhenPrimaryAccepts); its attempt is the one it starts if accepted.",
        { default: "Placement" },
      ),
    ),
    workloadClass: StrEnum(WORKLOAD_CLASSES, "The run's workload class."),
    request: OfferRequest,
    competingQuote: Type.Optional(CompetingQuote),
    matchCompetingOffers: Type.Optional(
      Type.Boolean({ default: true, description: "Whether the primary may accept at the competing price." }),
    ),
    listPricePerHour: Type.Optional(
      Type.Number({ minimum: 0, description: "The primary's list price for the request per hour, USD." }),
    ),
    deadline: Timestamp("The primary must answer by then; no answer is TimedOut."),
  },
  {
    description: "The offer. Immutable once created: the ledger records what was offered.",
    ...Rules({ rule: "self == oldSelf", message: "spec is immutable: an offer records what was offered" }),
  },
);

export const CapacityOfferStatus = Type.Object(
  {
    outcome: Type.Optional(StrEnum(OFFER_OUTCOMES, "The answer: Accepted, Declined, TimedOut or Withdrawn.")),
    reason: Type.Optional(StrEnum(DECLINE_REASONS, "Why the offer was declined.")),
    message: Type.Optional(Str("Details of the answer.", { maxLength: 4096 })),
    respondedAt: Type.Optional(Timestamp("When the answer was written.")),
    acceptedPricePerHour: Type.Optional(
      Type.Number({ minimum: 0, description: "The accepted price per hour, USD." }),
    ),
    reservation: Type.Optional(
      Str("Provider reference of the capacity reserved for an accepted offer.", { maxLength: 1024 }),
    ),
    observedGeneration: ObservedGeneration,
    conditions: Type.Optional(Conditions),
  },
  {
    description: "The answer. Written once.",
    ...Rules(
      {
        rule: "!has(oldSelf.outcome) || (has(self.outcome) && self.outcome == oldSelf.outcome)",
        message: "the outcome is written once and never changes",
        fieldPath: ".outcome",
      },
      {
        rule: "!has(oldSelf.reason) || (has(self.reason) && self.reason == oldSelf.reason)",
        message: "the reason is written once and never changes",
        fieldPath: ".reason",
      },
      {
        rule: "!has(self.outcome) || self.outcome != 'Declined' || has(self.reason)",
        message: "a Declined offer needs a reason",
        fieldPath: ".reason",
      },
      {
        rule: "!has(self.outcome) || self.outcome != 'Accepted' || !has(self.reason)",
        message: "an Accepted offer has no decline reason",
        fieldPath: ".reason",
      },
    ),
  },
);

export const CapacityOfferSchema = resourceSchema(
  "CapacityOffer",
  "CapacityOffer is one right-of-first-refusal offer to the primary and its answer: the audit ledger. It outlives its run.",
  CapacityOfferSpec,
  CapacityOfferStatus,
);

export type CapacityOfferSpec = Static<typeof CapacityOfferSpec>;
export type CapacityOfferStatus = Static<typeof CapacityOfferStatus>;
export type CapacityOffer = Resource<"CapacityOffer", CapacityOfferSpec, CapacityOfferStatus>;
