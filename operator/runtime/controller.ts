/**
 * A controller: a keyed work queue fed by informers, drained by `concurrency` workers that
 * call a level-triggered reconciler. The reconciler gets only a key — it re-reads the object
 * and the world from the caches, converges, writes status — and never sees event types.
 *
 * Results: `{ requeueAfter }` schedules the next look; a thrown error retries the key with
 * per-key exponential backoff and jitter; a `TerminalError` is logged, counted and *not*
 * retried (the next change to the object enqueues it again).
 */
import type { BackoffOptions } from "./backoff.ts";
import { isConflict } from "./client.ts";
import { type Clock, realClock } from "./clock.ts";
import type { EventHandler, Informer } from "./informer.ts";
import { type LogContext, type Logger, silentLogger, withContext } from "./logging.ts";
import type { ReconcileOutcome, RuntimeMetrics } from "./metrics.ts";
import { WorkQueue } from "./queue.ts";
import { type KubeObject, objectKey, splitKey } from "./resources.ts";

export interface ReconcileResult {
  /** Reconcile this key again after this many milliseconds (unless something enqueues it sooner). */
  requeueAfter?: number;
}

/** An error a retry cannot fix (bad spec, impossible request): reported, not retried. */
export class TerminalError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TerminalError";
  }
}

export function isTerminal(err: unknown): boolean {
  return err instanceof TerminalError || (err instanceof Error && err.name === "TerminalError");
}

export interface ReconcileContext {
  controller: string;
  key: string;
  namespace: string | undefined;
  name: string;
  /** JSON logger with controller, namespace, run, offer and provider on every line. */
  log: Logger;
  /** Adds context fields (e.g. `{ provider }`) to `log` for the rest of this reconcile. */
  with(fields: LogContext): Logger;
  /** Aborted when the controller stops (graceful-shutdown timeout or lost leadership). */
  signal: AbortSignal;
  /** How many times in a row this key has failed before this attempt. */
  retries: number;
}

export type Reconciler = (key: string, ctx: ReconcileContext) => Promise<ReconcileResult | undefined>;

/** Maps a watched object to the keys of the controller's objects that must be reconciled. */
export type MapFunc<T extends KubeObject> = (obj: T) => readonly string[];

export interface ControllerOptions {
  name: string;
  reconcile: Reconciler;
  /** Parallel workers (distinct keys only). Default 2. */
  concurrency?: number;
  /** Per-key retry backoff. Default 500 ms doubling to 5 min, 20 % jitter. */
  backoff?: BackoffOptions;
  /** Context fields for a key's log lines, e.g. `(k) => ({ run: splitKey(k).name })`. */
  logContext?: (key: string) => LogContext;
  clock?: Clock;
  random?: () => number;
  logger?: Logger;
  metrics?: RuntimeMetrics;
}

interface Source {
  informer: Informer<KubeObject>;
  map: MapFunc<KubeObject>;
  handler?: () => void;
}

/** Enqueue the object itself (the controller's primary kind). */
export const mapToSelf: MapFunc<KubeObject> = (obj) => [objectKey(obj)];

/** Enqueue the controlling owner of kind `kind` (owned objects in the same namespace). */
export function mapToOwner(kind: string): MapFunc<KubeObject> {
  return (obj) =>
    (obj.metadata.ownerReferences ?? [])
      .filter((r) => r.kind === kind && r.controller !== false)
      .map((r) => (obj.metadata.namespace ? `${obj.metadata.namespace}/${r.name}` : r.name));
}

export class Controller {
  readonly name: string;
  private queue?: WorkQueue;
  private readonly sources: Source[] = [];
  private workers: Promise<void>[] = [];
  private abort?: AbortController;
  private readonly clock: Clock;
  private readonly log: Logger;

  constructor(private readonly opts: ControllerOptions) {
    this.name = opts.name;
    this.clock = opts.clock ?? realClock;
    this.log = opts.logger ?? silentLogger();
  }

  /** Watches `informer`; each add/update/delete enqueues the keys `map` returns. */
  watch<T extends KubeObject>(informer: Informer<T>, map: MapFunc<T> = mapToSelf as MapFunc<T>): this {
    this.sources.push({
      informer: informer as unknown as Informer<KubeObject>,
      map: map as MapFunc<KubeObject>,
    });
    return this;
  }

  get running(): boolean {
    return this.queue !== undefined && !this.queue.shuttingDown;
  }

  /** Keys waiting (the depth metric); 0 when stopped. */
  get depth(): number {
    return this.queue?.depth ?? 0;
  }

  /** Enqueues a key by hand (e.g. from a timer or a remote-cluster watch). */
  enqueue(key: string): void {
    this.queue?.add(key);
  }

