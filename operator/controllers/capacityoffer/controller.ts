/**
 * The CapacityOffer controller: the primary's side of the right of first refusal.
 *
 * An open offer is answered through the primary's responder (placement step 3: Azure reserves
 * capacity and scales its GPU pool, or declines with a reason). The answer is written once,
 * with the offer's resourceVersion as precondition; a conflict means the run controller wrote
 * `TimedOut` first, and any capacity reserved for the late answer is released.
 *
 * An accepted offer's reservation is released when the run no longer needs it: the run is
 * deleted, finished, or has moved on to a later attempt. Offers themselves stay (the ledger)
 * until the retention period has passed.
 */
import type { CapacityOffer, CapacityOfferStatus, CloudProvider } from "../../api/v1alpha1/index.ts";
import type { OfferAnswer } from "../../ports/index.ts";
import { isRetryable } from "../../ports/index.ts";
import { timeoutStatus, untilDeadline, withdrawnStatus } from "../../rofr/index.ts";
import { isConflict, isNotFound } from "../../runtime/client.ts";
import { findCondition, setStatusCondition, timestamp } from "../../runtime/conditions.ts";
import { Controller, type ReconcileContext, type ReconcileResult } from "../../runtime/controller.ts";
import { safeMessage } from "../../runtime/events.ts";
import { type KubeObject, SpillwayResources } from "../../runtime/resources.ts";
import type { OperatorContext } from "../context.ts";
import { readSecret } from "../context.ts";

type Offer = CapacityOffer & KubeObject;

/** Condition on an accepted offer once its reservation has been given back. */
export const RELEASED = "Released";
const OFFERS_BY_RUN_UID = "run-uid";

export function capacityOfferController(
  ctx: OperatorContext,
  opts: { concurrency?: number } = {},
): Controller {
  const controller = new Controller({
    name: "capacityoffer",
    reconcile: (key, rc) => reconcileOffer(ctx, key, rc),
    concurrency: opts.concurrency ?? 8,
    logContext: (key) => ({ offer: key }),
    logger: ctx.log,
    metrics: ctx.metrics,
  });
  ctx.caches.offers.addIndex(OFFERS_BY_RUN_UID, (o) => [o.spec.run.uid]);
  controller.watch(ctx.caches.offers);
  // A run finishing, moving or going away releases its accepted offers.
  controller.watch(ctx.caches.runs, (run) =>
    ctx.caches.offers
      .byIndex(OFFERS_BY_RUN_UID, run.metadata.uid ?? "")
      .map((o) => `${o.metadata.namespace}/${o.metadata.name}`),
  );
  return controller;
}

function runOf(ctx: OperatorContext, offer: Offer) {
  const run = ctx.caches.runs.get(`${offer.metadata.namespace}/${offer.spec.run.name}`);
  return run && run.metadata.uid === offer.spec.run.uid ? run : undefined;
}

/** Why an accepted offer's capacity is no longer needed, or undefined while it is. */
export function releaseReason(ctx: OperatorContext, offer: Offer): string | undefined {
  const run = runOf(ctx, offer);
  if (!run) return "the run was deleted";
  if (run.metadata.deletionTimestamp) return "the run is being deleted";
  const phase = run.status?.phase;
  if (phase === "Succeeded" || phase === "Failed") return `the run ${phase.toLowerCase()}`;
  const attempt = run.status?.attempt ?? 0;
  if (attempt > offer.spec.attempt) return `the run moved on to attempt ${attempt}`;
  const placement = run.status?.placement;
  if (placement && placement.attempt === offer.spec.attempt && placement.provider !== offer.spec.provider) {
    return `the run was placed on ${placement.provider}`;
  }
  return undefined;
}

