/**
 * The operator process: one management-cluster client, the caches, the controllers, leader
 * election, the orphan collector, and the health and metrics endpoints.
 *
 * Caches run on every replica (a standby is warm); controllers and the collector run only on
 * the leader. Losing the lease stops the controllers at once (in-flight reconciles are
 * aborted), so two replicas never act together. `stop()` is the graceful shutdown: controllers
 * drain, the lease is released so a standby takes over without waiting for it to expire.
 */
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { collectDefaultMetrics, Gauge } from "prom-client";
import type {
  CapacityOffer,
  CloudProvider,
  DataSet,
  ProvisionedCluster,
  TrainingRun,
} from "./api/v1alpha1/index.ts";
import { capacityOfferController, collectReservations } from "./controllers/capacityoffer/controller.ts";
import {
  type Caches,
  DEFAULT_SETTINGS,
  type EventSink,
  type OperatorContext,
  type OperatorSettings,
  readSecret,
} from "./controllers/context.ts";
import { collectWorkerOrphans } from "./controllers/dataset/workers.ts";
import { RemoteClusters } from "./controllers/remote/clusters.ts";
import { collectOrphans } from "./controllers/remote/collector.ts";
import { trainingRunController } from "./controllers/trainingrun/controller.ts";
import { EXISTING_CLUSTER } from "./controllers/trainingrun/targets.ts";
import type { CheckpointPlanner, DataStager, PrimaryResponder, Provisioner } from "./ports/index.ts";
import { KubeClient } from "./runtime/client.ts";
import type { Controller } from "./runtime/controller.ts";
import { EventRecorder } from "./runtime/events.ts";
import { Informer } from "./runtime/informer.ts";
import { KubeLeaseLock, LeaderElector } from "./runtime/leaderelection.ts";
import { createLogger, type Logger } from "./runtime/logging.ts";
import { lastResortGc } from "./runtime/memory.ts";
import { RuntimeMetrics } from "./runtime/metrics.ts";
import { type KubeObject, Resources, type ResourceType, SpillwayResources } from "./runtime/resources.ts";

export interface ManagerOptions {
  /** Kubeconfig (YAML text) of the management cluster; absent = KUBECONFIG, ~/.kube/config or in-cluster. */
  kubeconfig?: string;
  /** The operator's namespace (Secrets, Leases). */
  namespace: string;
  /** This management cluster's name, stamped on every remote object. Default `spillway`. */
  origin?: string;
  /** Replica identity (pod name); a random suffix is added. */
  identity?: string;
  leaderElect?: boolean;
  leaderElectionId?: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  /** `host:port` or `:port`; empty = no server. Port 0 picks a free port. */
  metricsAddress?: string;
  healthAddress?: string;
  logger?: Logger;
  logLevel?: string;
  settings?: Partial<Omit<OperatorSettings, "namespace" | "origin">>;
  maxConcurrentReconciles?: number;
  /** Answers offers for a primary provider (by type; Azure in production). */
  responderFor?: (provider: CloudProvider) => PrimaryResponder | undefined;
  provisionerFor?: (provider: CloudProvider) => Provisioner | undefined;
  stager?: DataStager;
  checkpoints?: CheckpointPlanner;
  /** The checkpoint planner, built on the operator's context (its caches resolve providers). */
  checkpointsFor?: (ctx: OperatorContext) => CheckpointPlanner;
  /** Further controllers (ProvisionedCluster, DataSet) built on the same context. */
  extraControllers?: (ctx: OperatorContext) => Controller[];
  /** Client-side rate limit towards the management cluster. Default 200 QPS, burst 400. */
  kubeApiQps?: number;
  kubeApiBurst?: number;
  /** Rate limit of Event writes (their own budget, beside kubeApiQps). Default 50 QPS, burst 4×. */
  eventQps?: number;
  eventBurst?: number;
  /** How often the orphan collector runs. Default 60 s. */
  collectIntervalMs?: number;
}

