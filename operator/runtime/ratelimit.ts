/**
 * Client-side token bucket for API requests: `qps` tokens per second, at most `burst`
 * banked. client-go's default (5 QPS, burst 10) is what capped Kueue's MultiKueue
 * throughput, so Spillway defaults higher and makes it explicit per cluster.
 */
import { type Clock, realClock, sleep } from "./clock.ts";

export interface RateLimitOptions {
  qps: number;
  burst: number;
}

export const DEFAULT_RATE_LIMIT: RateLimitOptions = { qps: 50, burst: 100 };

export class TokenBucket {
  private tokens: number;
  private last: number;
  readonly qps: number;
  readonly burst: number;

  constructor(
    opts: RateLimitOptions,
    private readonly clock: Clock = realClock,
  ) {
    if (!(opts.qps > 0) || !(opts.burst >= 1)) {
      throw new Error(`invalid rate limit qps=${opts.qps} burst=${opts.burst}: need qps > 0 and burst >= 1`);
    }
    this.qps = opts.qps;
    this.burst = opts.burst;
    this.tokens = opts.burst;
    this.last = clock.now();
  }

  private refill(): void {
    const now = this.clock.now();
    if (now > this.last) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.qps);
      this.last = now;
    }
  }

  /** Tokens available now (fractional while refilling). */
  available(): number {
    this.refill();
    return this.tokens;
  }

  /** Takes a token if one is available. */
  tryTake(): boolean {
    this.refill();
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    return false;
  }

  /**
   * Reserves a token and returns how long the caller must wait before using it (0 = now).
   * Reservations go into debt, so concurrent callers are spaced 1/qps apart in FIFO order.
   */
  reserve(): number {
    this.refill();
    this.tokens -= 1;
    return this.tokens >= 0 ? 0 : (-this.tokens / this.qps) * 1000;
  }

  /** Waits until a token is available and takes it. */
  async take(signal?: AbortSignal): Promise<void> {
    const wait = this.reserve();
    if (wait > 0) await sleep(this.clock, wait, signal);
  }
}
