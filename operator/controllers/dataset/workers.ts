/**
 * Sync workers: a replica whose source is above `syncPolicy.workerThresholdBytes` is synced by
 * an Indexed `batch/v1` Job of `spillway sync SRC DST --shard $(JOB_COMPLETION_INDEX)/N`
 * workers on a cluster near the data, instead of in the operator (docs/dataset-workers.md).
 *
 * - **Where**: the source provider's own cluster (`spec.cluster.existing`): reads stay inside
 *   the source's cloud and region, and for the Azure primary that cluster always exists. When
 *   it has none or does not answer, the replica provider's existing cluster; when neither is
 *   there, the runner declines and the sync runs in the operator. Provisioned clusters are
 *   not used: they belong to runs and are destroyed when idle.
 * - **What** (rendered in `worker-objects.ts`): in the Spillway-owned namespace
 *   `spillway-sync` (a setting) a Secret holding only the two stores' credentials as the SDKs'
 *   environment variables, and the Job reading it through `envFrom`: credentials are never
 *   in args, status, events or logs. Names are a
 *   digest of the DataSet's uid and the replica, so a restarted operator finds (adopts) the Job
 *   it created instead of starting a second one. Pods run restricted (non-root, no
 *   capabilities, read-only root, RuntimeDefault seccomp, no service-account token).
 * - **Progress**: indexes completed (`status.completedIndexes`); each finished worker has
 *   committed its shard manifest at the destination, which is read for objects and bytes.
 * - **Result**: when every index succeeded, the shard manifests are merged
 *   (`mergeShardManifests`) into the replica's manifest, and the merged manifest is checked
 *   against a fresh listing of the source (keys, sizes, etags or sha256), both read as streams
 *   and merged in key order, so the operator holds no per-object state: the replica is
 *   Synced only when its version is the source's. A failed Job gives the failed indexes and
 *   the worker's own last line. Job and Secret are then deleted (uid preconditions).
 * - **Deletion**: the DataSet carries the `spillway.dev/sync-workers` finalizer from its first
 *   worker Job on; the controller deletes every worker Job and Secret of the DataSet before
 *   removing it. `collectWorkerOrphans` removes those of DataSets that are gone anyway.
 */
import type { CloudProvider, DataSet } from "../../api/v1alpha1/index.ts";
import { locationForProvider } from "../../dataplane/credentials.ts";
import {
  type ManifestEntry,
  META_PREFIX,
  manifestKey,
  mergeShardManifests,
} from "../../dataplane/manifest.ts";
import {
  DEFAULT_STREAM_LIMITS,
  KeyCursor,
  ManifestReader,
  manifestTotals,
} from "../../dataplane/manifest-stream.ts";
import type { ShardedSyncOutcome, ShardedSyncRequest, ShardedSyncRunner } from "../../dataplane/stager.ts";
import { normaliseKey, type ObjectInfo, type ObjectStore } from "../../dataplane/store.ts";
import { isAlreadyExists, isConflict, isNotFound, type KubeClient } from "../../runtime/client.ts";
import { safeMessage } from "../../runtime/events.ts";
import type { Informer } from "../../runtime/informer.ts";
import { type KubeObject, Resources, SpillwayResources } from "../../runtime/resources.ts";
import { type OperatorContext, readSecret } from "../context.ts";
import { clusterId, type RemoteJob } from "../remote/clusters.ts";
import { LABEL_MANAGED_BY, MANAGED_BY, spillwayImage } from "../remote/manifests.ts";
import { jobState } from "../trainingrun/remote.ts";
import { EXISTING_CLUSTER } from "../trainingrun/targets.ts";
import {
  ANNOTATION_SYNC_SPEC,
  COMPONENT_SYNC_WORKER,
  DEFAULT_WORKER_NAMESPACE,
  EXIT_BAD_INPUT,
  LABEL_COMPONENT,
  LABEL_DATASET_UID,
  LABEL_REPLICA,
  parseIndexes,
  renderWorkerJob,
  renderWorkerSecret,
  type SyncWorkerOptions,
  storeUri,
  WORKERS_FINALIZER,
  workerEnv,
} from "./worker-objects.ts";

