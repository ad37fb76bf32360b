import { describe, expect, test } from "@jest/globals";
import type { CapacityOffer, TrainingRun } from "../../operator/api/v1alpha1/index.ts";
import {
  buildFailbackOffer,
  consecutiveFailbackDeclines,
  decideFailback,
  type FailbackInput,
  failbackDelayMs,
  failbackNotApplicable,
  failbackOfferName,
  isFailbackOffer,
  NO_CHECKPOINTS,
  priceMatch,
} from "../../operator/rofr/index.ts";
import { answered, NOW, provider, servingRun, trainingRun } from "./fixtures.ts";

const TIMING = { intervalMs: 60_000, maxIntervalMs: 240_000 };
const PLACED_AT = "2026-11-21T19:50:00Z"; // ten minutes before NOW

/** The training example running on OCI (attempt 1) with failback on. */
function runningOnOci(edit: (r: any) => void = () => {}): TrainingRun {
  return trainingRun((r) => {
    r.spec.placement.failback = "WhenPrimaryAccepts";
    r.spec.checkpoints = { keep: 3 };
    r.status = {
      phase: "Running",
      attempt: 1,
      placement: {
        provider: "oci-ashburn",
        region: "us-ashburn-1",
        pricePerHour: 72,
        attempt: 1,
        decidedAt: PLACED_AT,
        reason: "PrimaryDeclined:NoCapacity",
      },
    };
    edit(r);
  });
}

function check(run: TrainingRun, k: number, now = NOW): CapacityOffer {
  return buildFailbackOffer({
    run,
    primary: provider("azure-eastus"),
    current: provider("oci-ashburn"),
    name: failbackOfferName(run.metadata.name!, k),
    now,
  });
}

function decide(run: TrainingRun, extra: Partial<FailbackInput> = {}) {
  return decideFailback({
    run,
    primaryName: "azure-eastus",
    offersNewestFirst: extra.latest ? [extra.latest] : [],
    now: NOW,
    timing: TIMING,
    ...extra,
  });
}

const declinedAt = (offer: CapacityOffer, at: string) =>
  answered(offer, { outcome: "Declined", reason: "NoCapacity", respondedAt: at });

describe("failback applies", () => {
  test("only with WhenPrimaryAccepts, never to serving runs, only while Running on an alternative", () => {
    expect(failbackNotApplicable(runningOnOci(), "azure-eastus")).toBeUndefined();
    expect(
      failbackNotApplicable(
        runningOnOci((r) => (r.spec.placement.failback = "Never")),
        "azure-eastus",
      ),
    ).toBe("failback is Never");
    expect(
      failbackNotApplicable(
        runningOnOci((r) => delete r.spec.placement.failback),
        "azure-eastus",
      ),
    ).toBe("failback is Never");
    const serving = servingRun((r) => {
      r.spec.placement = { ...r.spec.placement, failback: "WhenPrimaryAccepts" };
      r.status = { phase: "Running", placement: { provider: "azure-eastus", attempt: 1 } };
    });
    expect(failbackNotApplicable(serving, "azure-eastus")).toBe("serving runs are always on the primary");
    expect(
      failbackNotApplicable(
        runningOnOci((r) => (r.status.phase = "Staging")),
        "azure-eastus",
      ),
    ).toMatch(/not Running/);
    expect(
      failbackNotApplicable(
        runningOnOci((r) => (r.status.placement.provider = "azure-eastus")),
        "azure-eastus",
      ),
    ).toBe("already on the primary");
    expect(failbackNotApplicable(runningOnOci(), undefined)).toBe("no eligible primary");
    // No checkpoints to resume from: moving back would start over, so it does not apply.
    expect(
      failbackNotApplicable(
        runningOnOci((r) => delete r.spec.checkpoints),
        "azure-eastus",
      ),
    ).toBe(NO_CHECKPOINTS);
    expect(
      failbackNotApplicable(
        runningOnOci((r) => (r.spec.checkpoints.resume = "None")),
        "azure-eastus",
      ),
    ).toBe(NO_CHECKPOINTS);
    expect(decide(runningOnOci((r) => (r.spec.placement.failback = "Never")))).toMatchObject({
      action: "none",
    });
  });
});

