/**
 * Errors that cross the ports. Adapters classify what their cloud said into these, so
 * controllers decide on retry vs. terminal outcome without knowing any cloud's error codes.
 */
export class RetryableError extends Error {
  constructor(
    message: string,
    /** Suggested wait before the retry, when the service said (Retry-After). */
    readonly retryAfterMs?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "RetryableError";
  }
}

export function isRetryable(e: unknown): e is RetryableError {
  return e instanceof RetryableError;
}
