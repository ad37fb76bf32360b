/**
 * The DataSet controller: keeps a dataset's replicas in sync with its source and reports them.
 *
 * - **Replicas** are the providers in `spec.replicas`, plus the provider of every unfinished
 *   run placed on another cloud with this dataset (SPEC: "the operator adds the provider a run
 *   is placed on") — derived from the TrainingRun cache, so nothing is written into the spec
 *   and a restarted operator finds them again.
 * - **Syncs** run in the background in the shared `DatasetSyncs` registry (also the
 *   TrainingRun controller's `DataStager`), never twice at once for one replica. A reconcile
 *   starts what is due and writes status; a finished sync enqueues the DataSet again.
 *   `Continuous` resyncs every `syncPolicy.interval`; `OnDemand` syncs the spec's replicas once
 *   and afterwards only when a run stages. A failed sync is retried with backoff.
 * - **Status**: `version` (digest, objects, bytes) of the source as the last complete sync
 *   saw it; per replica the phase, the version it holds, objects and bytes synced, last sync
 *   time and a message; `replicasSynced`. Conditions (kstatus): `Ready` (every replica holds
 *   the current version), `Reconciling` (a sync is running), `Stalled` (a replica cannot be
 *   synced without a configuration change: missing provider, credentials, bucket).
 * - Events: `Synced` when a replica reaches a new version, `SyncFailed` (Warning) on failure.
 *   Messages come from the data plane, which never includes credentials.
 *
 * - **Sync workers**: a replica whose source is above `syncPolicy.workerThresholdBytes` is
 *   synced by an Indexed Job of `spillway sync --shard` workers on a cluster near the data
 *   (`workers.ts`, bound to the registry as its `ShardedSyncRunner`). Such a DataSet carries the
 *   `spillway.dev/sync-workers` finalizer: on deletion its worker Jobs and Secrets are deleted
 *   on every cluster first. The `WorkersFailed` condition reports a failed worker Job.
 */
import type { DataSet, DataSetStatus, TrainingRun } from "../../api/v1alpha1/index.ts";
import { type DatasetSyncs, datasetKeyOf, type ReplicaSync } from "../../dataplane/stager.ts";
import { isNotFound } from "../../runtime/client.ts";
import { setCondition, timestamp } from "../../runtime/conditions.ts";
import { Controller, type ReconcileContext, type ReconcileResult } from "../../runtime/controller.ts";
import { safeMessage } from "../../runtime/events.ts";
import { type KubeObject, SpillwayResources } from "../../runtime/resources.ts";
import { parseDuration } from "../../util/duration.ts";
import { type OperatorContext, readSecret } from "../context.ts";
import { type SyncWorkerOptions, WORKERS_FINALIZER } from "./worker-objects.ts";
import { cleanupDataSetWorkers, SyncWorkers } from "./workers.ts";

type DS = DataSet & KubeObject;
type Status = DataSetStatus;
type ReplicaStatus = NonNullable<Status["replicas"]>[number];

const FINISHED_RUN_PHASES = new Set(["Succeeded", "Failed"]);

export interface DataSetControllerOptions {
  /** How often a running sync's progress is written to status. Default 2 s. */
  progressIntervalMs?: number;
  concurrency?: number;
  /**
   * Sync workers for DataSets above their `workerThresholdBytes` (image, namespace, limits);
   * `false` keeps every sync in the operator. Default: enabled with the defaults of
   * `SyncWorkerOptions` (image `$SPILLWAY_IMAGE`, else the chart's).
   */
  workers?: SyncWorkerOptions | false;
}

