import { describe, expect, test } from "@jest/globals";
import type { CapacityOffer } from "../../operator/api/v1alpha1/index.ts";
import {
  buildOffer,
  collectQuotes,
  consecutiveDeclines,
  decidePlacement,
  evaluateEligibility,
  placeWithoutPrimary,
  priceMatch,
  reofferDelayMs,
} from "../../operator/rofr/index.ts";
import {
  answered,
  cheapProvider,
  euProvider,
  NOW,
  provider,
  providers,
  servingRun,
  trainingRun,
} from "./fixtures.ts";

function attempt(run = trainingRun(), all = providers()) {
  const e = evaluateEligibility(run, all);
  const quotes = collectQuotes(run, e.alternatives, NOW);
  const offer = buildOffer({ run, attempt: 1, primary: e.primary!, quotes, now: NOW });
  return { run, quotes, offer };
}

describe("placement decision", () => {
  test("open offer → wait for the answer until the deadline", () => {
    const { run, quotes, offer } = attempt();
    expect(decidePlacement({ run, offer, quotes, now: NOW })).toEqual({
      action: "await",
      retryAfterMs: 120_000,
    });
  });

  test("Accepted → the primary at the accepted price", () => {
    const { run, quotes, offer } = attempt();
    const d = decidePlacement({
      run,
      offer: answered(offer, { outcome: "Accepted", acceptedPricePerHour: 72 }),
      quotes,
      now: NOW,
    });
    expect(d).toEqual({
      action: "place",
      target: "primary",
      placement: {
        provider: "azure-eastus",
        region: "eastus",
        pricePerHour: 72,
        reason: "PrimaryAccepted",
        decidedAt: "2026-11-21T20:00:00Z",
        attempt: 1,
        offer: "llama-pretrain-a1",
      },
    });
  });

  test.each([
    [{ outcome: "Declined", reason: "NoCapacity" }, "PrimaryDeclined:NoCapacity"],
    [{ outcome: "Declined", reason: "PriceNotMatched" }, "PrimaryDeclined:PriceNotMatched"],
    [{ outcome: "TimedOut" }, "PrimaryTimedOut"],
    [{ outcome: "Withdrawn" }, "PrimaryWithdrawn"],
  ] as const)("%j → the best alternative, reason %s", (status, reason) => {
    const { run, quotes, offer } = attempt();
    const d = decidePlacement({
      run,
      offer: answered(offer, status as CapacityOffer["status"]),
      quotes,
      now: NOW,
    });
    expect(d).toMatchObject({
      action: "place",
      target: "alternative",
      placement: { provider: "oci-ashburn", region: "us-ashburn-1", pricePerHour: 72, reason, attempt: 1 },
    });
  });

  test("declined with several alternatives: policy order, then price", () => {
    const all = [...providers(), cheapProvider(), euProvider()];
    const anyOrder = attempt(
      trainingRun((r) => {
        r.spec.placement.alternatives = [];
        r.spec.placement.jurisdictions = [];
      }),
      all,
    );
    const declined = { outcome: "Declined", reason: "NoCapacity" } as const;
    expect(
      decidePlacement({ ...anyOrder, offer: answered(anyOrder.offer, declined), now: NOW }),
    ).toMatchObject({ placement: { provider: "oci-phoenix", pricePerHour: 48 } });

    const ordered = attempt(
      trainingRun((r) => (r.spec.placement.alternatives = ["oci-ashburn", "oci-phoenix"])),
      all,
    );
    expect(decidePlacement({ ...ordered, offer: answered(ordered.offer, declined), now: NOW })).toMatchObject(
      {
        placement: { provider: "oci-ashburn", pricePerHour: 72 },
      },
    );
  });

  test("deadline passed without an answer → TimedOut is recorded and the run spills over", () => {
    const { run, quotes, offer } = attempt();
    const d = decidePlacement({ run, offer, quotes, now: new Date(NOW.getTime() + 121_000) });
    expect(d).toMatchObject({
      action: "place",
      target: "alternative",
      placement: { provider: "oci-ashburn", reason: "PrimaryTimedOut" },
      offerStatus: { outcome: "TimedOut" },
    });
  });

  test("serving declined → waits for the primary with backoff, never an alternative", () => {
    // Even if an alternative's quote were passed in, a serving run does not take it.
    const { offer } = attempt(servingRun());
    const ociQuotes = collectQuotes(trainingRun(), [provider("oci-ashburn")], NOW);
    const d = decidePlacement({
      run: servingRun(),
      offer: answered(offer, { outcome: "Declined", reason: "NoCapacity", message: "AllocationFailed" }),
      quotes: ociQuotes,
      now: NOW,
      declines: 3,
    });
    expect(d).toEqual({
      action: "wait",
      reason: "ServingWaitsForPrimary",
      message:
        "serving runs are primary-exclusive: azure-eastus declined (NoCapacity: AllocationFailed); offering again in 120s",
      retryAfterMs: 120_000,
    });
  });

  test("serving timed out → waits too, and the TimedOut answer is recorded", () => {
    const { offer } = attempt(servingRun());
    const d = decidePlacement({
      run: servingRun(),
      offer,
      quotes: [],
      now: new Date(NOW.getTime() + 301_000),
    });
    expect(d).toMatchObject({
      action: "wait",
      reason: "ServingWaitsForPrimary",
      offerStatus: { outcome: "TimedOut" },
    });
  });

  test("declined and no eligible alternative → wait and re-offer", () => {
    const { run, offer } = attempt(trainingRun(), [provider("azure-eastus")]);
    const d = decidePlacement({
      run,
      offer: answered(offer, { outcome: "Declined", reason: "QuotaExceeded" }),
      quotes: [],
      now: NOW,
    });
    expect(d).toEqual({
      action: "wait",
      reason: "NoEligibleAlternative",
      message:
        "azure-eastus: PrimaryDeclined:QuotaExceeded and no eligible alternative; offering again in 30s",
      retryAfterMs: 30_000,
    });
  });

  test("primary not eligible (EU run, US primary) → the best alternative without an offer", () => {
    const run = trainingRun((r) => {
      r.spec.placement.alternatives = [];
      r.spec.placement.jurisdictions = ["EU"];
    });
    const e = evaluateEligibility(run, [...providers(), euProvider()]);
    expect(e.primary).toBeUndefined();
    expect(placeWithoutPrimary(collectQuotes(run, e.alternatives, NOW), 1, NOW)).toMatchObject({
      provider: "oci-frankfurt",
      reason: "PrimaryIneligible",
      pricePerHour: 80,
    });
    expect(placeWithoutPrimary([], 1, NOW)).toBeUndefined();
  });
});