/** Where worker Jobs of a replica may run, best first (see the file comment). */
export function workerClusterCandidates(
  ctx: OperatorContext,
  ds: DataSet,
  provider: string,
): { id: string; provider: string; kubeconfig: string }[] {
  const out: { id: string; provider: string; kubeconfig: string }[] = [];
  for (const name of [ds.spec.source.provider, provider]) {
    const p = ctx.caches.providers.get(name);
    const ref = p?.spec.cluster.existing?.kubeconfigSecretRef;
    const kubeconfig = ref ? readSecret(ctx, ref)?.[ref.key ?? "kubeconfig"] : undefined;
    if (kubeconfig && !out.some((c) => c.provider === name))
      out.push({ id: clusterId(name, EXISTING_CLUSTER), provider: name, kubeconfig });
  }
  return out;
}

type Remote = { client: KubeClient; jobs: Informer<RemoteJob> };

/** Runs large syncs as sync-worker Jobs (the DataSet controller binds it to the sync registry). */
export class SyncWorkers implements ShardedSyncRunner {
  private readonly waiters = new Map<string, Set<() => void>>();
  private readonly watched = new WeakSet<Informer<RemoteJob>>();
  private readonly namespacesSeen = new WeakMap<KubeClient, Set<string>>();
  /** Uids of worker Jobs this process deleted (bounded: only the latest are kept). */
  private readonly deleted = new Set<string>();

  constructor(
    private readonly ctx: OperatorContext,
    private readonly opts: SyncWorkerOptions = {},
  ) {}

  get namespace(): string {
    return this.opts.namespace ?? DEFAULT_WORKER_NAMESPACE;
  }

  get image(): string {
    return this.opts.image ?? spillwayImage();
  }