describe("failback checks", () => {
  test("the first check is due one interval after the placement was decided", () => {
    expect(decide(runningOnOci())).toEqual({ action: "check", check: 1 });
    const early = runningOnOci((r) => (r.status.placement.decidedAt = "2026-11-21T19:59:30Z"));
    const d = decide(early);
    expect(d.action).toBe("wait");
    // 30 s left of the interval, plus at most 10 % spread.
    expect((d as { afterMs: number }).afterMs).toBeGreaterThanOrEqual(30_000);
    expect((d as { afterMs: number }).afterMs).toBeLessThanOrEqual(36_000);
  });

  test("a check's offer asks for the next attempt, against what the run pays now, and is marked Failback", () => {
    const run = runningOnOci();
    const offer = check(run, 3);
    expect(offer.metadata.name).toBe("llama-pretrain-fb3");
    expect(offer.metadata.labels?.["spillway.dev/purpose"]).toBe("failback");
    expect(offer.metadata.labels?.["spillway.dev/attempt"]).toBe("2");
    expect(offer.spec).toMatchObject({
      purpose: "Failback",
      attempt: 2,
      provider: "azure-eastus",
      competingQuote: { provider: "oci-ashburn", pricePerHour: 72 },
    });
    expect(isFailbackOffer(offer)).toBe(true);
    // The primary matches the current price or declines with PriceNotMatched, as for any offer.
    expect(priceMatch(offer, provider("azure-eastus")).accept).toBe(true);
  });

  test("an open check is awaited until its deadline, then timed out", () => {
    const run = runningOnOci((r) => (r.status.failback = { checks: 1, offer: "llama-pretrain-fb1" }));
    const open = check(run, 1);
    expect(decide(run, { latestName: "llama-pretrain-fb1", latest: open })).toEqual({
      action: "wait",
      afterMs: 120_000,
    });
    const late = decide(run, {
      latestName: "llama-pretrain-fb1",
      latest: open,
      now: new Date(NOW.getTime() + 120_000),
    });
    expect(late).toMatchObject({ action: "timeout", offerStatus: { outcome: "TimedOut" } });
  });

  test("a check recorded in status but not created yet (crash in between) is created under the same name", () => {
    const run = runningOnOci((r) => (r.status.failback = { checks: 2, offer: "llama-pretrain-fb2" }));
    expect(decide(run, { latestName: "llama-pretrain-fb2" })).toEqual({
      action: "create",
      name: "llama-pretrain-fb2",
    });
  });

  test("a declined check is recorded once; the next one is due an interval after the answer", () => {
    const run = runningOnOci((r) => (r.status.failback = { checks: 1, offer: "llama-pretrain-fb1" }));
    const declined = declinedAt(check(run, 1), "2026-11-21T19:59:50Z");
    const first = decide(run, { latestName: "llama-pretrain-fb1", latest: declined });
    expect(first.action).toBe("declined");
    expect((first as { afterMs: number }).afterMs).toBeGreaterThanOrEqual(50_000);
    const recorded = runningOnOci(
      (r) => (r.status.failback = { checks: 1, offer: "llama-pretrain-fb1", outcome: "Declined" }),
    );
    expect(decide(recorded, { latestName: "llama-pretrain-fb1", latest: declined }).action).toBe("wait");
    const later = decide(recorded, {
      latestName: "llama-pretrain-fb1",
      latest: declined,
      now: new Date(Date.parse("2026-11-21T19:59:50Z") + 70_000),
    });
    expect(later).toEqual({ action: "check", check: 2 });
  });

  test("an accepted check moves the run", () => {
    const run = runningOnOci((r) => (r.status.failback = { checks: 4, offer: "llama-pretrain-fb4" }));
    const accepted = answered(check(run, 4), { outcome: "Accepted", acceptedPricePerHour: 72 });
    expect(decide(run, { latestName: "llama-pretrain-fb4", latest: accepted })).toEqual({
      action: "move",
      offer: accepted,
    });
  });

  test("a check left from an earlier attempt is history: it neither moves nor blocks the run", () => {
    const before = runningOnOci((r) => (r.status.failback = { checks: 1, offer: "llama-pretrain-fb1" }));
    const old = answered(check(before, 1), { outcome: "Accepted" });
    const moved = runningOnOci((r) => {
      r.status.attempt = 2;
      r.status.placement.attempt = 2;
      r.status.failback = { checks: 1, offer: "llama-pretrain-fb1", outcome: "Accepted" };
    });
    expect(decide(moved, { latestName: "llama-pretrain-fb1", latest: old })).toEqual({
      action: "check",
      check: 2,
    });
  });
});

describe("failback backoff", () => {
  test("the interval doubles with each decline in a row, up to the ceiling", () => {
    expect([1, 2, 3, 4, 10].map((n) => failbackDelayMs(n, TIMING))).toEqual([
      60_000, 120_000, 240_000, 240_000, 240_000,
    ]);
    expect(failbackDelayMs(0, TIMING)).toBe(60_000);
  });

  test("a per-run spread of at most 10 %, the same every time for the same run", () => {
    const a = failbackDelayMs(1, TIMING, "uid-a");
    expect(a).toBe(failbackDelayMs(1, TIMING, "uid-a"));
    expect(a).toBeGreaterThanOrEqual(60_000);
    expect(a).toBeLessThan(66_000);
  });

  test("declines count failback checks only, newest first, since the placement, stopping at an acceptance", () => {
    const run = runningOnOci();
    const placementOffer = answered(
      { ...check(run, 9), spec: { ...check(run, 9).spec, purpose: "Placement" }, metadata: { name: "x-a1" } },
      { outcome: "Declined", reason: "NoCapacity", respondedAt: "2026-11-21T19:55:00Z" },
    );
    const d1 = declinedAt(check(run, 1), "2026-11-21T19:56:00Z");
    const d2 = declinedAt(check(run, 2), "2026-11-21T19:57:00Z");
    const acc = answered(check(run, 0), { outcome: "Accepted", respondedAt: "2026-11-21T19:55:30Z" });
    expect(consecutiveFailbackDeclines([d2, d1, placementOffer])).toBe(2);
    expect(consecutiveFailbackDeclines([d2, acc, d1])).toBe(1);
    expect(consecutiveFailbackDeclines([d2, d1], "2026-11-21T19:56:30Z")).toBe(1);
  });

  test("offer names stay within 253 characters and distinct per check", () => {
    const long = "r".repeat(250);
    const a = failbackOfferName(long, 1);
    const b = failbackOfferName(long, 2);
    expect(a.length).toBeLessThanOrEqual(253);
    expect(a).not.toBe(b);
    expect(a.endsWith("-fb1")).toBe(true);
  });
});