function parseAddress(addr: string): { host: string; port: number } {
  const i = addr.lastIndexOf(":");
  const host = i <= 0 ? "0.0.0.0" : addr.slice(0, i);
  return { host, port: Number(addr.slice(i + 1) || 0) };
}

export class Manager {
  readonly ctx: OperatorContext;
  readonly metrics: RuntimeMetrics;
  readonly log: Logger;
  readonly identity: string;
  private readonly informers: Informer<KubeObject>[];
  private readonly controllers: Controller[] = [];
  private readonly byName = new Map<string, Controller>();
  private readonly elector?: LeaderElector;
  private readonly recorder: EventRecorder;
  private readonly servers: Server[] = [];
  private collectTimer?: NodeJS.Timeout;
  private leading = false;
  private stopped = false;
  /** Bound addresses of the metrics and health servers (after `start`). */
  readonly addresses: { metrics?: string; health?: string } = {};

  constructor(private readonly opts: ManagerOptions) {
    this.log = opts.logger ?? createLogger({ level: opts.logLevel ?? "info" });
    this.metrics = new RuntimeMetrics();
    // Node's own series (heap used/total by space, RSS, event-loop lag, GC): memory is part of
    // the operator's budget (docs/performance.md), and heap vs RSS tells retention from pages
    // V8 keeps after a burst.
    collectDefaultMetrics({ register: this.metrics.registry });
    this.identity = `${opts.identity ?? "spillway-operator"}-${randomBytes(3).toString("hex")}`;
    const clientOpts = {
      cluster: "management",
      rateLimit: { qps: opts.kubeApiQps ?? 200, burst: opts.kubeApiBurst ?? 400 },
      onRequest: (cluster: string, verb: string, code: number, resource: string) =>
        this.metrics.apiRequests.inc({ cluster, verb, code: String(code), resource }),
    };
    const mgmt = opts.kubeconfig
      ? KubeClient.fromKubeconfig(opts.kubeconfig, clientOpts)
      : KubeClient.fromDefault(clientOpts);
    const inf = <T extends KubeObject>(r: ResourceType, namespace?: string) =>
      new Informer<T>(mgmt, r, {
        logger: this.log,
        metrics: this.metrics,
        ...(namespace ? { namespace } : {}),
      });
    const caches: Caches = {
      runs: inf<TrainingRun & KubeObject>(SpillwayResources.TrainingRun),
      offers: inf<CapacityOffer & KubeObject>(SpillwayResources.CapacityOffer),
      providers: inf<CloudProvider & KubeObject>(SpillwayResources.CloudProvider),
      datasets: inf<DataSet & KubeObject>(SpillwayResources.DataSet),
      clusters: inf<ProvisionedCluster & KubeObject>(SpillwayResources.ProvisionedCluster),
      secrets: inf(Resources.Secret, opts.namespace),
    };
    this.informers = Object.values(caches) as Informer<KubeObject>[];
    const recorder = new EventRecorder(mgmt, {
      instance: this.identity,
      logger: this.log,
      metrics: this.metrics,
      ...(opts.eventQps
        ? { rateLimit: { qps: opts.eventQps, burst: opts.eventBurst ?? opts.eventQps * 4 } }
        : {}),
    });
    this.recorder = recorder;
    new Gauge({
      name: "spillway_events_pending",
      help: "Events posted and not yet written by the background writer.",
      registers: [this.metrics.registry],
      collect() {
        this.set(recorder.backlog);
      },
    });
    const kinds: Record<string, ResourceType> = { ...SpillwayResources };
    const events: EventSink = {
      // Posted, not awaited: the background writer sends them (runtime/events.ts).
      record: (obj, type, reason, message) => {
        const r = kinds[obj.kind ?? ""] ?? SpillwayResources.TrainingRun;
        recorder.post(r, obj, type, reason, message);
      },
    };
    const settings: OperatorSettings = {
      ...DEFAULT_SETTINGS,
      ...opts.settings,
      namespace: opts.namespace,
      origin: opts.origin ?? "spillway",
    };
    const remote = new RemoteClusters({
      origin: settings.origin,
      qps: settings.remoteQps,
      burst: settings.remoteBurst,
      now: () => Date.now(),
      log: this.log,
      metrics: this.metrics,
      onJobEvent: (runKey) => this.byName.get("trainingrun")?.enqueue(runKey),
    });
    this.ctx = {
      mgmt,
      caches,
      remote,
      responderFor: opts.responderFor ?? (() => undefined),
      provisionerFor: opts.provisionerFor ?? (() => undefined),
      events,
      metrics: this.metrics,
      log: this.log,
      now: () => new Date(),
      settings,
      enqueue: (controller, key) => this.byName.get(controller)?.enqueue(key),
    };
    const concurrency = opts.maxConcurrentReconciles ?? 8;
    this.addController(
      trainingRunController(this.ctx, {
        concurrency,
        ...(opts.stager ? { stager: opts.stager } : {}),
        ...(opts.checkpoints || opts.checkpointsFor
          ? { checkpoints: opts.checkpoints ?? opts.checkpointsFor!(this.ctx) }
          : {}),
      }),
    );
    this.addController(capacityOfferController(this.ctx, { concurrency }));
    for (const c of opts.extraControllers?.(this.ctx) ?? []) this.addController(c);
    if (opts.leaderElect) {
      this.elector = new LeaderElector({
        lock: new KubeLeaseLock(mgmt, opts.namespace, opts.leaderElectionId ?? "spillway-operator"),
        identity: this.identity,
        ...(opts.leaseDurationMs ? { leaseDurationMs: opts.leaseDurationMs } : {}),
        ...(opts.renewDeadlineMs ? { renewDeadlineMs: opts.renewDeadlineMs } : {}),
        ...(opts.retryPeriodMs ? { retryPeriodMs: opts.retryPeriodMs } : {}),
        logger: this.log,
        onStartedLeading: () => this.startLeading(),
        onStoppedLeading: () => void this.stopLeading(),
      });
    }
  }