  async run(req: ShardedSyncRequest): Promise<ShardedSyncOutcome> {
    const { dataset: ds, provider, signal } = req;
    if (this.deleting(ds)) return { kind: "done", complete: false, message: "the DataSet is being deleted" };
    const cluster = workerClusterCandidates(this.ctx, ds, provider).find(
      (c) => this.ctx.remote.unreachableForMs(c.id) === 0,
    );
    if (!cluster) return { kind: "declined", reason: "no reachable cluster near the data for sync workers" };
    // A destination that cannot be written (missing bucket, refused credentials) fails here,
    // as a configuration error, instead of in every worker of a Job.
    await req.dst.check(signal, "write");
    const ends = [ds.spec.source.provider, provider].map((name) => {
      const p = this.ctx.caches.providers.get(name)!;
      const ref = p.spec.storage?.credentialsSecretRef;
      return { provider: p, secret: (ref ? readSecret(this.ctx, ref) : {}) ?? {} };
    });
    const env = workerEnv(ends);
    if ("conflict" in env) return { kind: "declined", reason: env.conflict };
    const loc = (p: CloudProvider, prefix: string) => locationForProvider(p, {}, prefix).location;
    const src = storeUri(loc(ends[0]!.provider, ds.spec.source.prefix ?? ""));
    const listed = ds.spec.replicas?.find((r) => r.provider === provider);
    const dst = storeUri(loc(ends[1]!.provider, listed?.prefix ?? ds.spec.source.prefix ?? ""));
    const workers = ds.spec.syncPolicy?.workers ?? 4;

    await this.ensureFinalizer(ds);
    const remote = this.ctx.remote.connect(cluster.id, cluster.kubeconfig);
    this.watch(remote.jobs);
    const secret = renderWorkerSecret(ds, provider, this.ctx.settings.origin, this.namespace, env.env);
    const job = renderWorkerJob({
      ds,
      provider,
      origin: this.ctx.settings.origin,
      namespace: this.namespace,
      image: this.image,
      workers,
      src,
      dst,
      options: this.opts,
    });
    const where = `${workers} sync workers on ${cluster.id}`;
    req.report(`starting ${where}`);
    await this.ensureNamespace(remote.client);
    if (this.deleting(ds)) return { kind: "done", complete: false, message: "the DataSet is being deleted" };
    await this.putSecret(remote.client, secret);
    const name = job.metadata.name!;
    const key = `${this.namespace}/${name}`;
    const done = new Map<number, { objects: number; bytes: number }>();
    // A Job we deleted (or that is being deleted) is not this sync's, even while a cache still shows it.
    const going = (j: RemoteJob) =>
      j.metadata.deletionTimestamp !== undefined || this.deleted.has(j.metadata.uid ?? "");
    for (;;) {
      if (signal.aborted)
        // The Job keeps running: a restarted operator adopts it; a deleted DataSet's
        // finalizer removes it.
        return { kind: "done", complete: false, message: "sync interrupted" };
      let current = remote.jobs.get(key);
      if (!current || going(current))
        current = await remote.client.tryGet<RemoteJob>(Resources.Job, name, this.namespace);
      if (current && current.metadata.labels?.[LABEL_DATASET_UID] !== ds.metadata?.uid)
        return { kind: "declined", reason: `Job ${key} on ${cluster.id} is not this DataSet's` };
      if (
        current &&
        !going(current) &&
        current.metadata.annotations?.[ANNOTATION_SYNC_SPEC] !==
          job.metadata.annotations?.[ANNOTATION_SYNC_SPEC]
      ) {
        // Left from a sync with other settings (workers, prefixes, image): replaced.
        await deleteOwned(remote.client, Resources.Job, current);
        this.deleted.add(current.metadata.uid ?? "");
        current = undefined;
      }
      if (!current) {
        // Never a new Job for a DataSet being deleted (its finalizer may have cleaned up already).
        if (this.deleting(ds))
          return { kind: "done", complete: false, message: "the DataSet is being deleted" };
        try {
          current = await remote.client.create<RemoteJob>(Resources.Job, job);
        } catch (err) {
          if (!isAlreadyExists(err)) throw err; // the previous one is still going away
        }
      }
      if (current && !going(current)) {
        const { state } = jobState(current);
        const count = current.spec?.completions ?? workers;
        if (state === "Succeeded" || state === "Failed") {
          const outcome =
            state === "Succeeded"
              ? await this.finish(req, count, where)
              : await this.failure(remote.client, current, count, where);
          try {
            await this.cleanup(remote.client, ds, provider);
          } catch (err) {
            // The result stands; a leftover is removed by the next sync, the finalizer or its TTL.
            this.ctx.log.warn("could not delete a finished sync-worker Job", {
              cluster: cluster.id,
              job: key,
              err,
            });
          }
          return outcome;
        }
        await this.progress(req, current, count, done, where);
      }
      await this.wait(key, signal);
    }
  }

  /** Whether the DataSet (as given, or as the cache knows it now) is being deleted. */
  private deleting(ds: DataSet): boolean {
    const live = this.ctx.caches.datasets.getByUid(ds.metadata?.uid ?? "");
    return ds.metadata?.deletionTimestamp !== undefined || live?.metadata.deletionTimestamp !== undefined;
  }

  /**
   * The replica is synced in the operator now: worker Jobs and Secrets left for it (by a
   * previous operator, or with other settings) are deleted. Only DataSets that ever had
   * workers (the finalizer) are looked for; a failure is logged, the finalizer still holds.
   */
  async release(ds: DataSet, provider: string): Promise<void> {
    if (!(ds.metadata?.finalizers ?? []).includes(WORKERS_FINALIZER)) return;
    for (const c of workerClusterCandidates(this.ctx, ds, provider)) {
      try {
        const remote = this.ctx.remote.connect(c.id, c.kubeconfig);
        await this.cleanup(remote.client, ds, provider);
      } catch (err) {
        this.ctx.log.warn("could not delete leftover sync workers", { cluster: c.id, err });
      }
    }
  }