async function reconcileOffer(
  ctx: OperatorContext,
  key: string,
  rc: ReconcileContext,
): Promise<ReconcileResult | undefined> {
  const offer = ctx.caches.offers.get(key);
  if (!offer) return undefined;
  rc.with({ run: `${offer.metadata.namespace}/${offer.spec.run.name}`, provider: offer.spec.provider });
  const now = ctx.now();

  // Retention: the ledger keeps offers for the configured period, then lets them go.
  const created = Date.parse(offer.metadata.creationTimestamp ?? "");
  const age = now.getTime() - created;
  const settled =
    offer.status?.outcome !== undefined && (offer.status.outcome !== "Accepted" || released(offer));
  if (settled && Number.isFinite(created) && age >= ctx.settings.offerRetentionMs) {
    try {
      await ctx.mgmt.delete(SpillwayResources.CapacityOffer, offer.metadata.name!, offer.metadata.namespace, {
        uid: offer.metadata.uid,
      });
      rc.log.info("offer past retention deleted");
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    return undefined;
  }
  const retentionLeft = Number.isFinite(created)
    ? Math.max(1_000, ctx.settings.offerRetentionMs - age)
    : undefined;
  // Timers are capped so a long retention does not overflow setTimeout.
  const later = (ms?: number) => (ms === undefined ? undefined : { requeueAfter: Math.min(ms, 3_600_000) });

  if (offer.status?.outcome === undefined) return answer(ctx, offer, rc);
  if (offer.status.outcome === "Accepted" && !released(offer)) {
    const why = releaseReason(ctx, offer);
    if (why) return release(ctx, offer, why, rc);
  }
  return settled ? later(retentionLeft) : undefined;
}

function released(offer: Offer): boolean {
  return findCondition(offer.status?.conditions, RELEASED)?.status === "True";
}

async function answer(
  ctx: OperatorContext,
  offer: Offer,
  rc: ReconcileContext,
): Promise<ReconcileResult | undefined> {
  const now = ctx.now();
  const run = runOf(ctx, offer);
  if (!run || run.metadata.deletionTimestamp) {
    const st = withdrawnStatus(offer, now, "the run was deleted before the primary answered");
    if (st) await writeAnswer(ctx, offer, st, rc);
    return undefined;
  }
  const timedOut = timeoutStatus(offer, now);
  if (timedOut) {
    await writeAnswer(ctx, offer, timedOut, rc);
    return undefined;
  }
  const provider = ctx.caches.providers.get(offer.spec.provider);
  const responder = provider ? ctx.responderFor(provider) : undefined;
  if (!provider || !responder) {
    // Nobody can answer for this provider here: the offer will time out, which is the
    // protocol's answer to silence. Say so on the offer.
    await setOfferCondition(
      ctx,
      offer,
      "False",
      "NoResponder",
      provider
        ? `no responder for ${provider.spec.type} providers in this operator`
        : `CloudProvider ${offer.spec.provider} does not exist`,
    );
    return { requeueAfter: Math.max(250, untilDeadline(offer, now)) };
  }
  const credentials = readSecret(ctx, provider.spec.azure?.credentialsSecretRef);
  let result: OfferAnswer;
  try {
    result = await responder.respond(offer, provider, {
      ...(credentials ? { credentials } : {}),
      signal: rc.signal,
    });
  } catch (err) {
    if (isRetryable(err)) {
      const left = untilDeadline(offer, ctx.now());
      rc.log.warn("primary throttled or unavailable; retrying before the deadline", {
        err,
        deadlineInMs: left,
      });
      return { requeueAfter: Math.max(250, Math.min(left, err.retryAfterMs ?? 2_000)) };
    }
    result = {
      outcome: "Declined",
      reason: "ProviderError",
      message: `the responder failed: ${err instanceof Error ? err.message : String(err)}`,
    };
  }
  const status: CapacityOfferStatus = {
    ...offer.status,
    outcome: result.outcome,
    ...(result.outcome === "Declined" ? { reason: result.reason ?? "ProviderError" } : {}),
    message: safeMessage(result.message),
    respondedAt: timestamp(ctx.now().getTime()),
    ...(result.acceptedPricePerHour !== undefined
      ? { acceptedPricePerHour: result.acceptedPricePerHour }
      : {}),
    ...(result.reservation ? { reservation: result.reservation } : {}),
  };
  const written = await writeAnswer(ctx, offer, status, rc);
  if (!written && result.outcome === "Accepted") {
    // Someone (the deadline rule) answered first: what we just reserved is not wanted.
    const fresh = await ctx.mgmt.get<Offer>(
      SpillwayResources.CapacityOffer,
      offer.metadata.name!,
      offer.metadata.namespace,
    );
    if (fresh.status?.outcome !== "Accepted") {
      await responder.release(fresh, provider, { ...(credentials ? { credentials } : {}) });
      rc.log.info("released capacity reserved after the offer was answered", {
        outcome: fresh.status?.outcome,
      });
    }
  }
  return undefined;
}

async function writeAnswer(
  ctx: OperatorContext,
  offer: Offer,
  status: CapacityOfferStatus,
  rc: ReconcileContext,
): Promise<boolean> {
  const next = { ...offer, status: { ...status, observedGeneration: offer.metadata.generation } };
  try {
    await ctx.mgmt.updateStatus(SpillwayResources.CapacityOffer, next);
  } catch (err) {
    if (isConflict(err)) return false;
    throw err;
  }
  ctx.metrics.recordOffer(offer.spec.provider, status.outcome ?? "", status.reason);
  rc.log.info("offer answered", {
    outcome: status.outcome,
    reason: status.reason,
    acceptedPricePerHour: status.acceptedPricePerHour,
  });
  ctx.events.record(
    offer,
    status.outcome === "Accepted" ? "Normal" : "Warning",
    status.outcome ?? "Answered",
    `${offer.spec.provider}: ${status.outcome}${status.reason ? ` (${status.reason})` : ""}${status.message ? `: ${status.message}` : ""}`,
  );
  const runKey = `${offer.metadata.namespace}/${offer.spec.run.name}`;
  ctx.enqueue("trainingrun", runKey);
  return true;
}

async function release(
  ctx: OperatorContext,
  offer: Offer,
  why: string,
  rc: ReconcileContext,
): Promise<ReconcileResult | undefined> {
  const provider = ctx.caches.providers.get(offer.spec.provider);
  const responder = provider ? ctx.responderFor(provider) : undefined;
  if (provider && responder) {
    const credentials = readSecret(ctx, provider.spec.azure?.credentialsSecretRef);
    try {
      await responder.release(offer, provider, {
        ...(credentials ? { credentials } : {}),
        signal: rc.signal,
      });
    } catch (err) {
      if (isRetryable(err)) return { requeueAfter: err.retryAfterMs ?? 5_000 };
      throw err;
    }
  }
  await setOfferCondition(ctx, offer, "True", "CapacityReleased", `reservation released: ${why}`);
  rc.log.info("reservation released", { why });
  return undefined;
}

async function setOfferCondition(
  ctx: OperatorContext,
  offer: Offer,
  status: "True" | "False",
  reason: string,
  message: string,
): Promise<void> {
  const type = reason === "NoResponder" ? "Answerable" : RELEASED;
  const next = structuredClone(offer);
  if (!setStatusCondition(next, { type, status, reason, message }, ctx.now().getTime())) return;
  try {
    await ctx.mgmt.updateStatus(SpillwayResources.CapacityOffer, next);
  } catch (err) {
    if (!isConflict(err)) throw err;
  }
}

export type { CloudProvider };

/**
 * The reservation collector: a reservation is kept only while an Accepted, unreleased offer
 * (same uid) holds it and its run still needs it. Anything else — made by a responder killed
 * before its answer was written, or answered too late — is released. Runs on the leader with
 * the orphan collector; reservations of unanswered offers are left to the answer path.
 */
export async function collectReservations(
  ctx: OperatorContext,
): Promise<Array<{ provider: string; reservation: string; why: string }>> {
  const collected: Array<{ provider: string; reservation: string; why: string }> = [];
  for (const provider of ctx.caches.providers.list()) {
    const responder = ctx.responderFor(provider);
    if (!responder?.managedReservations || !responder.releaseReservation) continue;
    const credentials = readSecret(ctx, provider.spec.azure?.credentialsSecretRef);
    const rctx = credentials ? { credentials } : {};
    let refs: Awaited<ReturnType<NonNullable<typeof responder.managedReservations>>>;
    try {
      refs = await responder.managedReservations(provider, rctx);
    } catch (err) {
      ctx.log.warn("could not list reservations", { provider: provider.metadata.name, err });
      continue;
    }
    for (const ref of refs) {
      const offer = ctx.caches.offers.get(`${ref.offer.namespace}/${ref.offer.name}`);
      const sameOffer = offer && (!ref.offerUid || offer.metadata.uid === ref.offerUid);
      let why: string | undefined;
      if (!sameOffer) why = "its offer no longer exists";
      // Still being answered: the answer path keeps or removes it.
      else if (offer.status?.outcome === undefined) continue;
      else if (offer.status.outcome !== "Accepted") why = `its offer was answered ${offer.status.outcome}`;
      else if (released(offer)) why = "its offer's reservation was released";
      if (!why) continue;
      try {
        await responder.releaseReservation(ref.name, provider, rctx);
        collected.push({ provider: provider.metadata.name ?? "", reservation: ref.name, why });
        ctx.log.info("orphaned reservation released", {
          provider: provider.metadata.name,
          reservation: ref.name,
          why,
        });
      } catch (err) {
        ctx.log.warn("could not release an orphaned reservation; will retry", { reservation: ref.name, err });
      }
    }
  }
  return collected;
}