/** Binds the shared sync registry to the operator's caches and builds the controller. */
export function dataSetController(
  ctx: OperatorContext,
  syncs: DatasetSyncs,
  opts: DataSetControllerOptions = {},
): Controller {
  const workers = opts.workers === false ? undefined : new SyncWorkers(ctx, opts.workers ?? {});
  syncs.bindRunner(workers);
  const controller = new Controller({
    name: "dataset",
    reconcile: (key, rc) => reconcileDataSet(ctx, syncs, opts, workers, key, rc),
    concurrency: opts.concurrency ?? 2,
    backoff: { baseMs: 2_000, maxMs: 300_000, jitter: 0.2 },
    logContext: (key) => ({ dataset: key }),
    logger: ctx.log,
    metrics: ctx.metrics,
  });
  syncs.bind(
    {
      provider: (name) => ctx.caches.providers.get(name),
      secret: (provider) => {
        const ref = provider.spec.storage?.credentialsSecretRef;
        return ref ? readSecret(ctx, ref) : {};
      },
    },
    (key) => controller.enqueue(key),
  );
  controller.watch(ctx.caches.datasets);
  // A run placed elsewhere adds its provider as a replica.
  controller.watch(ctx.caches.runs, (run: TrainingRun & KubeObject) =>
    run.spec.data ? [`${run.metadata.namespace}/${run.spec.data.dataset}`] : [],
  );
  // A provider's store or its Secret changing can unblock (or break) its datasets.
  const byProvider = (name: string) =>
    ctx.caches.datasets
      .list()
      .filter((d) => d.spec.source.provider === name || d.spec.replicas?.some((r) => r.provider === name))
      .map((d) => datasetKeyOf(d));
  controller.watch(ctx.caches.providers, (p) => byProvider(p.metadata.name ?? ""));
  controller.watch(ctx.caches.secrets, (s) =>
    ctx.caches.providers
      .list()
      .filter((p) => p.spec.storage?.credentialsSecretRef?.name === s.metadata.name)
      .flatMap((p) => byProvider(p.metadata.name ?? "")),
  );
  return controller;
}

/** The replicas to keep: listed ones, then providers of live runs placed elsewhere; never the source. */
export function replicaProviders(
  ds: DataSet,
  runs: readonly TrainingRun[],
): { provider: string; listed: boolean }[] {
  const out = new Map<string, boolean>();
  for (const r of ds.spec.replicas ?? []) out.set(r.provider, true);
  for (const run of runs) {
    if (run.spec.data?.dataset !== ds.metadata?.name || run.metadata?.namespace !== ds.metadata?.namespace)
      continue;
    if (FINISHED_RUN_PHASES.has(run.status?.phase ?? "")) continue;
    const p = run.status?.placement?.provider;
    if (p && !out.has(p)) out.set(p, false);
  }
  out.delete(ds.spec.source.provider);
  return [...out.entries()].map(([provider, listed]) => ({ provider, listed }));
}

