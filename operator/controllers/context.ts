/**
 * What every Spillway controller is given: the management cluster's client and caches, the
 * remote clusters, the ports to the clouds, an event sink, the clock and the settings.
 * Built once by `operator/manager.ts`; controllers never construct their own adapters.
 */
import type {
  CapacityOffer,
  CloudProvider,
  DataSet,
  ProvisionedCluster,
  TrainingRun,
} from "../api/v1alpha1/index.ts";
import type { PrimaryResponder, Provisioner } from "../ports/index.ts";
import type { KubeClient } from "../runtime/client.ts";
import type { Informer } from "../runtime/informer.ts";
import type { Logger } from "../runtime/logging.ts";
import type { RuntimeMetrics } from "../runtime/metrics.ts";
import type { KubeObject } from "../runtime/resources.ts";
import type { RemoteClusters } from "./remote/clusters.ts";

export interface Caches {
  runs: Informer<TrainingRun & KubeObject>;
  offers: Informer<CapacityOffer & KubeObject>;
  providers: Informer<CloudProvider & KubeObject>;
  datasets: Informer<DataSet & KubeObject>;
  clusters: Informer<ProvisionedCluster & KubeObject>;
  /** Secrets of the operator's namespace only (credentials, kubeconfigs). */
  secrets: Informer<KubeObject & { data?: Record<string, string>; stringData?: Record<string, string> }>;
}

export type EventType = "Normal" | "Warning";

/** Records Kubernetes Events on objects. Messages never contain secrets. */
export interface EventSink {
  record(obj: KubeObject, type: EventType, reason: string, message: string): void;
}

export interface OperatorSettings {
  /** Namespace of the operator: Secrets, Leases, sync worker Jobs. */
  namespace: string;
  /** Name of this management cluster, stamped on every remote object (origin label). */
  origin: string;
  /** How long a remote cluster may fail to answer before its runs move. */
  clusterLostTimeoutMs: number;
  /** How often a running run's remote Job is looked at when no watch event came. */
  remotePollMs: number;
  /** CapacityOffers older than this are deleted (the ledger's retention). */
  offerRetentionMs: number;
  /** Re-offer backoff for runs waiting for the primary. */
  reofferBaseMs: number;
  reofferMaxMs: number;
  /**
   * Failback (`placement.failback: WhenPrimaryAccepts`): how long after the primary last said
   * no a run on an alternative is offered to it again, doubling after each decline up to the max.
   */
  failbackIntervalMs: number;
  failbackMaxIntervalMs: number;
  /** Requests per second and burst for each remote cluster's client. */
  remoteQps: number;
  remoteBurst: number;
}

export const DEFAULT_SETTINGS: Omit<OperatorSettings, "namespace" | "origin"> = {
  clusterLostTimeoutMs: 60_000,
  remotePollMs: 10_000,
  offerRetentionMs: 400 * 24 * 3_600_000,
  reofferBaseMs: 30_000,
  reofferMaxMs: 600_000,
  failbackIntervalMs: 15 * 60_000,
  failbackMaxIntervalMs: 60 * 60_000,
  remoteQps: 50,
  remoteBurst: 100,
};

export interface OperatorContext {
  mgmt: KubeClient;
  caches: Caches;
  remote: RemoteClusters;
  /** The responder for a primary provider (by its type), or undefined when none answers for it. */
  responderFor(provider: CloudProvider): PrimaryResponder | undefined;
  /** The provisioner for an alternative with `cluster.provision`. */
  provisionerFor(provider: CloudProvider): Provisioner | undefined;
  events: EventSink;
  metrics: RuntimeMetrics;
  log: Logger;
  now(): Date;
  settings: OperatorSettings;
  /** Asks a controller to look at a key again (e.g. the TrainingRun controller after an offer answer). */
  enqueue(controller: "trainingrun" | "capacityoffer" | "provisionedcluster" | "dataset", key: string): void;
}

/** Decodes a Secret's data (base64) into strings. */
export function secretData(secret: {
  data?: Record<string, string>;
  stringData?: Record<string, string>;
}): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(secret.data ?? {})) out[k] = Buffer.from(v, "base64").toString("utf8");
  for (const [k, v] of Object.entries(secret.stringData ?? {})) out[k] = v;
  return out;
}

/** Reads a Secret in the operator's namespace (through the cache), or undefined. */
export function readSecret(
  ctx: OperatorContext,
  ref: { name: string; namespace?: string } | undefined,
): Record<string, string> | undefined {
  if (!ref) return undefined;
  // Credentials are only ever read from the operator's namespace: a reference to another
  // namespace is refused, so a CloudProvider cannot be used to exfiltrate a team's Secrets.
  if (ref.namespace && ref.namespace !== ctx.settings.namespace) return undefined;
  const s = ctx.caches.secrets.get(`${ctx.settings.namespace}/${ref.name}`);
  return s ? secretData(s) : undefined;
}

/**
 * How the data plane and the checkpoint planner find providers and their store credentials:
 * the operator's caches. A provider naming no Secret gets `{}` (ambient credentials); a named
 * Secret that is missing gives undefined, so the caller waits for it.
 */
export function storeResolver(ctx: OperatorContext): {
  providers(): CloudProvider[];
  provider(name: string): CloudProvider | undefined;
  secret(provider: CloudProvider): Record<string, string> | undefined;
} {
  return {
    providers: () => ctx.caches.providers.list(),
    provider: (name) => ctx.caches.providers.get(name),
    secret: (provider) => {
      const ref = provider.spec.storage?.credentialsSecretRef;
      return ref ? readSecret(ctx, ref) : {};
    },
  };
}
