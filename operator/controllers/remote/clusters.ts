/**
 * Clients for the clusters runs are dispatched to. A cluster is named by its provider and
 * cluster name (the provider's existing cluster, or a ProvisionedCluster); its kubeconfig
 * comes from a Secret in the operator's namespace. Each cluster gets its own rate-limited
 * client (Kueue's lesson: an explicit, generous per-cluster QPS) and a Job informer for the
 * objects this management cluster created there, so run status is mirrored from watch
 * events instead of polling. Reachability is tracked from every request's outcome.
 */
import { createHash } from "node:crypto";
import type { KubeClient } from "../../runtime/client.ts";
import { KubeClient as Client } from "../../runtime/client.ts";
import { Informer } from "../../runtime/informer.ts";
import type { Logger } from "../../runtime/logging.ts";
import type { RuntimeMetrics } from "../../runtime/metrics.ts";
import { type KubeObject, Resources } from "../../runtime/resources.ts";
import { LABEL_ORIGIN } from "./manifests.ts";

export interface RemoteJob extends KubeObject {
  spec?: { completions?: number; parallelism?: number };
  status?: {
    active?: number;
    succeeded?: number;
    failed?: number;
    ready?: number;
    conditions?: Array<{ type: string; status: string; reason?: string; message?: string }>;
    startTime?: string;
    completionTime?: string;
  };
}

interface Entry {
  fingerprint: string;
  client: KubeClient;
  jobs: Informer<RemoteJob>;
  lastSuccess: number;
  lastFailure: number;
  firstFailureSinceSuccess: number;
}

export interface RemoteClustersOptions {
  origin: string;
  qps: number;
  burst: number;
  now: () => number;
  log: Logger;
  metrics?: RuntimeMetrics;
  /** Called with the run key (`namespace/name`) when a remote Job of a run changes. */
  onJobEvent: (runKey: string) => void;
}

export function clusterId(provider: string, cluster: string): string {
  return `${provider}/${cluster}`;
}

export class RemoteClusters {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly opts: RemoteClustersOptions) {}

  /**
   * The client of a cluster for the given kubeconfig. A changed kubeconfig (rotated
   * credentials, a re-provisioned cluster) replaces the client and its informer.
   */
  connect(id: string, kubeconfig: string): { client: KubeClient; jobs: Informer<RemoteJob> } {
    const fingerprint = createHash("sha256").update(kubeconfig).digest("hex");
    const existing = this.entries.get(id);
    if (existing && existing.fingerprint === fingerprint) return existing;
    if (existing) void this.disconnect(id);
    const now = this.opts.now();
    const entry: Entry = {
      fingerprint,
      lastSuccess: now,
      lastFailure: 0,
      firstFailureSinceSuccess: 0,
      client: undefined as unknown as KubeClient,
      jobs: undefined as unknown as Informer<RemoteJob>,
    };
    entry.client = Client.fromKubeconfig(kubeconfig, {
      cluster: id,
      rateLimit: { qps: this.opts.qps, burst: this.opts.burst },
      onRequest: (_cluster, verb, code) => {
        const t = this.opts.now();
        // 0 = no answer at all (connection refused, reset, timeout): the cluster is unreachable.
        if (code === 0 || code >= 500) {
          entry.lastFailure = t;
          if (entry.firstFailureSinceSuccess === 0) entry.firstFailureSinceSuccess = t;
        } else {
          entry.lastSuccess = t;
          entry.firstFailureSinceSuccess = 0;
        }
        this.opts.metrics?.apiRequests.inc({ cluster: id, verb, code: String(code) });
      },
    });
    entry.jobs = new Informer<RemoteJob>(entry.client, Resources.Job, {
      labelSelector: `${LABEL_ORIGIN}=${this.opts.origin}`,
      logger: this.opts.log,
      metrics: this.opts.metrics,
      // A resync replays every cached Job to the handlers (no API call): each wakes its run,
      // so at 60 s it cost ~167 reconciles/s at 10,000 runs. Watch events carry every change
      // and the cluster watchdog (trainingrun controller) detects lost clusters, so this is
      // only a safety net: 10 min, like the run controller's own resync.
      resyncPeriodMs: 600_000,
    });
    entry.jobs.addHandler({
      add: (j) => this.notify(j),
      update: (_o, j) => this.notify(j),
      delete: (j) => this.notify(j),
    });
    entry.jobs.start();
    this.entries.set(id, entry);
    return entry;
  }

  private notify(job: RemoteJob): void {
    const labels = job.metadata.labels ?? {};
    const ns = labels["spillway.dev/run-namespace"];
    const name = labels["spillway.dev/run-name"];
    if (ns && name) this.opts.onJobEvent(`${ns}/${name}`);
  }

  get(id: string): { client: KubeClient; jobs: Informer<RemoteJob> } | undefined {
    return this.entries.get(id);
  }

  /**
   * Milliseconds the cluster has been failing without a single success, or 0 when it
   * answers. The TrainingRun controller moves runs off a cluster failing longer than its
   * `clusterLostTimeout`.
   */
  unreachableForMs(id: string): number {
    const e = this.entries.get(id);
    if (!e || e.firstFailureSinceSuccess === 0) return 0;
    return this.opts.now() - e.firstFailureSinceSuccess;
  }

  ids(): string[] {
    return [...this.entries.keys()];
  }

  async disconnect(id: string): Promise<void> {
    const e = this.entries.get(id);
    if (!e) return;
    this.entries.delete(id);
    await e.jobs.stop();
  }

  async stop(): Promise<void> {
    await Promise.all(this.ids().map((id) => this.disconnect(id)));
  }
}
