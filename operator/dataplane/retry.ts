/** Retries with exponential backoff and full jitter for throttling and transient store errors. */
import { setTimeout as sleep } from "node:timers/promises";
import { StoreError } from "./store.ts";

export interface RetryPolicy {
  /** Total attempts, including the first. */
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 6, baseDelayMs: 200, maxDelayMs: 15_000 };

/** True for errors worth another attempt: throttling, transient server/network errors. */
export function isTransient(e: unknown): boolean {
  if (e instanceof StoreError) return e.retryable;
  const code = (e as NodeJS.ErrnoException | undefined)?.code ?? "";
  return /^(ECONNRESET|ECONNREFUSED|EPIPE|ETIMEDOUT|EAI_AGAIN|UND_ERR|ERR_STREAM_PREMATURE_CLOSE)/.test(code);
}

/** Delay before attempt `n` (1-based retry number): uniform in [0, min(max, base·2^(n-1))], or Retry-After. */
export function backoffDelay(policy: RetryPolicy, retry: number, e?: unknown, random = Math.random): number {
  const hinted = e instanceof StoreError ? e.retryAfterMs : undefined;
  if (hinted !== undefined) return Math.min(policy.maxDelayMs, hinted);
  const cap = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (retry - 1));
  return Math.floor(random() * cap);
}

export async function withRetry<T>(
  fn: (attempt: number) => Promise<T>,
  options: {
    policy?: RetryPolicy;
    signal?: AbortSignal;
    retryable?: (e: unknown) => boolean;
    onRetry?: (e: unknown, attempt: number, delayMs: number) => void;
  } = {},
): Promise<T> {
  const policy = options.policy ?? DEFAULT_RETRY;
  const retryable = options.retryable ?? isTransient;
  for (let attempt = 1; ; attempt++) {
    options.signal?.throwIfAborted();
    try {
      return await fn(attempt);
    } catch (e) {
      if (attempt >= policy.attempts || !retryable(e) || options.signal?.aborted) throw e;
      const delay = backoffDelay(policy, attempt, e);
      options.onRetry?.(e, attempt, delay);
      await sleep(delay, undefined, options.signal ? { signal: options.signal } : {});
    }
  }
}