  /** Reads the shard manifests of newly completed indexes for objects and bytes synced. */
  private async progress(
    req: ShardedSyncRequest,
    job: RemoteJob,
    count: number,
    done: Map<number, { objects: number; bytes: number }>,
    where: string,
  ): Promise<void> {
    const status = job.status as (RemoteJob["status"] & { completedIndexes?: string }) | undefined;
    for (const index of parseIndexes(status?.completedIndexes)) {
      if (done.has(index) || index >= count) continue;
      // Summed as a stream: a shard of millions of objects is never held in the operator.
      const t = await manifestTotals(req.dst, manifestKey({ index, count }), req.signal).catch(
        () => undefined,
      );
      if (!t) continue;
      done.set(index, { objects: t.objects, bytes: t.bytes });
    }
    let objects = 0;
    let bytes = 0;
    for (const d of done.values()) {
      objects += d.objects;
      bytes += d.bytes;
    }
    req.report(
      `${done.size}/${count} shards done, ${status?.active ?? 0} running${status?.failed ? `, ${status.failed} pod failures` : ""} (${where})`,
      { objects, bytes, listingDone: true },
    );
  }

  /** Every index succeeded: merge the shard manifests, then check the result against the source. */
  private async finish(req: ShardedSyncRequest, count: number, where: string): Promise<ShardedSyncOutcome> {
    req.report(`merging ${count} shard manifests (${where})`);
    const version = await mergeShardManifests(req.dst, count, req.signal);
    const checked = await compareWithSource(req.src, req.dst, req.signal);
    if ("unreadable" in checked)
      return {
        kind: "done",
        complete: false,
        failure: "replica",
        message: `the merged manifest could not be read back${checked.unreadable ? `: ${checked.unreadable}` : ""}`,
      };
    if ("mismatch" in checked)
      return {
        kind: "done",
        complete: false,
        failure: "replica",
        message: `the workers finished but the replica does not hold the source's current version: ${checked.mismatch}`,
      };
    return {
      kind: "done",
      complete: true,
      version,
      objects: checked.objects,
      bytes: checked.bytes,
      message: `${checked.objects} objects synced by ${where}`,
    };
  }

  private async failure(
    client: KubeClient,
    job: RemoteJob,
    count: number,
    where: string,
  ): Promise<ShardedSyncOutcome> {
    const status = job.status as
      | (RemoteJob["status"] & { failedIndexes?: string; completedIndexes?: string })
      | undefined;
    const failed = parseIndexes(status?.failedIndexes);
    const completed = new Set(parseIndexes(status?.completedIndexes));
    const missing = failed.length ? failed : [...Array(count).keys()].filter((i) => !completed.has(i));
    const { message } = jobState(job);
    const worker = await workerMessage(client, job).catch(() => undefined);
    return {
      kind: "done",
      complete: false,
      terminal: worker?.exitCode === EXIT_BAD_INPUT,
      failure: "job",
      message: safeMessage(
        `sync workers failed (${where}): index${missing.length === 1 ? "" : "es"} ${missing.join(",")} of ${count} failed` +
          `${message ? ` (${message})` : ""}${worker?.line ? `: ${worker.line}` : ""}`,
      ),
    };
  }

  /** Deletes this replica's worker Job and Secret (uid preconditions). */
  private async cleanup(client: KubeClient, ds: DataSet, provider: string): Promise<void> {
    const uids = await deleteWorkerObjects(
      client,
      this.namespace,
      `${LABEL_DATASET_UID}=${ds.metadata?.uid ?? ""},${LABEL_REPLICA}=${provider}`,
    );
    for (const uid of uids) this.deleted.add(uid);
    while (this.deleted.size > 1_000) this.deleted.delete(this.deleted.values().next().value ?? "");
  }

  /** Adds the finalizer before the first Job exists (retried on a conflicting write). */
  private async ensureFinalizer(ds: DataSet): Promise<void> {
    const name = ds.metadata?.name ?? "";
    const namespace = ds.metadata?.namespace;
    for (let attempt = 0; ; attempt++) {
      const current =
        attempt === 0
          ? (this.ctx.caches.datasets.get(`${namespace}/${name}`) ?? (ds as DataSet & KubeObject))
          : await this.ctx.mgmt.get<DataSet & KubeObject>(SpillwayResources.DataSet, name, namespace);
      if ((current.metadata.finalizers ?? []).includes(WORKERS_FINALIZER)) return;
      try {
        await this.ctx.mgmt.patch(SpillwayResources.DataSet, name, namespace, {
          metadata: {
            finalizers: [...(current.metadata.finalizers ?? []), WORKERS_FINALIZER],
            resourceVersion: current.metadata.resourceVersion,
          },
        });
        return;
      } catch (err) {
        if (!isConflict(err) || attempt >= 4) throw err;
      }
    }
  }

