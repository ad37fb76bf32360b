/**
 * Prometheus metrics (prom-client). The runtime's own series — reconcile duration and
 * errors per controller, queue depth, API requests, leadership — and Spillway's domain
 * series that controllers record: offers by outcome and reason, placements by provider,
 * time from creation to placement. Labels never carry secrets (names of providers,
 * controllers, outcomes only). Controllers add their own series on `registry`.
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";

export type ReconcileOutcome = "success" | "requeue" | "error" | "terminal";

export class RuntimeMetrics {
  readonly registry: Registry;
  readonly reconcileDuration: Histogram<"controller" | "result">;
  readonly reconcileErrors: Counter<"controller" | "kind">;
  readonly reconcileTotal: Counter<"controller" | "result">;
  readonly queueDepth: Gauge<"controller">;
  readonly queueRetries: Counter<"controller">;
  readonly apiRequests: Counter<"cluster" | "verb" | "code" | "resource">;
  readonly informerRestarts: Counter<"resource" | "reason">;
  readonly isLeader: Gauge<"lease">;
  readonly offers: Counter<"provider" | "outcome" | "reason">;
  readonly placements: Counter<"provider">;
  readonly timeToPlacement: Histogram<"provider">;
  readonly events: Counter<"outcome">;

  constructor(registry: Registry = new Registry()) {
    this.registry = registry;
    const registers = [registry];
    this.reconcileDuration = new Histogram({
      name: "spillway_reconcile_duration_seconds",
      help: "Time spent in one reconcile, by controller and result.",
      labelNames: ["controller", "result"],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.reconcileTotal = new Counter({
      name: "spillway_reconcile_total",
      help: "Reconciles by controller and result (success, requeue, error, terminal).",
      labelNames: ["controller", "result"],
      registers,
    });
    this.reconcileErrors = new Counter({
      name: "spillway_reconcile_errors_total",
      help: "Reconciles that failed, by controller and kind (transient: retried with backoff; terminal: not retried).",
      labelNames: ["controller", "kind"],
      registers,
    });
    this.queueDepth = new Gauge({
      name: "spillway_workqueue_depth",
      help: "Keys waiting to be reconciled, by controller.",
      labelNames: ["controller"],
      registers,
    });
    this.queueRetries = new Counter({
      name: "spillway_workqueue_retries_total",
      help: "Keys re-queued with backoff after an error, by controller.",
      labelNames: ["controller"],
      registers,
    });
    this.apiRequests = new Counter({
      name: "spillway_api_requests_total",
      help: "Kubernetes API requests made by the operator, by cluster, verb, HTTP status code and resource.",
      labelNames: ["cluster", "verb", "code", "resource"],
      registers,
    });
    this.informerRestarts = new Counter({
      name: "spillway_informer_restarts_total",
      help: "List/watch restarts by resource and reason (gone: relist after 410; error: watch failed; closed: server closed the watch).",
      labelNames: ["resource", "reason"],
      registers,
    });
    this.isLeader = new Gauge({
      name: "spillway_leader",
      help: "1 when this replica holds the leader lease.",
      labelNames: ["lease"],
      registers,
    });
    this.offers = new Counter({
      name: "spillway_offers_total",
      help: "Capacity offers answered, by provider, outcome and reason.",
      labelNames: ["provider", "outcome", "reason"],
      registers,
    });
    this.placements = new Counter({
      name: "spillway_placements_total",
      help: "Training runs placed, by provider.",
      labelNames: ["provider"],
      registers,
    });
    this.events = new Counter({
      name: "spillway_events_total",
      help: "Kubernetes Events posted, by outcome (written; aggregated into one still waiting; dropped: queue full; failed).",
      labelNames: ["outcome"],
      registers,
    });
    this.timeToPlacement = new Histogram({
      name: "spillway_time_to_placement_seconds",
      help: "Time from a TrainingRun's creation to its placement, by provider.",
      labelNames: ["provider"],
      buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600],
      registers,
    });
  }

  /** Records an offer's answer (once per offer, when its status is written). */
  recordOffer(provider: string, outcome: string, reason?: string): void {
    this.offers.inc({ provider, outcome, reason: reason ?? "" });
  }

  /** Records a placement and its delay from the run's `creationTimestamp`. */
  recordPlacement(provider: string, createdAt: string | number | Date, placedAt: number = Date.now()): void {
    this.placements.inc({ provider });
    const created = new Date(createdAt).getTime();
    if (Number.isFinite(created)) {
      this.timeToPlacement.observe({ provider }, Math.max(0, (placedAt - created) / 1000));
    }
  }
}