  private addController(c: Controller): void {
    this.controllers.push(c);
    this.byName.set(c.name, c);
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** Whether every cache has listed once. */
  synced(): boolean {
    return this.informers.every((i) => i.hasSynced());
  }

  async start(): Promise<void> {
    for (const i of this.informers) i.start();
    await this.listen();
    await Promise.all(this.informers.map((i) => i.waitForSync()));
    this.log.info("caches synced", { identity: this.identity });
    if (this.elector) this.elector.start();
    else this.startLeading();
  }

  private startLeading(): void {
    if (this.leading || this.stopped) return;
    this.leading = true;
    this.metrics.isLeader.set({ lease: this.opts.leaderElectionId ?? "spillway-operator" }, 1);
    this.log.info("leading: starting controllers", { identity: this.identity });
    for (const c of this.controllers) c.start();
    const every = this.opts.collectIntervalMs ?? 60_000;
    let collecting = false;
    const collect = async () => {
      // One pass at a time, and a failing pass never takes the process down: it is logged
      // and the next pass tries again.
      if (collecting || !this.leading) return;
      collecting = true;
      try {
        this.connectKnownClusters();
        await collectOrphans(this.ctx.remote, this.ctx.caches.runs, this.log);
        await collectReservations(this.ctx);
        // Sync-worker Jobs and Secrets whose DataSet is gone without its finalizer running
        // (force-deleted, or the finalizer removed by hand).
        await collectWorkerOrphans(this.ctx);
      } catch (err) {
        this.log.error("orphan collection failed; retrying at the next pass", { err });
      } finally {
        collecting = false;
      }
    };
    this.collectTimer = setInterval(() => void collect(), every);
    this.collectTimer.unref();
    setTimeout(() => void collect(), Math.min(every, 5_000)).unref();
  }

  private async stopLeading(): Promise<void> {
    if (!this.leading) return;
    this.leading = false;
    this.metrics.isLeader.set({ lease: this.opts.leaderElectionId ?? "spillway-operator" }, 0);
    if (this.collectTimer) clearInterval(this.collectTimer);
    this.log.warn("stopped leading: stopping controllers", { identity: this.identity });
    await Promise.all(this.controllers.map((c) => c.stop(0)));
  }

  /** Connects to every cluster runs may be on, so the collector sees their Jobs. */
  private connectKnownClusters(): void {
    for (const p of this.ctx.caches.providers.list()) {
      const ref = p.spec.cluster.existing?.kubeconfigSecretRef;
      const text = ref ? readSecret(this.ctx, ref)?.[ref.key ?? "kubeconfig"] : undefined;
      if (text) this.ctx.remote.connect(`${p.metadata.name}/${EXISTING_CLUSTER}`, text);
    }
    for (const pc of this.ctx.caches.clusters.list()) {
      const ref = pc.status?.outputs?.kubeconfigSecretRef;
      const text = ref ? readSecret(this.ctx, ref)?.[ref.key ?? "kubeconfig"] : undefined;
      if (text && pc.status?.phase === "Ready")
        this.ctx.remote.connect(`${pc.spec.provider}/${pc.metadata.name}`, text);
    }
  }

  private async listen(): Promise<void> {
    const serve = async (addr: string | undefined, which: "metrics" | "health") => {
      if (addr === undefined || addr === "" || addr === "0") return;
      const { host, port } = parseAddress(addr);
      const server = createServer((req, res) => {
        const url = req.url ?? "/";
        if (which === "metrics" && url === "/debug/gc" && req.method === "POST") {
          // Only with node --expose-gc (benchmarks): V8's last-resort GC on demand (the one
          // that also gives back the pages V8 pools after a burst, as the idle memory reducer
          // does: operator/runtime/memory.ts), so heap in use can be told apart from pages
          // kept. Without the flag: 404.
          const exposed = typeof (globalThis as { gc?: unknown }).gc === "function";
          if (exposed) lastResortGc()();
          res.writeHead(exposed ? 204 : 404);
          res.end();
          return;
        }
        if (which === "metrics" && url.startsWith("/metrics")) {
          this.metrics.registry
            .metrics()
            .then((text) => {
              res.writeHead(200, { "content-type": this.metrics.registry.contentType });
              res.end(text);
            })
            .catch((err: unknown) => {
              res.writeHead(500);
              res.end(String(err));
            });
          return;
        }
        if (url.startsWith("/healthz")) {
          const ok = this.elector ? this.elector.healthy() : true;
          res.writeHead(ok ? 200 : 500, { "content-type": "text/plain" });
          res.end(ok ? "ok" : "lease not renewed");
          return;
        }
        if (url.startsWith("/readyz")) {
          const ok = this.synced() && !this.stopped;
          res.writeHead(ok ? 200 : 503, { "content-type": "text/plain" });
          res.end(ok ? "ok" : "caches not synced");
          return;
        }
        res.writeHead(404);
        res.end();
      });
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => resolve());
      });
      this.servers.push(server);
      const a = server.address() as AddressInfo;
      this.addresses[which] = `${a.address === "0.0.0.0" ? "127.0.0.1" : a.address}:${a.port}`;
    };
    await serve(this.opts.metricsAddress, "metrics");
    await serve(this.opts.healthAddress, "health");
  }

  /** Graceful shutdown: controllers drain, the lease is handed over, caches and servers close. */
  async stop(timeoutMs = 10_000): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.collectTimer) clearInterval(this.collectTimer);
    await Promise.all(this.controllers.map((c) => c.stop(timeoutMs)));
    this.leading = false;
    // Events the controllers posted are written before the client goes (bounded wait).
    await this.recorder.flush(Math.min(timeoutMs, 5_000));
    if (this.elector) {
      await this.elector.stop();
      await this.elector.release();
    }
    await Promise.all(this.informers.map((i) => i.stop()));
    await this.ctx.remote.stop();
    await Promise.all(
      this.servers.map(
        (s) =>
          new Promise<void>((resolve) => {
            s.close(() => resolve());
            s.closeAllConnections();
          }),
      ),
    );
    this.log.info("stopped", { identity: this.identity });
  }
}