  private async ensureNamespace(client: KubeClient): Promise<void> {
    let seen = this.namespacesSeen.get(client);
    if (!seen) {
      seen = new Set();
      this.namespacesSeen.set(client, seen);
    }
    if (seen.has(this.namespace)) return;
    try {
      await client.create(Resources.Namespace, {
        apiVersion: "v1",
        kind: "Namespace",
        metadata: {
          name: this.namespace,
          labels: {
            [LABEL_MANAGED_BY]: MANAGED_BY,
            // The workers meet the restricted Pod Security Standard; the namespace enforces it.
            "pod-security.kubernetes.io/enforce": "restricted",
          },
        },
      });
    } catch (err) {
      if (!isAlreadyExists(err)) throw err;
    }
    seen.add(this.namespace);
  }

  /** Creates the Secret, or replaces its data (rotated credentials reach the next workers). */
  private async putSecret(client: KubeClient, secret: KubeObject): Promise<void> {
    const { name, namespace } = secret.metadata;
    const existing = await client.tryGet(Resources.Secret, name!, namespace);
    if (!existing) {
      try {
        await client.create(Resources.Secret, secret);
        return;
      } catch (err) {
        if (!isAlreadyExists(err)) throw err;
      }
    }
    const latest = existing ?? (await client.get(Resources.Secret, name!, namespace));
    await client.update(Resources.Secret, {
      ...secret,
      metadata: { ...secret.metadata, resourceVersion: latest.metadata.resourceVersion },
      data: {},
    } as KubeObject);
  }

  /** Wakes the waiters of a Job on its watch events. */
  private watch(jobs: Informer<RemoteJob>): void {
    if (this.watched.has(jobs)) return;
    this.watched.add(jobs);
    const wake = (j: RemoteJob) => {
      for (const w of this.waiters.get(`${j.metadata.namespace}/${j.metadata.name}`) ?? []) w();
    };
    jobs.addHandler({ add: wake, update: (_o, j) => wake(j), delete: wake });
  }

  private wait(key: string, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      let set = this.waiters.get(key);
      if (!set) {
        set = new Set();
        this.waiters.set(key, set);
      }
      const s = set;
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        s.delete(done);
        if (s.size === 0) this.waiters.delete(key);
        resolve();
      };
      const timer = setTimeout(done, this.opts.pollMs ?? 2_000);
      signal.addEventListener("abort", done, { once: true });
      s.add(done);
    });
  }
}

/** What `compareWithSource` found: a mismatch (why) or none, and the manifest's totals. */
export type SourceComparison =
  | { objects: number; bytes: number }
  | { mismatch: string }
  | { unreadable: string | undefined };

/**
 * Whether the replica's committed manifest is what the source holds now: the same keys, sizes
 * and content (sha256 when the source records one, else the etag the workers copied).
 *
 * Both sides are streams merged in key order — the source listing and the manifest read line
 * by line through a `KeyCursor` — so the operator's memory does not grow with the dataset's
 * object count. A listed key the cursor cannot answer is certainly absent while the cursor has
 * dropped nothing from its side table; after it has (a source listing far out of key order),
 * such keys are collected, bounded, and looked up by a full pass over the manifest instead.
 */
