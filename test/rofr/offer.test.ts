import { describe, expect, test } from "@jest/globals";
import { validateObject } from "../../operator/api/v1alpha1/index.ts";
import {
  buildOffer,
  collectQuotes,
  evaluateEligibility,
  LABEL_ATTEMPT,
  LABEL_RUN_UID,
  offerName,
  rankQuotes,
  timeoutStatus,
  untilDeadline,
  withdrawnStatus,
} from "../../operator/rofr/index.ts";
import { answered, cheapProvider, NOW, provider, providers, trainingRun } from "./fixtures.ts";

describe("quotes", () => {
  test("price for the whole run per hour = nodes × GPUs per node × price per GPU-hour; start after quoteLatency", () => {
    const run = trainingRun((r) => (r.spec.placement.alternatives = []));
    const quotes = collectQuotes(run, [provider("oci-ashburn"), cheapProvider()], NOW);
    expect(quotes).toEqual([
      {
        provider: "oci-phoenix",
        region: "us-phoenix-1",
        pricePerHour: 48,
        earliestStart: "2026-11-21T20:10:00Z",
        policyRank: 0,
      },
      {
        provider: "oci-ashburn",
        region: "us-ashburn-1",
        pricePerHour: 72,
        earliestStart: "2026-11-21T20:00:00Z",
        policyRank: 0,
      },
    ]);
  });

  test("an explicit alternatives order beats price", () => {
    const run = trainingRun((r) => (r.spec.placement.alternatives = ["oci-ashburn", "oci-phoenix"]));
    const quotes = collectQuotes(run, [cheapProvider(), provider("oci-ashburn")], NOW);
    expect(quotes.map((q) => q.provider)).toEqual(["oci-ashburn", "oci-phoenix"]);
  });

  test("equal price: the earlier start wins", () => {
    const a = {
      provider: "a",
      region: "r",
      pricePerHour: 10,
      earliestStart: "2026-11-21T21:00:00Z",
      policyRank: 0,
    };
    const b = { ...a, provider: "b", earliestStart: "2026-11-21T20:30:00Z" };
    expect(rankQuotes([a, b]).map((q) => q.provider)).toEqual(["b", "a"]);
  });
});

describe("the offer", () => {
  const run = trainingRun();
  const make = (attempt: number, now = NOW) => {
    const e = evaluateEligibility(run, providers());
    return buildOffer({
      run,
      attempt,
      primary: e.primary!,
      quotes: collectQuotes(run, e.alternatives, now),
      now,
    });
  };

  test("carries the request, the best competing quote, the list price and the deadline", () => {
    const offer = make(1);
    expect(offer.metadata).toEqual({
      name: "llama-pretrain-a1",
      namespace: "ml-team",
      labels: {
        "spillway.dev/run-uid": run.metadata.uid,
        "spillway.dev/run": "llama-pretrain",
        "spillway.dev/attempt": "1",
        "spillway.dev/provider": "azure-eastus",
      },
    });
    expect(offer.spec).toEqual({
      run: { name: "llama-pretrain", uid: run.metadata.uid },
      attempt: 1,
      provider: "azure-eastus",
      workloadClass: "training",
      request: {
        gpuType: "H100",
        gpusPerNode: 8,
        nodes: 2,
        sku: "Standard_ND96isr_H100_v5",
        region: "eastus",
      },
      competingQuote: {
        provider: "oci-ashburn",
        pricePerHour: 72,
        region: "us-ashburn-1",
        earliestStart: "2026-11-21T20:00:00Z",
      },
      matchCompetingOffers: true,
      listPricePerHour: 111.68,
      deadline: "2026-11-21T20:02:00Z", // decisionTimeout 2m
    });
  });

  test("is valid against the CapacityOffer schema", () => {
    expect(validateObject(make(1))).toEqual([]);
  });

  test("one offer per attempt: a deterministic name from run and attempt", () => {
    expect(make(1).metadata.name).toBe(make(1, new Date(NOW.getTime() + 60_000)).metadata.name);
    expect(make(2).metadata.name).toBe("llama-pretrain-a2");
    expect(make(2).metadata.labels?.[LABEL_ATTEMPT]).toBe("2");
    expect(make(2).metadata.labels?.[LABEL_RUN_UID]).toBe(run.metadata.uid);
  });

  test("rebuilding the same attempt gives the same spec (what a restarted operator re-creates)", () => {
    expect(make(3)).toEqual(make(3));
  });

  test("very long run names still give a valid, unique name per attempt", () => {
    const long = "r".repeat(250);
    expect(offerName(long, 1).length).toBeLessThanOrEqual(253);
    expect(offerName(long, 1)).toMatch(/-a1$/);
    expect(offerName(long, 1)).not.toBe(offerName(`${"r".repeat(249)}s`, 1));
  });

  test("no alternatives: no competing quote", () => {
    const offer = buildOffer({ run, attempt: 1, primary: provider("azure-eastus"), quotes: [], now: NOW });
    expect(offer.spec.competingQuote).toBeUndefined();
  });

  test("refuses a run that was never stored (no uid) or attempt 0", () => {
    const unsaved = trainingRun((r) => delete r.metadata.uid);
    expect(() =>
      buildOffer({ run: unsaved, attempt: 1, primary: provider("azure-eastus"), quotes: [], now: NOW }),
    ).toThrow(/stored run/);
    expect(() =>
      buildOffer({ run, attempt: 0, primary: provider("azure-eastus"), quotes: [], now: NOW }),
    ).toThrow(/attempt/);
  });
});

describe("the timeout rule", () => {
  const offer = buildOffer({
    run: trainingRun(),
    attempt: 1,
    primary: provider("azure-eastus"),
    quotes: [],
    now: NOW,
  });

  test("before the deadline the offer stays open, and says how long to wait", () => {
    const t = new Date(NOW.getTime() + 60_000);
    expect(timeoutStatus(offer, t)).toBeUndefined();
    expect(untilDeadline(offer, t)).toBe(60_000);
  });

  test("unanswered at the deadline → TimedOut", () => {
    const t = new Date(NOW.getTime() + 120_000);
    expect(timeoutStatus(offer, t)).toEqual({
      outcome: "TimedOut",
      message: "azure-eastus did not answer by the deadline 2026-11-21T20:02:00Z",
      respondedAt: "2026-11-21T20:02:00Z",
    });
  });

  test("an answered offer never times out (the answer is written once)", () => {
    const late = new Date(NOW.getTime() + 3_600_000);
    expect(
      timeoutStatus(answered(offer, { outcome: "Accepted", acceptedPricePerHour: 72 }), late),
    ).toBeUndefined();
    expect(
      withdrawnStatus(answered(offer, { outcome: "Declined", reason: "NoCapacity" }), late, "x"),
    ).toBeUndefined();
  });

  test("an open offer can be withdrawn", () => {
    expect(withdrawnStatus(offer, NOW, "run deleted")).toMatchObject({
      outcome: "Withdrawn",
      message: "run deleted",
    });
  });
});