describe("re-offer backoff for waiting runs", () => {
  test("exponential from the base, capped", () => {
    const b = { baseMs: 1000, maxMs: 10_000 };
    expect([1, 2, 3, 4, 5, 50].map((n) => reofferDelayMs(n, b))).toEqual([
      1000, 2000, 4000, 8000, 10_000, 10_000,
    ]);
  });

  test("defaults: 30s doubling to at most 10 minutes", () => {
    expect(reofferDelayMs(1)).toBe(30_000);
    expect(reofferDelayMs(100)).toBe(600_000);
  });

  test("jitter adds at most 10%", () => {
    expect(reofferDelayMs(1, { baseMs: 1000, maxMs: 10_000 }, 0.999)).toBe(1100);
  });

  test("declines in a row are counted from the newest offer back to the last acceptance", () => {
    const { offer } = attempt(servingRun());
    const d = answered(offer, { outcome: "Declined", reason: "NoCapacity" });
    const t = answered(offer, { outcome: "TimedOut" });
    const a = answered(offer, { outcome: "Accepted" });
    expect(consecutiveDeclines([d, t, a, d])).toBe(2);
    expect(consecutiveDeclines([offer, d])).toBe(1);
  });
});

describe("the price-match rule", () => {
  // 2 × 8 H100 on azure-eastus: list $111.68/h, floor $65.60/h.
  const azure = provider("azure-eastus");
  const offerWith = (competing: number | undefined, match = true) => {
    const o = buildOffer({ run: trainingRun(), attempt: 1, primary: azure, quotes: [], now: NOW });
    if (competing !== undefined) o.spec.competingQuote = { provider: "oci-ashburn", pricePerHour: competing };
    o.spec.matchCompetingOffers = match;
    return o;
  };

  test("competing quote within the floor → accept at the competing price", () => {
    expect(priceMatch(offerWith(72), azure)).toMatchObject({ accept: true, pricePerHour: 72, matched: true });
    expect(priceMatch(offerWith(65.6), azure)).toMatchObject({
      accept: true,
      pricePerHour: 65.6,
      matched: true,
    });
  });

  test("competing quote below the floor → PriceNotMatched", () => {
    expect(priceMatch(offerWith(60), azure)).toEqual({
      accept: false,
      reason: "PriceNotMatched",
      message: "oci-ashburn's quote $60.00/h is below azure-eastus's floor $65.60/h for 2×8 H100",
    });
  });

  test("no competing quote, or matching off → the list price", () => {
    expect(priceMatch(offerWith(undefined), azure)).toMatchObject({
      accept: true,
      pricePerHour: 111.68,
      matched: false,
    });
    expect(priceMatch(offerWith(60, false), azure)).toMatchObject({
      accept: true,
      pricePerHour: 111.68,
      matched: false,
    });
  });

  test("list price already under the competing quote → the list price", () => {
    expect(priceMatch(offerWith(200), azure)).toMatchObject({
      accept: true,
      pricePerHour: 111.68,
      matched: false,
    });
  });

  test("no floor configured → no discount below list", () => {
    const noFloor = provider("azure-eastus", (p) => delete p.spec.pricing.gpus[0].floorPerGpuHour);
    expect(priceMatch(offerWith(72), noFloor)).toMatchObject({ accept: false, reason: "PriceNotMatched" });
  });
});