export async function compareWithSource(
  src: ObjectStore,
  replica: ObjectStore,
  signal?: AbortSignal,
  sideLimit = DEFAULT_STREAM_LIMITS.sideTable,
): Promise<SourceComparison> {
  const options = signal ? { signal } : {};
  const reader = await ManifestReader.open(replica, manifestKey(), options);
  if (!reader) return { unreadable: undefined };
  let rowsRead = 0;
  let bytes = 0;
  const counted = (async function* () {
    for await (const row of reader.rows()) {
      rowsRead++;
      bytes += row[1].size;
      yield row;
    }
  })();
  const cursor = new KeyCursor<ManifestEntry>(counted, sideLimit);
  const same = (o: ObjectInfo, e: ManifestEntry) =>
    e.size === o.size && (o.sha256 ? o.sha256 === e.sha256 : e.srcEtag === o.etag);
  let matched = 0;
  let unsure = new Map<string, ObjectInfo>();
  /** Looks the unsure keys up in one full pass over the manifest. */
  const resolveUnsure = async (): Promise<string | undefined> => {
    if (unsure.size === 0) return undefined;
    const check = unsure;
    unsure = new Map();
    const again = await ManifestReader.open(replica, manifestKey(), options);
    if (!again) return "the replica's manifest vanished while it was compared";
    try {
      for await (const [k, e] of again.rows()) {
        const o = check.get(k);
        if (!o) continue;
        if (!same(o, e)) return `${k} changed at the source during the sync`;
        check.delete(k);
        matched++;
      }
    } finally {
      again.close();
    }
    const missing = check.keys().next();
    return missing.done ? undefined : `${missing.value} is not in the replica's manifest`;
  };
  try {
    for await (const o of src.list(options)) {
      if (o.key.startsWith(META_PREFIX)) continue;
      let key: string;
      try {
        key = normaliseKey(o.key);
      } catch {
        continue; // keys a sync rejects are in no version
      }
      const e = await cursor.take(key);
      if (!e) {
        if (cursor.evicted === 0) return { mismatch: `${key} is not in the replica's manifest` };
        unsure.set(key, o);
        if (unsure.size >= sideLimit) {
          const why = await resolveUnsure();
          if (why) return { mismatch: why };
        }
        continue;
      }
      if (!same(o, e)) return { mismatch: `${key} changed at the source during the sync` };
      matched++;
    }
    const why = await resolveUnsure();
    if (why) return { mismatch: why };
    // The rows the listing never asked for: objects gone from the source.
    for (let r = await counted.next(); !r.done; r = await counted.next()) {}
    if (reader.truncated) return { unreadable: "it ends early" };
    if (rowsRead !== matched)
      return {
        mismatch: `${rowsRead - matched} objects of the replica's manifest are gone from the source`,
      };
    return { objects: rowsRead, bytes };
  } finally {
    await cursor.close();
    reader.close();
  }
}

/** The failed worker's exit code and last line (its termination message), if a pod says. */
async function workerMessage(
  client: KubeClient,
  job: RemoteJob,
): Promise<{ exitCode?: number; line?: string } | undefined> {
  interface PodLike extends KubeObject {
    status?: {
      phase?: string;
      containerStatuses?: {
        state?: { terminated?: { exitCode?: number; message?: string; reason?: string } };
      }[];
    };
  }
  const pods = await client.list<PodLike>(Resources.Pod, {
    namespace: job.metadata.namespace,
    labelSelector: `batch.kubernetes.io/job-name=${job.metadata.name}`,
  });
  for (const pod of pods.items) {
    const t = pod.status?.containerStatuses?.[0]?.state?.terminated;
    if (!t || t.exitCode === 0) continue;
    return {
      ...(t.exitCode !== undefined ? { exitCode: t.exitCode } : {}),
      ...lastLine(t.message ?? t.reason),
    };
  }
  return undefined;
}

/** A worker's `--json` summary gives its first error; otherwise the last line it printed. */
function lastLine(text: string | undefined): { line?: string } {
  if (!text) return {};
  const lines = text
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
  for (const l of [...lines].reverse()) {
    try {
      const doc = JSON.parse(l) as {
        errors?: { key: string; message: string }[];
        failed?: { objects: number };
      };
      const first = doc.errors?.[0];
      if (first)
        return { line: `${doc.failed?.objects ?? 0} objects failed, first: ${first.key}: ${first.message}` };
    } catch {
      // not the JSON summary
    }
  }
  const last = lines.at(-1);
  return last ? { line: last.slice(0, 512) } : {};
}

