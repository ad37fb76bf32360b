/**
 * core/v1 Events about Spillway objects, as `kubectl describe` shows them. Repeats of the
 * same (object, type, reason, message) within the aggregation window bump `count` and
 * `lastTimestamp` on one Event instead of creating new ones (client-go's EventCorrelator,
 * simplified). Messages are scrubbed of secret-looking values and capped in length.
 */
import { randomBytes } from "node:crypto";
import { isNotFound, type KubeClient } from "./client.ts";
import { type Clock, realClock } from "./clock.ts";
import { timestamp } from "./conditions.ts";
import { type Logger, silentLogger } from "./logging.ts";
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
}

const MAX_MESSAGE = 1024;

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

  constructor(
    private readonly client: KubeClient,
    private readonly opts: EventRecorderOptions = {},
  ) {
    this.component = opts.component ?? "spillway-operator";
    this.instance = opts.instance ?? this.component;
    this.clock = opts.clock ?? realClock;
    this.log = opts.logger ?? silentLogger();
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
    const text = safeMessage(message);
    const namespace = obj.metadata.namespace ?? this.opts.clusterScopedNamespace ?? "default";
    const corrKey = [
      obj.metadata.uid ?? "",
      obj.metadata.namespace ?? "",
      obj.metadata.name,
      type,
      reason,
      text,
    ].join("\u0000");
    const now = this.clock.now();
    const window = this.opts.aggregationWindowMs ?? 600_000;
    this.prune(now, window);
    const prior = this.seen.get(corrKey);
    try {
      if (prior && now - prior.at <= window) {
        const count = prior.count + 1;
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
        count: 1,
        firstTimestamp: timestamp(now),
        lastTimestamp: timestamp(now),
        source: { component: this.component },
        reportingComponent: this.component,
        reportingInstance: this.instance,
        ...(action ? { action } : {}),
      };
      const created = await this.client.create<EventObject>(Resources.Event, event);
      this.seen.set(corrKey, { name, namespace, count: 1, first: event.firstTimestamp, at: now });
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