async function reconcileDataSet(
  ctx: OperatorContext,
  syncs: DatasetSyncs,
  opts: DataSetControllerOptions,
  workers: SyncWorkers | undefined,
  key: string,
  rc: ReconcileContext,
): Promise<ReconcileResult | undefined> {
  const ds = ctx.caches.datasets.get(key) as DS | undefined;
  if (!ds || ds.metadata.deletionTimestamp) {
    // Replicas are data the user owns: deleting the DataSet stops syncing, it deletes nothing
    // but the sync workers' Jobs and Secrets.
    await syncs.cancel(key);
    reported.delete(key);
    if (ds) await finalize(ctx, ds, workers, rc);
    return undefined;
  }
  const now = ctx.now().getTime();
  const policy = ds.spec.syncPolicy ?? {};
  const continuous = (policy.mode ?? "Continuous") === "Continuous";
  const intervalMs = parseDuration(policy.interval ?? "10m");
  const replicas = replicaProviders(ds, ctx.caches.runs.list());

  const states: ReplicaSync[] = [];
  let nextLookMs: number | undefined;
  const soonest = (ms: number) => {
    nextLookMs = nextLookMs === undefined ? ms : Math.min(nextLookMs, ms);
  };
  for (const { provider, listed } of replicas) {
    const before = syncs.state(key, provider);
    // OnDemand: the spec's replicas are synced once; runs stage the rest through the stager.
    const wanted = continuous || (listed && before === undefined);
    const due =
      !before ||
      (continuous &&
        !before.running &&
        before.finishedAt !== undefined &&
        now - before.finishedAt >= intervalMs);
    const s = wanted
      ? syncs.ensure(
          ds,
          provider,
          // A periodic resync of a synced replica also lists the destination (verify "list"):
          // a replica that lost objects behind our records is repaired within one interval.
          due && before !== undefined && before.phase === "Synced" ? { force: true, verify: "list" } : {},
        )
      : before;
    if (!s) {
      states.push({
        datasetKey: key,
        provider,
        phase: "Pending",
        failures: 0,
        terminal: false,
        message: "waiting for a run to stage it",
        running: false,
      });
      continue;
    }
    states.push(s);
    if (s.running) soonest(opts.progressIntervalMs ?? 2_000);
    else if (s.phase === "Failed") soonest(Math.max(1_000, syncs.nextRetryIn(s)));
    else if (s.phase === "Synced" && continuous)
      soonest(Math.max(1_000, (s.finishedAt ?? now) + intervalMs - now));
  }

  const updated = await writeStatus(ctx, ds, (status, obj) => {
    const newest = states
      .filter((s) => s.phase === "Synced" && s.version && s.syncedAt !== undefined)
      .sort((a, b) => (b.syncedAt ?? 0) - (a.syncedAt ?? 0))[0];
    if (newest?.version)
      status.version = {
        digest: newest.version,
        objects: newest.objects ?? 0,
        bytes: newest.bytes ?? 0,
        computedAt:
          status.version?.digest === newest.version && status.version.computedAt
            ? status.version.computedAt
            : timestamp(newest.syncedAt ?? now),
      };
    const current = status.version?.digest;
    status.replicas = states.map((s) =>
      replicaStatus(
        s,
        status.replicas?.find((r) => r.provider === s.provider),
      ),
    );
    status.replicasSynced = states.filter((s) => s.phase === "Synced" && s.version === current).length;
    const running = states.filter((s) => s.running);
    const stalled = states.filter((s) => s.phase === "Failed" && s.terminal);
    const failing = states.filter((s) => s.phase === "Failed" && !s.terminal);
    status.conditions ??= [];
    const conditions = status.conditions;
    const gen = obj.metadata.generation;
    const set = (type: string, st: "True" | "False", reason: string, message: string) =>
      setCondition(
        conditions,
        { type, status: st, reason, message: safeMessage(message), observedGeneration: gen },
        now,
      );
    const allSynced = status.replicasSynced === states.length;
    if (states.length === 0) set("Ready", "True", "NoReplicas", "no replicas to keep in sync");
    else if (allSynced) set("Ready", "True", "Synced", `${states.length} replica(s) hold version ${current}`);
    else
      set(
        "Ready",
        "False",
        stalled.length ? "SyncStalled" : failing.length ? "SyncFailing" : "Syncing",
        `${status.replicasSynced}/${states.length} replicas hold the current version`,
      );
    if (running.length)
      set("Reconciling", "True", "Syncing", running.map((s) => `${s.provider}: ${s.message}`).join("; "));
    else set("Reconciling", "False", "Idle", "");
    // Only DataSets that ever used sync workers carry this condition.
    const byWorkers = states.filter((s) => s.via === "workers" && !s.running);
    const jobFailed = byWorkers.filter((s) => s.phase === "Failed" && s.workerFailure === "job");
    if (jobFailed.length)
      set(
        "WorkersFailed",
        "True",
        "JobFailed",
        jobFailed.map((s) => `${s.provider}: ${s.message}`).join("; "),
      );
    else if (byWorkers.length || conditions.some((c) => c.type === "WorkersFailed"))
      set(
        "WorkersFailed",
        "False",
        "NoJobFailed",
        byWorkers.map((s) => `${s.provider}: ${s.message}`).join("; "),
      );
    if (stalled.length)
      set(
        "Stalled",
        "True",
        "ConfigurationError",
        stalled.map((s) => `${s.provider}: ${s.message}`).join("; "),
      );
    else set("Stalled", "False", "Healthy", "");
  });

  // Events for finished syncs, once each (a replica's finish time identifies its last sync).
  const seen = reported.get(key) ?? new Map<string, number>();
  reported.set(key, seen);
  for (const s of states) {
    if (s.running || s.finishedAt === undefined || seen.get(s.provider) === s.finishedAt) continue;
    seen.set(s.provider, s.finishedAt);
    if (s.phase === "Synced")
      ctx.events.record(
        updated,
        "Normal",
        "Synced",
        safeMessage(`replica ${s.provider} holds ${s.version}: ${s.message}`),
      );
    else
      ctx.events.record(updated, "Warning", "SyncFailed", safeMessage(`replica ${s.provider}: ${s.message}`));
  }
  rc.log.debug("dataset reconciled", { replicas: states.length, nextLookMs });
  return nextLookMs === undefined ? undefined : { requeueAfter: nextLookMs };
}

