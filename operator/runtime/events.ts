/**
 * core/v1 Events about Spillway objects, as `kubectl describe` shows them. Repeats of the
 * same (object, type, reason, message) within the aggregation window bump `count` and
 * `lastTimestamp` on one Event instead of creating new ones (client-go's EventCorrelator,
 * simplified). Messages are scrubbed of secret-looking values and capped in length.
 *
 * Controllers `post` Events; a background writer sends them (client-go's EventBroadcaster):
 * Events never sit on a reconcile's path, have their own rate limit (a burst of placements
 * does not spend the controllers' API budget on them), repeats still waiting are folded into
 * one write, and the queue is bounded — past it Events are dropped and counted, as client-go
 * drops them when its channel is full. `flush` drains on shutdown.
 */
import { randomBytes } from "node:crypto";
import { isNotFound, type KubeClient } from "./client.ts";
import { type Clock, realClock } from "./clock.ts";
import { timestamp } from "./conditions.ts";
import { type Logger, silentLogger } from "./logging.ts";
import type { RuntimeMetrics } from "./metrics.ts";
import { type RateLimitOptions, TokenBucket } from "./ratelimit.ts";
import { redactText } from "./redact.ts";
import { apiVersionOf, type KubeObject, Resources, type ResourceType } from "./resources.ts";

export type EventType = "Normal" | "Warning";

export interface EventObject extends KubeObject {
  involvedObject: {
    apiVersion?: string;
    kind?: string;
    name?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
  };
  reason: string;
  message: string;
  type: EventType;
  count: number;
  firstTimestamp: string;
  lastTimestamp: string;
  source: { component: string };
  reportingComponent: string;
  reportingInstance: string;
  action?: string;
}

export interface EventRecorderOptions {
  /** `reportingController` / `source.component`. Default `spillway-operator`. */
  component?: string;
  /** This replica (pod name). */
  instance?: string;
  /** Repeats within this window are aggregated. Default 10 min. */
  aggregationWindowMs?: number;
  /** Namespace for events about cluster-scoped objects. Default `default` (as client-go). */
  clusterScopedNamespace?: string;
  clock?: Clock;
  logger?: Logger;
  /** Rate limit of the background writer (`post`). Default 50 QPS, burst 200. */
  rateLimit?: RateLimitOptions;
  /** Distinct Events waiting to be written before new ones are dropped. Default 5,000. */
  maxPending?: number;
  /** Writes in flight at once. Default 4. */
  writers?: number;
  /** Counts Events by outcome (written, aggregated, dropped, failed). */
  metrics?: RuntimeMetrics;
}

const MAX_MESSAGE = 1024;

/** What an Event needs of its object: a reference, not the object (the queue holds many). */
function reference(resource: ResourceType, obj: KubeObject): KubeObject {
  return {
    apiVersion: obj.apiVersion ?? apiVersionOf(resource),
    kind: obj.kind ?? resource.kind,
    metadata: {
      name: obj.metadata.name,
      namespace: obj.metadata.namespace,
      uid: obj.metadata.uid,
      resourceVersion: obj.metadata.resourceVersion,
    },
  } as KubeObject;
}

interface PendingEvent {
  resource: ResourceType;
  ref: KubeObject;
  type: EventType;
  reason: string;
  text: string;
  /** When it was posted: the Event's timestamps are this, not the write's. */
  at: number;
  /** Further posts of the same Event while this one waited. */
  repeats: number;
}

/** The message that goes into an Event or condition: secrets scrubbed, length capped. */
export function safeMessage(message: string): string {
  const clean = redactText(message);
  return clean.length > MAX_MESSAGE ? `${clean.slice(0, MAX_MESSAGE - 1)}…` : clean;
}

export class EventRecorder {
  private readonly seen = new Map<
    string,
    { name: string; namespace: string; count: number; first: string; at: number }
  >();
  private readonly component: string;
  private readonly instance: string;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly pending = new Map<string, PendingEvent>();
  private readonly bucket: TokenBucket;
  private active = 0;
  private idle: Array<() => void> = [];

  constructor(
    private readonly client: KubeClient,
    private readonly opts: EventRecorderOptions = {},
  ) {
    this.component = opts.component ?? "spillway-operator";
    this.instance = opts.instance ?? this.component;
    this.clock = opts.clock ?? realClock;
    this.log = opts.logger ?? silentLogger();
    this.bucket = new TokenBucket(opts.rateLimit ?? { qps: 50, burst: 200 }, this.clock);
  }

  /**
   * Queues an Event for the background writer and returns at once. A post equal to one still
   * waiting (same object, type, reason and message) is folded into it (its count goes up).
   */
  post(resource: ResourceType, obj: KubeObject, type: EventType, reason: string, message: string): void {
    const text = safeMessage(message);
    const key = correlationKey(obj, type, reason, text);
    const waiting = this.pending.get(key);
    if (waiting) {
      waiting.repeats++;
      this.opts.metrics?.events.inc({ outcome: "aggregated" });
      return;
    }
    if (this.pending.size >= (this.opts.maxPending ?? 5_000)) {
      this.opts.metrics?.events.inc({ outcome: "dropped" });
      return;
    }
    this.pending.set(key, {
      resource,
      ref: reference(resource, obj),
      type,
      reason,
      text,
      at: this.clock.now(),
      repeats: 0,
    });
    this.pump();
  }

