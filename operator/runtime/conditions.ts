/**
 * `metav1.Condition` helpers with apimachinery's `meta.SetStatusCondition` semantics: one
 * condition per type; `lastTransitionTime` moves only when `status` changes; reason,
 * message and `observedGeneration` are updated in place.
 */
import type { Condition } from "../api/v1alpha1/common.ts";

export type { Condition } from "../api/v1alpha1/common.ts";
export type ConditionStatus = Condition["status"];

export interface ConditionUpdate {
  type: string;
  status: ConditionStatus;
  /** CamelCase, e.g. `SpecInvalid`, `OfferPending`. */
  reason: string;
  message?: string;
  /** The `.metadata.generation` this condition was computed from. */
  observedGeneration?: number;
}

/** Conditions live in `status.conditions` of every Spillway kind. */
export interface WithConditions {
  metadata?: { generation?: number };
  status?: { conditions?: Condition[] } & object;
}

/** Kubernetes timestamps are RFC 3339 in whole seconds. */
export function timestamp(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace(".000Z", "Z");
}

export function findCondition(
  conditions: readonly Condition[] | undefined,
  type: string,
): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

export function isConditionTrue(conditions: readonly Condition[] | undefined, type: string): boolean {
  return findCondition(conditions, type)?.status === "True";
}

/**
 * Sets a condition in `conditions` (mutated) and reports whether anything changed. A
 * condition whose status is unchanged keeps its `lastTransitionTime`.
 */
export function setCondition(
  conditions: Condition[],
  update: ConditionUpdate,
  now: number = Date.now(),
): boolean {
  const existing = conditions.find((c) => c.type === update.type);
  const message = update.message ?? "";
  if (!existing) {
    const created: Condition = {
      type: update.type,
      status: update.status,
      lastTransitionTime: timestamp(now),
      reason: update.reason,
      message,
    };
    if (update.observedGeneration !== undefined) created.observedGeneration = update.observedGeneration;
    conditions.push(created);
    return true;
  }
  let changed = false;
  if (existing.status !== update.status) {
    existing.status = update.status;
    existing.lastTransitionTime = timestamp(now);
    changed = true;
  }
  if (existing.reason !== update.reason) {
    existing.reason = update.reason;
    changed = true;
  }
  if (existing.message !== message) {
    existing.message = message;
    changed = true;
  }
  if (update.observedGeneration !== undefined && existing.observedGeneration !== update.observedGeneration) {
    existing.observedGeneration = update.observedGeneration;
    changed = true;
  }
  return changed;
}

/**
 * Sets a condition on an object's `status.conditions`, stamping `observedGeneration` with
 * the object's current generation. Returns whether the status changed.
 */
export function setStatusCondition(
  obj: WithConditions,
  update: Omit<ConditionUpdate, "observedGeneration">,
  now: number = Date.now(),
): boolean {
  obj.status ??= {};
  const status = obj.status;
  status.conditions ??= [];
  const conditions = status.conditions;
  return setCondition(conditions, { ...update, observedGeneration: obj.metadata?.generation }, now);
}

export function removeCondition(conditions: Condition[], type: string): boolean {
  const i = conditions.findIndex((c) => c.type === type);
  if (i < 0) return false;
  conditions.splice(i, 1);
  return true;
}