/**
 * A deleted DataSet with the sync-workers finalizer: its worker Jobs and Secrets are deleted on
 * every cluster, then the finalizer goes. A cluster that does not answer keeps the finalizer
 * (the reconcile is retried with backoff) until it has been lost for `clusterLostTimeout`;
 * then its leftovers are the orphan collector's (`collectWorkerOrphans`).
 */
async function finalize(
  ctx: OperatorContext,
  ds: DS,
  workers: SyncWorkers | undefined,
  rc: ReconcileContext,
): Promise<void> {
  if (!(ds.metadata.finalizers ?? []).includes(WORKERS_FINALIZER)) return;
  const { deleted, failed } = await cleanupDataSetWorkers(ctx, ds, workers?.namespace);
  const blocking = failed.filter(
    (f) => ctx.remote.unreachableForMs(f.cluster) < ctx.settings.clusterLostTimeoutMs,
  );
  if (blocking.length)
    throw new Error(
      `could not delete the sync workers of ${ds.metadata.name} on ${blocking.map((f) => f.cluster).join(", ")}: ${
        blocking[0]!.error instanceof Error ? blocking[0]!.error.message : String(blocking[0]!.error)
      }`,
    );
  try {
    await ctx.mgmt.patch(SpillwayResources.DataSet, ds.metadata.name!, ds.metadata.namespace, {
      metadata: {
        finalizers: (ds.metadata.finalizers ?? []).filter((f) => f !== WORKERS_FINALIZER),
        resourceVersion: ds.metadata.resourceVersion,
      },
    });
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  rc.log.info("sync workers removed; finalizer released", { deleted, leftToCollector: failed.length });
}

/** Per DataSet key and replica: the finish time of the last sync announced by an Event. */
const reported = new Map<string, Map<string, number>>();

function replicaStatus(s: ReplicaSync, previous: ReplicaStatus | undefined): ReplicaStatus {
  const p = s.progress;
  const out: ReplicaStatus = {
    provider: s.provider,
    phase: s.running ? "Syncing" : s.phase,
    message: safeMessage(s.message),
  };
  // A replica keeps reporting the version it holds while the next sync runs or after one failed.
  const version = s.version ?? previous?.version;
  if (version) out.version = version;
  if (p) {
    out.objectsSynced = p.objectsCopied + p.objectsSkipped;
    out.bytesSynced = p.bytesCopied;
  } else if (s.objects !== undefined) {
    out.objectsSynced = s.objects;
    out.bytesSynced = s.bytes ?? 0;
  }
  const last = s.syncedAt !== undefined ? timestamp(s.syncedAt) : previous?.lastSyncTime;
  if (last) out.lastSyncTime = last;
  return out;
}

async function writeStatus(ctx: OperatorContext, ds: DS, mutate: (s: Status, obj: DS) => void): Promise<DS> {
  const next = structuredClone(ds);
  next.status ??= {};
  mutate(next.status, next);
  next.status.observedGeneration = ds.metadata.generation;
  if (JSON.stringify(next.status) === JSON.stringify(ds.status ?? {})) return ds;
  return ctx.mgmt.updateStatus(SpillwayResources.DataSet, next);
}