async function deleteOwned(
  client: KubeClient,
  r: (typeof Resources)["Job"] | (typeof Resources)["Secret"],
  obj: KubeObject,
): Promise<void> {
  try {
    await client.delete(r, obj.metadata.name!, obj.metadata.namespace, {
      ...(obj.metadata.uid ? { uid: obj.metadata.uid } : {}),
      propagationPolicy: "Background",
    });
  } catch (err) {
    // 404: gone already; 409: the uid precondition failed — another object has the name now.
    if (!isNotFound(err) && !isConflict(err)) throw err;
  }
}

/** Deletes the worker Jobs and Secrets matching `selector` in `namespace`; returns their uids. */
export async function deleteWorkerObjects(
  client: KubeClient,
  namespace: string,
  selector: string,
): Promise<string[]> {
  const labelSelector = `${selector},${LABEL_COMPONENT}=${COMPONENT_SYNC_WORKER}`;
  const uids: string[] = [];
  for (const r of [Resources.Job, Resources.Secret]) {
    let items: KubeObject[];
    try {
      items = (await client.list<KubeObject>(r, { namespace, labelSelector })).items;
    } catch (err) {
      if (isNotFound(err)) continue;
      throw err;
    }
    for (const obj of items) {
      await deleteOwned(client, r, obj);
      uids.push(obj.metadata.uid ?? "");
    }
  }
  return uids;
}

/**
 * The finalizer's work: every worker Job and Secret of the DataSet on every cluster they may be
 * on. Returns clusters that could not be cleaned (unreachable), so the caller keeps the finalizer.
 */
export async function cleanupDataSetWorkers(
  ctx: OperatorContext,
  ds: DataSet,
  namespace = DEFAULT_WORKER_NAMESPACE,
): Promise<{ deleted: number; failed: { cluster: string; error: unknown }[] }> {
  const providers = new Set<string>([
    ...(ds.spec.replicas ?? []).map((r) => r.provider),
    ...ctx.caches.providers.list().map((p) => p.metadata.name ?? ""),
  ]);
  const seen = new Set<string>();
  let deleted = 0;
  const failed: { cluster: string; error: unknown }[] = [];
  for (const provider of providers) {
    for (const c of workerClusterCandidates(ctx, ds, provider)) {
      if (seen.has(c.id)) continue;
      seen.add(c.id);
      const remote: Remote = ctx.remote.connect(c.id, c.kubeconfig);
      try {
        deleted += (
          await deleteWorkerObjects(
            remote.client,
            namespace,
            `${LABEL_DATASET_UID}=${ds.metadata?.uid ?? ""}`,
          )
        ).length;
      } catch (error) {
        failed.push({ cluster: c.id, error });
      }
    }
  }
  return { deleted, failed };
}

/**
 * The orphan collector's part for sync workers: Jobs (and their Secrets) on connected clusters
 * whose DataSet is gone — deleted while the operator was down or with its finalizer removed
 * by hand. Only this management cluster's objects (origin label) are in the Job caches.
 */
export async function collectWorkerOrphans(
  ctx: OperatorContext,
  namespace = DEFAULT_WORKER_NAMESPACE,
): Promise<{ cluster: string; job: string }[]> {
  const out: { cluster: string; job: string }[] = [];
  if (!ctx.caches.datasets.hasSynced()) return out;
  for (const id of ctx.remote.ids()) {
    const entry = ctx.remote.get(id);
    if (!entry?.jobs.hasSynced()) continue;
    for (const job of entry.jobs.list(namespace)) {
      const labels = job.metadata.labels ?? {};
      const uid = labels[LABEL_DATASET_UID];
      if (labels[LABEL_COMPONENT] !== COMPONENT_SYNC_WORKER || !uid || ctx.caches.datasets.getByUid(uid))
        continue;
      try {
        await deleteWorkerObjects(entry.client, namespace, `${LABEL_DATASET_UID}=${uid}`);
        out.push({ cluster: id, job: `${job.metadata.namespace}/${job.metadata.name}` });
        ctx.log.info("orphaned sync-worker Job deleted", { cluster: id, job: job.metadata.name });
      } catch (err) {
        ctx.log.warn("could not delete an orphaned sync-worker Job; will retry", { cluster: id, err });
      }
    }
  }
  return out;
}
