/**
 * A keyed work queue with client-go's semantics. It holds *keys*, never objects: a
 * reconciler reads the object's current state from the cache, so whatever happened while a
 * key waited, it is reconciled once against the latest state.
 *
 * - A key is queued at most once (adds while queued are merged).
 * - A key is never handed out while it is being processed; an add during processing marks
 *   it dirty and it is queued exactly once more when `done` is called.
 * - `addRateLimited` delays a key with per-key exponential backoff and jitter; `forget`
 *   resets it after a success. `addAfter` schedules a later look (`requeueAfter`).
 */
import { type BackoffOptions, backoffDelay, DEFAULT_BACKOFF } from "./backoff.ts";
import { type Clock, realClock, type Timer } from "./clock.ts";

export interface WorkQueueOptions {
  backoff?: BackoffOptions;
  clock?: Clock;
  random?: () => number;
  /** Called with the number of keys ready to be processed whenever it changes. */
  onDepth?: (depth: number) => void;
}

export class WorkQueue {
  private readonly ready: string[] = [];
  private readonly dirty = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly waiting = new Map<string, { at: number; timer: Timer }>();
  private readonly failures = new Map<string, number>();
  private getters: Array<(key: string | undefined) => void> = [];
  private closed = false;
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly backoff: BackoffOptions;

  constructor(private readonly opts: WorkQueueOptions = {}) {
    this.clock = opts.clock ?? realClock;
    this.random = opts.random ?? Math.random;
    this.backoff = opts.backoff ?? DEFAULT_BACKOFF;
  }

  /** Keys ready to be handed out (the queue depth metric). */
  get depth(): number {
    return this.ready.length;
  }

  /** Keys scheduled for later (backoff or requeueAfter). */
  get delayed(): number {
    return this.waiting.size;
  }

  get inFlight(): number {
    return this.processing.size;
  }

  get shuttingDown(): boolean {
    return this.closed;
  }

  add(key: string): void {
    if (this.closed || this.dirty.has(key)) return;
    this.dirty.add(key);
    if (this.processing.has(key)) return;
    this.enqueue(key);
  }

  /** Adds `key` after `ms`; of several pending delayed adds for a key, the earliest wins. */
  addAfter(key: string, ms: number): void {
    if (this.closed) return;
    if (ms <= 0) {
      this.add(key);
      return;
    }
    const at = this.clock.now() + ms;
    const existing = this.waiting.get(key);
    if (existing && existing.at <= at) return;
    existing?.timer.cancel();
    const timer = this.clock.setTimer(() => {
      this.waiting.delete(key);
      this.add(key);
    }, ms);
    this.waiting.set(key, { at, timer });
  }

  /** Adds `key` after its next backoff delay; returns that delay. */
  addRateLimited(key: string): number {
    const failures = (this.failures.get(key) ?? 0) + 1;
    this.failures.set(key, failures);
    const delay = backoffDelay(failures, this.backoff, this.random);
    this.addAfter(key, delay);
    return delay;
  }

  /** Clears the failure count of `key` (after a success or a terminal error). */
  forget(key: string): void {
    this.failures.delete(key);
  }

  numRequeues(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /** Next key to process; `undefined` once the queue is shut down. */
  get(): Promise<string | undefined> {
    if (this.closed) return Promise.resolve(undefined);
    const key = this.ready.shift();
    if (key !== undefined) {
      this.take(key);
      this.reportDepth();
      return Promise.resolve(key);
    }
    return new Promise((resolve) => this.getters.push(resolve));
  }

  /** Marks the processing of `key` finished; re-queues it if it was added meanwhile. */
  done(key: string): void {
    this.processing.delete(key);
    if (!this.closed && this.dirty.has(key)) this.enqueue(key);
  }

  /** Stops handing out work: queued and delayed keys are dropped, waiting `get`s get `undefined`. */
  shutdown(): void {
    if (this.closed) return;
    this.closed = true;
    this.ready.length = 0;
    this.dirty.clear();
    for (const w of this.waiting.values()) w.timer.cancel();
    this.waiting.clear();
    const getters = this.getters;
    this.getters = [];
    for (const g of getters) g(undefined);
    this.reportDepth();
  }

  private enqueue(key: string): void {
    const getter = this.getters.shift();
    if (getter) {
      this.take(key);
      getter(key);
      return;
    }
    this.ready.push(key);
    this.reportDepth();
  }

  private take(key: string): void {
    this.dirty.delete(key);
    this.processing.add(key);
  }

  private reportDepth(): void {
    this.opts.onDepth?.(this.ready.length);
  }
}