  /**
   * Starts the workers with a fresh queue and subscribes to the sources; subscribing
   * replays every cached object, so a new leader reconciles the whole world once.
   */
  start(): void {
    if (this.running) return;
    const metrics = this.opts.metrics;
    this.queue = new WorkQueue({
      backoff: this.opts.backoff ?? { baseMs: 500, maxMs: 300_000, jitter: 0.2 },
      clock: this.clock,
      random: this.opts.random,
      onDepth: (d) => metrics?.queueDepth.set({ controller: this.name }, d),
    });
    this.abort = new AbortController();
    for (const source of this.sources) {
      const enqueueAll = (obj: KubeObject) => {
        for (const key of source.map(obj)) this.queue?.add(key);
      };
      const handler: EventHandler<KubeObject> = {
        add: enqueueAll,
        update: (oldObj, newObj) => {
          enqueueAll(oldObj);
          if (newObj !== oldObj) enqueueAll(newObj);
        },
        delete: enqueueAll,
      };
      source.handler = source.informer.addHandler(handler);
    }
    const n = Math.max(1, this.opts.concurrency ?? 2);
    this.workers = Array.from({ length: n }, () => this.worker(this.queue!, this.abort!.signal));
  }

  /**
   * Stops taking work, waits up to `timeoutMs` for in-flight reconciles, then aborts their
   * signal and waits for them to settle. Returns true if everything finished in time.
   */
  async stop(timeoutMs = 30_000): Promise<boolean> {
    const queue = this.queue;
    if (!queue) return true;
    for (const s of this.sources) {
      s.handler?.();
      s.handler = undefined;
    }
    queue.shutdown();
    const all = Promise.all(this.workers).then(() => true);
    let timer: { cancel(): void } | undefined;
    const timedOut = new Promise<false>((resolve) => {
      timer = this.clock.setTimer(() => resolve(false), timeoutMs);
    });
    const inTime = await Promise.race([all, timedOut]);
    timer?.cancel();
    if (!inTime) {
      this.log.warn("in-flight reconciles did not finish in time; aborting them", {
        controller: this.name,
        inFlight: queue.inFlight,
      });
      this.abort?.abort();
      await all;
    }
    this.workers = [];
    this.opts.metrics?.queueDepth.set({ controller: this.name }, 0);
    return inTime;
  }

  private async worker(queue: WorkQueue, signal: AbortSignal): Promise<void> {
    for (;;) {
      const key = await queue.get();
      if (key === undefined) return;
      await this.processOne(queue, key, signal);
    }
  }

  private async processOne(queue: WorkQueue, key: string, signal: AbortSignal): Promise<void> {
    const { namespace, name } = splitKey(key);
    let fields: LogContext = { controller: this.name, namespace, ...this.opts.logContext?.(key) };
    const root = this.log;
    const ctx: ReconcileContext = {
      controller: this.name,
      key,
      namespace,
      name,
      log: withContext(root, fields),
      with(extra) {
        fields = { ...fields, ...extra };
        ctx.log = withContext(root, fields);
        return ctx.log;
      },
      signal,
      retries: queue.numRequeues(key),
    };
    const started = this.clock.now();
    let outcome: ReconcileOutcome = "success";
    try {
      const result = await this.opts.reconcile(key, ctx);
      queue.forget(key);
      if (result?.requeueAfter && result.requeueAfter > 0) {
        outcome = "requeue";
        queue.addAfter(key, result.requeueAfter);
      }
    } catch (err) {
      if (isConflict(err)) {
        // A write raced a newer version the cache has not seen yet: the watch event that
        // brings it will enqueue the key anyway; look again shortly without backing off.
        outcome = "requeue";
        queue.forget(key);
        queue.addAfter(key, 50);
        ctx.log.debug("conflict on write; re-reading from the cache", { err });
      } else if (isTerminal(err)) {
        outcome = "terminal";
        queue.forget(key);
        this.opts.metrics?.reconcileErrors.inc({ controller: this.name, kind: "terminal" });
        ctx.log.error("reconcile failed permanently; not retrying", { err });
      } else {
        outcome = "error";
        const delay = queue.addRateLimited(key);
        this.opts.metrics?.reconcileErrors.inc({ controller: this.name, kind: "transient" });
        this.opts.metrics?.queueRetries.inc({ controller: this.name });
        ctx.log.warn("reconcile failed; retrying with backoff", {
          err,
          retries: queue.numRequeues(key),
          retryInMs: Math.round(delay),
        });
      }
    } finally {
      queue.done(key);
      const seconds = Math.max(0, this.clock.now() - started) / 1000;
      this.opts.metrics?.reconcileDuration.observe({ controller: this.name, result: outcome }, seconds);
      this.opts.metrics?.reconcileTotal.inc({ controller: this.name, result: outcome });
    }
  }
}
