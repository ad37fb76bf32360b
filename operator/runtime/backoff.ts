/**
 * Exponential backoff with jitter, shared by the work queue (per key), the informer (per
 * watch restart) and the leader elector. Jitter only ever shortens a delay, so `maxMs` is a
 * hard ceiling and the nominal value a hard floor-to-ceiling band: [nominal·(1−jitter), nominal].
 */
export interface BackoffOptions {
  /** Delay after the first failure. */
  baseMs: number;
  /** Upper bound of any delay. */
  maxMs: number;
  /** Fraction (0..1) of the nominal delay that may be taken off at random. */
  jitter?: number;
}

export const DEFAULT_BACKOFF: Required<BackoffOptions> = { baseMs: 500, maxMs: 300_000, jitter: 0.2 };

/** The delay before retry number `failures` (1 = first failure). */
export function backoffDelay(
  failures: number,
  opts: BackoffOptions,
  random: () => number = Math.random,
): number {
  const jitter = Math.min(1, Math.max(0, opts.jitter ?? DEFAULT_BACKOFF.jitter));
  const exp = Math.min(Math.max(0, failures - 1), 52);
  const nominal = Math.min(opts.maxMs, opts.baseMs * 2 ** exp);
  return nominal * (1 - jitter * random());
}

/** `period` stretched by up to `factor` at random: spreads periodic work of many replicas. */
export function jittered(periodMs: number, factor: number, random: () => number = Math.random): number {
  return periodMs * (1 + factor * random());
}
