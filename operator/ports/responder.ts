/**
 * The primary's side of the right of first refusal: answering a CapacityOffer.
 * Implemented by `operator/clouds/azure` (real ARM calls; the sandbox serves the same ARM
 * endpoints), consumed by the CapacityOffer controller.
 */
import type { CapacityOffer, CloudProvider, DeclineReason } from "../api/v1alpha1/index.ts";

export interface OfferAnswer {
  outcome: "Accepted" | "Declined";
  /** Required when Declined. */
  reason?: DeclineReason;
  /** Human-readable; never contains credentials. */
  message: string;
  /** Price per hour for the whole run, USD, when Accepted. */
  acceptedPricePerHour?: number;
  /** Provider reference of the reserved capacity (e.g. the capacity reservation's ARM id). */
  reservation?: string;
}

export interface ResponderContext {
  /** Data of the Secret named by the provider's `spec.azure.credentialsSecretRef`, if any. */
  credentials?: Record<string, string>;
  signal?: AbortSignal;
}

export interface PrimaryResponder {
  /**
   * Answers the offer: reserves capacity and scales the node pool, or declines with a reason.
   * Idempotent per offer (reservations are named after the offer), so a retry after a crash
   * finds the reservation it already made. Throws `RetryableError` on throttling and
   * transient faults; any other throw is answered as `ProviderError` by the controller.
   */
  respond(offer: CapacityOffer, provider: CloudProvider, ctx: ResponderContext): Promise<OfferAnswer>;
  /** Releases what an accepted offer reserved (run done, deleted or moved). Idempotent. */
  release(offer: CapacityOffer, provider: CloudProvider, ctx: ResponderContext): Promise<void>;
  /** The reservations this responder made (from their tags), for the orphan collector. */
  managedReservations?(provider: CloudProvider, ctx: ResponderContext): Promise<ReservationRef[]>;
  /** Releases one reservation by name (an orphan: no offer holds it). Idempotent. */
  releaseReservation?(name: string, provider: CloudProvider, ctx: ResponderContext): Promise<void>;
}

export interface ReservationRef {
  name: string;
  /** The offer it was made for. */
  offer: { namespace: string; name: string };
  offerUid?: string;
}