  /** Events posted and not yet written. */
  get backlog(): number {
    return this.pending.size + this.active;
  }

  /** Resolves once every posted Event is written (or failed), or after `timeoutMs`. */
  async flush(timeoutMs = 5_000): Promise<void> {
    if (this.backlog === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      new Promise<void>((resolve) => this.idle.push(resolve)),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
  }

  private pump(): void {
    while (this.active < (this.opts.writers ?? 4) && this.pending.size > 0) {
      this.active++;
      void this.writeLoop();
    }
  }

  private async writeLoop(): Promise<void> {
    try {
      for (;;) {
        const next = this.pending.entries().next();
        if (next.done) break;
        const [key, ev] = next.value;
        this.pending.delete(key);
        await this.bucket.take();
        const written = await this.write(
          ev.resource,
          ev.ref,
          ev.type,
          ev.reason,
          ev.text,
          undefined,
          ev.at,
          ev.repeats + 1,
        );
        this.opts.metrics?.events.inc({ outcome: written ? "written" : "failed" });
      }
    } finally {
      this.active--;
      if (this.backlog === 0) for (const w of this.idle.splice(0)) w();
    }
  }

  /**
   * Records an Event about `obj`. Never throws: an Event is best-effort and must not fail a
   * reconcile. Returns the Event written, or undefined if writing failed.
   */
  async record(
    resource: ResourceType,
    obj: KubeObject,
    type: EventType,
    reason: string,
    message: string,
    action?: string,
  ): Promise<EventObject | undefined> {
    return this.write(resource, obj, type, reason, safeMessage(message), action, this.clock.now(), 1);
  }

  /** Creates the Event, or bumps the one written for the same key within the window by `times`. */
  private async write(
    resource: ResourceType,
    obj: KubeObject,
    type: EventType,
    reason: string,
    text: string,
    action: string | undefined,
    now: number,
    times: number,
  ): Promise<EventObject | undefined> {
    const namespace = obj.metadata.namespace ?? this.opts.clusterScopedNamespace ?? "default";
    const corrKey = correlationKey(obj, type, reason, text);
    const window = this.opts.aggregationWindowMs ?? 600_000;
    this.prune(now, window);
    const prior = this.seen.get(corrKey);
    try {
      if (prior && now - prior.at <= window) {
        const count = prior.count + times;
        try {
          const patched = await this.client.patch<EventObject>(
            Resources.Event,
            prior.name,
            prior.namespace,
            { count, lastTimestamp: timestamp(now) },
            "merge",
          );
          this.seen.set(corrKey, { ...prior, count, at: now });
          return patched;
        } catch (err) {
          if (!isNotFound(err)) throw err;
          // The Event expired (TTL) meanwhile: start a new one.
        }
      }
      const name = `${obj.metadata.name}.${now.toString(16)}${randomBytes(2).toString("hex")}`;
      const event: EventObject = {
        apiVersion: "v1",
        kind: "Event",
        metadata: { name, namespace },
        involvedObject: {
          apiVersion: obj.apiVersion ?? apiVersionOf(resource),
          kind: obj.kind ?? resource.kind,
          name: obj.metadata.name,
          namespace: obj.metadata.namespace,
          uid: obj.metadata.uid,
          resourceVersion: obj.metadata.resourceVersion,
        },
        reason,
        message: text,
        type,
        count: times,
        firstTimestamp: timestamp(now),
        lastTimestamp: timestamp(now),
        source: { component: this.component },
        reportingComponent: this.component,
        reportingInstance: this.instance,
        ...(action ? { action } : {}),
      };
      const created = await this.client.create<EventObject>(Resources.Event, event);
      this.seen.set(corrKey, { name, namespace, count: times, first: event.firstTimestamp, at: now });
      return created;
    } catch (err) {
      this.log.warn("could not record event", { err, reason, object: obj.metadata.name });
      return undefined;
    }
  }

  normal(resource: ResourceType, obj: KubeObject, reason: string, message: string) {
    return this.record(resource, obj, "Normal", reason, message);
  }

  warning(resource: ResourceType, obj: KubeObject, reason: string, message: string) {
    return this.record(resource, obj, "Warning", reason, message);
  }

  private prune(now: number, window: number): void {
    if (this.seen.size < 4096) return;
    for (const [k, v] of this.seen) if (now - v.at > window) this.seen.delete(k);
  }
}

function correlationKey(obj: KubeObject, type: EventType, reason: string, text: string): string {
  return [obj.metadata.uid ?? "", obj.metadata.namespace ?? "", obj.metadata.name, type, reason, text].join(
    "\u0000",
  );
}
