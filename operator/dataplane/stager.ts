/**
 * Dataset syncs inside the operator, shared by the DataSet controller (which keeps replicas in
 * sync and reports them in status) and the TrainingRun controller (which, through the
 * `DataStager` port, gates a run's start on its dataset being present at the placement's
 * cloud). One registry means a replica is never synced twice at once, whoever asked.
 *
 * - A sync runs in the background: `stage()` and `ensure()` return at once with the current
 *   state (Pending, Syncing with progress, Synced with the version, Failed with a reason),
 *   so a reconcile never blocks on data. When a sync settles, `onSettled(datasetKey)` tells
 *   the DataSet controller to look again.
 * - Ready for a run means: a sync of the dataset into the target finished *complete* (every
 *   source object present and verified, manifest committed) within `freshForMs`; its version
 *   (the committed manifest's digest) is what the run trains on. An older result starts a new,
 *   incremental sync (cheap: the source is listed, the destination's manifest read).
 * - The target being the source's own provider needs no copy; the version is the digest of the
 *   source's content, computed by hashing it once (`SourceIndex`) and cached by etag.
 * - Failures: bad input (URI, credentials, missing bucket, auth) is `Failed` at once, so
 *   placement can try another cloud; transient failures are retried with backoff and only
 *   reported `Failed` after `maxAttempts` syncs in a row failed.
 * - Large syncs: when a `ShardedSyncRunner` is bound (the DataSet controller binds one that
 *   runs an Indexed Job of `spillway sync --shard` workers near the data) and the dataset's
 *   `syncPolicy.workerThresholdBytes` is set, the source is listed first (sizes only, no
 *   reads); above the threshold the runner does the sync and this registry only tracks it, so
 *   a replica is still synced once at a time and runs are gated the same way. The runner may
 *   decline (no cluster near the data, credentials an environment cannot carry): the sync
 *   then runs here, and the replica's message says why.
 */
import { createHash } from "node:crypto";
import type { CloudProvider, DataSet, TrainingRun } from "../api/v1alpha1/index.ts";
import type { DataStager, StagingStatus } from "../ports/staging.ts";
import { locationForProvider } from "./credentials.ts";
import { type Manifest, META_PREFIX, manifestDigest } from "./manifest.ts";
import { openLocation } from "./open.ts";
import { normaliseKey, type ObjectStore, StoreError, type StoreErrorCode } from "./store.ts";
import { type SyncOptions, type SyncProgress, type SyncSummary, syncStores } from "./sync.ts";

/** How the data plane finds providers and their credentials (the operator's caches). */
export interface StoreResolver {
  provider(name: string): CloudProvider | undefined;
  /**
   * Decoded data of the provider's `spec.storage.credentialsSecretRef` Secret; `{}` when the
   * provider names none; undefined when the Secret is missing (yet).
   */
  secret(provider: CloudProvider): Record<string, string> | undefined;
}

export type ReplicaPhase = "Pending" | "Syncing" | "Synced" | "Failed";

/** One replica's sync handed to a runner outside this process (the sync-worker Job). */
export interface ShardedSyncRequest {
  dataset: DataSet;
  provider: string;
  src: ObjectStore;
  dst: ObjectStore;
  /** What the source listing found just before (objects and bytes, Spillway's keys excluded). */
  source: { objects: number; bytes: number };
  signal: AbortSignal;
  /** Progress while the workers run: a line for status and, when known, objects/bytes synced. */
  report(message: string, synced?: { objects: number; bytes: number; listingDone: boolean }): void;
}

export type ShardedSyncOutcome =
  /** The runner cannot take this sync; it runs in the operator. `reason` goes into the message. */
  | { kind: "declined"; reason: string }
  | {
      kind: "done";
      complete: boolean;
      /** The replica's verified version, set only when complete. */
      version?: string;
      objects?: number;
      bytes?: number;
      /** One line, no secrets. */
      message: string;
      /** A failure no retry can fix (a worker's bad-input exit). */
      terminal?: boolean;
      /** What failed: the Job (or following it), or the replica (its result is not the source's version). */
      failure?: "job" | "replica";
    };

/** Runs a large sync elsewhere (see the file comment). */
export interface ShardedSyncRunner {
  run(req: ShardedSyncRequest): Promise<ShardedSyncOutcome>;
  /**
   * The replica is about to be synced in the operator: anything the runner left for it (a
   * Job adopted from before a restart that the new settings no longer want) must not keep
   * writing beside it.
   */
  release?(dataset: DataSet, provider: string): Promise<void>;
}

/** The state of one dataset → provider sync, as the controllers report it. */
export interface ReplicaSync {
  datasetKey: string;
  provider: string;
  phase: ReplicaPhase;
  /** Display URI of the replica (no credentials). */
  uri?: string;
  /** Version of the last complete sync. */
  version?: string;
  /** Objects and bytes of that version. */
  objects?: number;
  bytes?: number;
  progress?: SyncProgress;
  /** Summary of the last finished sync (complete or not). */
  summary?: SyncSummary;
  startedAt?: number;
  finishedAt?: number;
  /** When the last complete sync finished. */
  syncedAt?: number;
  /** Consecutive failed syncs. */
  failures: number;
  /** A failure no retry can fix (bad URI, credentials, missing bucket). */
  terminal: boolean;
  /** One line, no secrets. */
  message: string;
  running: boolean;
  /** Who ran the current/last sync: this process, or sync workers (a `ShardedSyncRunner`). */
  via?: "operator" | "workers";
  /** When the last sync by workers failed: their Job (or following it), or the replica (stores, version check). */
  workerFailure?: "job" | "replica";
}

export interface DatasetSyncsOptions {
  resolver?: StoreResolver;
  /** Passed to every sync (concurrency, part size, retry…); `delete` comes from the DataSet. */
  sync?: Omit<SyncOptions, "signal" | "onProgress" | "delete" | "dryRun" | "shard">;
  /** A finished sync counts as "staged" this long; then the next `stage()` resyncs. Default 5 min. */
  freshForMs?: number;
  /** Failed syncs in a row before `stage()` reports Failed. Default 3. */
  maxAttempts?: number;
  /** Backoff before retrying a failed sync: base doubling up to max. Default 5 s → 5 min. */
  retryBaseMs?: number;
  retryMaxMs?: number;
  now?: () => number;
  /** Opens a provider's store (tests may wrap the real one). */
  open?: (provider: CloudProvider, secret: Record<string, string>, prefix: string) => Promise<ObjectStore>;
}

/** Store errors that mean "fix the configuration": no retry helps. */
const CONFIG_ERRORS: ReadonlySet<StoreErrorCode> = new Set([
  "InvalidUri",
  "InvalidKey",
  "MissingCredentials",
  "ContainerNotFound",
  "Auth",
]);

interface Job {
  state: ReplicaSync;
  abort?: AbortController;
  /** The sync's promise while it runs. */
  done?: Promise<void>;
  /** Generation of the DataSet the running/last sync was started for. */
  generation?: number;
  /** The providers' and Secrets' versions it was started with (see `configFingerprint`). */
  fingerprint?: string;
}

export const datasetKeyOf = (ds: DataSet): string =>
  `${ds.metadata?.namespace ?? ""}/${ds.metadata?.name ?? ""}`;

/** The prefix a replica uses at `provider`: the one listed in spec.replicas, else the source's. */
export function replicaPrefix(ds: DataSet, provider: string): string {
  const listed = ds.spec.replicas?.find((r) => r.provider === provider);
  return listed?.prefix ?? ds.spec.source.prefix ?? "";
}

export class DatasetSyncs implements DataStager {
  private readonly jobs = new Map<string, Job>();
  private readonly indexes = new Map<string, SourceIndex>();
  private resolver: StoreResolver | undefined;
  private runner: ShardedSyncRunner | undefined;
  private settled: ((datasetKey: string) => void) | undefined;
  private readonly now: () => number;

  constructor(private readonly opts: DatasetSyncsOptions = {}) {
    this.resolver = opts.resolver;
    this.now = opts.now ?? Date.now;
  }

  /**
   * Connects the registry to the operator's caches once they exist (the manager builds the
   * stager before the controllers), and to the DataSet controller's queue.
   */
  bind(resolver: StoreResolver, onSettled?: (datasetKey: string) => void): void {
    this.resolver = resolver;
    if (onSettled) this.settled = onSettled;
  }

  /** Hands syncs above a DataSet's `workerThresholdBytes` to `runner` (see the file comment). */
  bindRunner(runner: ShardedSyncRunner | undefined): void {
    this.runner = runner;
  }

  /** The replica's state, if a sync was ever started for it by this process. */
  state(datasetKey: string, provider: string): ReplicaSync | undefined {
    return this.jobs.get(`${datasetKey}@${provider}`)?.state;
  }

  /** Providers this process has synced (or is syncing) the dataset to. */
  providersOf(datasetKey: string): string[] {
    return [...this.jobs.values()]
      .filter((j) => j.state.datasetKey === datasetKey)
      .map((j) => j.state.provider);
  }

  /**
   * Starts a sync of the dataset's source into `provider` unless one is running, and returns
   * the replica's state. `force` resyncs even a fresh result; `verify: "list"` makes that sync
   * also list the destination, so objects it lost behind our records are found and copied
   * again (the DataSet controller's periodic resync of a synced replica asks for it; a run's
   * staging does not, to stay one source listing plus the manifest).
   */
  ensure(ds: DataSet, provider: string, why: { force?: boolean; verify?: "list" } = {}): ReplicaSync {
    const datasetKey = datasetKeyOf(ds);
    const id = `${datasetKey}@${provider}`;
    let job = this.jobs.get(id);
    if (!job) {
      job = {
        state: {
          datasetKey,
          provider,
          phase: "Pending",
          failures: 0,
          terminal: false,
          message: "",
          running: false,
        },
      };
      this.jobs.set(id, job);
    }
    const s = job.state;
    if (s.running) return s;
    const generationChanged = job.generation !== undefined && job.generation !== ds.metadata?.generation;
    // A changed provider or Secret may fix what failed (or move the replica): sync again now.
    const configChanged =
      job.fingerprint !== undefined && job.fingerprint !== this.configFingerprint(ds, provider);
    const due =
      why.force || generationChanged || configChanged || s.startedAt === undefined || this.retryDue(s);
    if (due) this.start(job, ds, provider, why.verify);
    return job.state;
  }

  /**
   * Whether a failed replica's retry backoff has elapsed. A configuration error is retried
   * too, at the longest backoff: a fix outside Kubernetes (a bucket created) must be noticed.
   */
  private retryDue(s: ReplicaSync): boolean {
    if (s.phase !== "Failed") return false;
    const delay = s.terminal ? (this.opts.retryMaxMs ?? 300_000) : this.retryDelay(s.failures);
    return this.now() >= (s.finishedAt ?? 0) + delay;
  }

  /**
   * The inputs of a sync besides the DataSet: both providers' generations (spec changes, not
   * status updates) and a digest of their Secrets' data (never the data itself).
   */
  private configFingerprint(ds: DataSet, provider: string): string {
    const r = this.resolver;
    if (!r) return "";
    return [ds.spec.source.provider, provider]
      .map((name) => {
        const p = r.provider(name);
        if (!p) return `${name}:absent`;
        const secret = r.secret(p);
        const digest = secret
          ? createHash("sha256")
              .update(JSON.stringify(Object.entries(secret).sort()))
              .digest("hex")
              .slice(0, 16)
          : "none";
        return `${name}:${p.metadata?.generation ?? ""}:${digest}`;
      })
      .join(",");
  }

  /** Milliseconds from now until a failed replica is retried (for the controller's requeue). */
  nextRetryIn(s: ReplicaSync): number {
    const delay = s.terminal ? (this.opts.retryMaxMs ?? 300_000) : this.retryDelay(s.failures);
    return Math.max(0, (s.finishedAt ?? 0) + delay - this.now());
  }

  /** Backoff after `failures` failed syncs in a row. */
  retryDelay(failures: number): number {
    const base = this.opts.retryBaseMs ?? 5_000;
    const max = this.opts.retryMaxMs ?? 300_000;
    return Math.min(max, base * 2 ** Math.max(0, failures - 1));
  }

  private start(job: Job, ds: DataSet, provider: string, verify?: "list"): void {
    const s = job.state;
    const abort = new AbortController();
    job.abort = abort;
    job.generation = ds.metadata?.generation;
    job.fingerprint = this.configFingerprint(ds, provider);
    s.running = true;
    s.phase = "Syncing";
    s.startedAt = this.now();
    s.progress = undefined;
    s.message = "listing the source";
    const run = async () => {
      try {
        const { src, dst } = await this.openEnds(ds, provider);
        s.uri = dst.displayUri;
        let declined: string | undefined;
        const threshold = ds.spec.syncPolicy?.workerThresholdBytes;
        if (this.runner && threshold !== undefined) {
          s.message = "sizing the source";
          const source = await sourceSize(src, abort.signal);
          if (source.bytes > threshold) {
            s.via = "workers";
            const outcome = await this.runner.run({
              dataset: ds,
              provider,
              src,
              dst,
              source,
              signal: abort.signal,
              report: (message, synced) => {
                s.message = message;
                if (synced) s.progress = workerProgress(synced, source);
              },
            });
            if (outcome.kind === "done") {
              this.settle(s, outcome, abort.signal.aborted);
              return;
            }
            declined = outcome.reason;
          }
        }
        s.via = "operator";
        await this.runner?.release?.(ds, provider);
        const summary = await syncStores(src, dst, {
          ...this.opts.sync,
          ...(verify && (this.opts.sync?.verify ?? "none") === "none" ? { verify } : {}),
          delete: ds.spec.syncPolicy?.delete ?? false,
          ...(ds.spec.syncPolicy?.concurrency ? { concurrency: ds.spec.syncPolicy.concurrency } : {}),
          signal: abort.signal,
          onProgress: (p) => {
            s.progress = p;
            s.message = progressLine(p);
          },
        });
        s.summary = summary;
        s.progress = undefined;
        if (summary.complete && summary.version) {
          s.phase = "Synced";
          s.version = summary.version;
          s.objects = summary.copied.objects + summary.skipped.objects;
          s.bytes = summary.copied.bytes + summary.skipped.bytes;
          s.syncedAt = this.now();
          s.failures = 0;
          s.terminal = false;
          s.message =
            `${summary.copied.objects} objects copied, ${summary.skipped.objects} unchanged` +
            (summary.deleted.objects ? `, ${summary.deleted.objects} deleted` : "") +
            (summary.rejected.objects
              ? `; ${summary.rejected.objects} source keys rejected as invalid`
              : "") +
            (declined ? ` (in the operator: ${declined})` : "");
        } else {
          s.phase = "Failed";
          s.failures++;
          const first = summary.errors[0];
          s.message = summary.aborted
            ? "sync interrupted"
            : (summary.stopped ??
              `${summary.failed.objects} objects failed${first ? `: ${first.message}` : ""}`);
        }
      } catch (e) {
        s.phase = "Failed";
        s.failures++;
        s.terminal = e instanceof StoreError && CONFIG_ERRORS.has(e.code);
        s.message = e instanceof Error ? e.message : String(e);
        // The runner could not start or follow its Job (the remote cluster refused or failed):
        // a worker failure; a store error is the replica's, reported as for any sync.
        if (s.via === "workers") s.workerFailure = e instanceof StoreError ? "replica" : "job";
      } finally {
        s.running = false;
        s.finishedAt = this.now();
        job.done = undefined;
        job.abort = undefined;
        this.settled?.(s.datasetKey);
      }
    };
    job.done = run();
  }

  /** Records a runner's result like a sync's own. */
  private settle(s: ReplicaSync, o: Extract<ShardedSyncOutcome, { kind: "done" }>, aborted: boolean): void {
    s.progress = undefined;
    if (o.complete && o.version) {
      s.phase = "Synced";
      s.version = o.version;
      s.objects = o.objects ?? 0;
      s.bytes = o.bytes ?? 0;
      s.syncedAt = this.now();
      s.failures = 0;
      s.terminal = false;
    } else {
      s.phase = "Failed";
      s.failures++;
      s.terminal = o.terminal ?? false;
    }
    s.workerFailure = o.complete ? undefined : (o.failure ?? "job");
    s.message = aborted && !o.complete ? "sync interrupted" : o.message;
  }

  private async openEnds(ds: DataSet, provider: string): Promise<{ src: ObjectStore; dst: ObjectStore }> {
    const source = this.providerStore(ds.spec.source.provider, ds.spec.source.prefix ?? "");
    const target = this.providerStore(provider, replicaPrefix(ds, provider));
    return { src: await source, dst: await target };
  }

  private async providerStore(name: string, prefix: string): Promise<ObjectStore> {
    const r = this.resolver;
    if (!r) throw new StoreError("Other", "the data plane is not connected to the operator's caches yet");
    const provider = r.provider(name);
    if (!provider) throw new StoreError("InvalidUri", `CloudProvider ${name} does not exist`);
    const secret = r.secret(provider);
    if (!secret)
      throw new StoreError(
        "Transient",
        `the credentials Secret ${provider.spec.storage?.credentialsSecretRef?.name ?? "?"} of CloudProvider ${name} does not exist (yet)`,
      );
    if (this.opts.open) return this.opts.open(provider, secret, prefix);
    const { location, credentials } = locationForProvider(provider, secret, prefix);
    return openLocation(location, credentials);
  }

  /** DataStager: the run's dataset at the placement's provider (see the file comment). */
  async stage(
    _run: TrainingRun,
    dataset: DataSet,
    target: CloudProvider,
    signal?: AbortSignal,
  ): Promise<StagingStatus> {
    const provider = target.metadata?.name ?? "";
    if (provider === dataset.spec.source.provider) return this.stageAtSource(dataset, target, signal);
    const id = `${datasetKeyOf(dataset)}@${provider}`;
    const existing = this.jobs.get(id)?.state;
    const fresh =
      existing?.phase === "Synced" &&
      existing.syncedAt !== undefined &&
      this.now() - existing.syncedAt < (this.opts.freshForMs ?? 300_000);
    const s = fresh ? existing : this.ensure(dataset, provider, { force: existing?.phase === "Synced" });
    return this.statusOf(s);
  }

  private statusOf(s: ReplicaSync): StagingStatus {
    const maxAttempts = this.opts.maxAttempts ?? 3;
    if (s.phase === "Synced" && !s.running)
      return {
        phase: "Ready",
        ...(s.version ? { version: s.version } : {}),
        ...(s.uri ? { uri: s.uri } : {}),
        ...(s.objects !== undefined ? { objectsSynced: s.objects, objectsTotal: s.objects } : {}),
        ...(s.bytes !== undefined ? { bytesSynced: s.bytes, bytesTotal: s.bytes } : {}),
        message: `version ${s.version} at ${s.provider}`,
      };
    if (s.phase === "Failed" && (s.terminal || s.failures >= maxAttempts))
      return { phase: "Failed", message: `sync to ${s.provider} failed: ${s.message}` };
    const p = s.progress;
    return {
      phase: s.running ? "Syncing" : "Pending",
      ...(p
        ? {
            objectsSynced: p.objectsCopied + p.objectsSkipped,
            bytesSynced: p.bytesCopied,
            ...(p.listingDone ? { objectsTotal: p.objectsSeen, bytesTotal: p.bytesToCopy } : {}),
          }
        : {}),
      message:
        s.phase === "Failed"
          ? `retrying after ${s.failures} failed sync(s): ${s.message}`
          : `syncing to ${s.provider}: ${s.message}`,
    };
  }

  /** The run is placed where the data already is: Ready once the source's version is known. */
  private async stageAtSource(
    ds: DataSet,
    target: CloudProvider,
    signal?: AbortSignal,
  ): Promise<StagingStatus> {
    const key = datasetKeyOf(ds);
    let index = this.indexes.get(key);
    if (!index) {
      index = new SourceIndex();
      this.indexes.set(key, index);
    }
    const prefix = ds.spec.source.prefix ?? "";
    if (
      !index.running &&
      (index.result === undefined || this.now() - index.finishedAt > (this.opts.freshForMs ?? 300_000))
    ) {
      index.start(
        () => this.providerStore(target.metadata?.name ?? "", prefix),
        this.now,
        () => this.settled?.(key),
        signal,
      );
    }
    const r = index.result;
    if (r && !index.error)
      return {
        phase: "Ready",
        version: r.version,
        uri: index.uri ?? "",
        objectsSynced: r.objects,
        objectsTotal: r.objects,
        bytesSynced: r.bytes,
        bytesTotal: r.bytes,
        message: `the data is at its source (${target.metadata?.name}); version ${r.version}`,
      };
    if (index.error && index.terminal) return { phase: "Failed", message: index.error };
    return {
      phase: index.running ? "Syncing" : "Pending",
      message: index.error
        ? `computing the source version failed, retrying: ${index.error}`
        : "computing the source version",
    };
  }

  /** Stops the syncs of a deleted DataSet (or all of them); finished objects are journaled. */
  async cancel(datasetKey?: string): Promise<void> {
    const mine = [...this.jobs.entries()].filter(
      ([, j]) => datasetKey === undefined || j.state.datasetKey === datasetKey,
    );
    for (const [, j] of mine) j.abort?.abort();
    await Promise.allSettled(mine.map(([, j]) => j.done));
    for (const [id] of mine) this.jobs.delete(id);
    if (datasetKey === undefined) this.indexes.clear();
    else this.indexes.delete(datasetKey);
  }
}

/** Objects and bytes at the source (one listing, no reads); Spillway's own keys excluded. */
export async function sourceSize(
  store: ObjectStore,
  signal?: AbortSignal,
): Promise<{ objects: number; bytes: number }> {
  let objects = 0;
  let bytes = 0;
  for await (const o of store.list(signal ? { signal } : {})) {
    if (o.key.startsWith(META_PREFIX)) continue;
    objects++;
    bytes += o.size;
  }
  return { objects, bytes };
}

/** A worker Job's progress in the shape status reports a sync's (objects/bytes synced so far). */
function workerProgress(
  synced: { objects: number; bytes: number; listingDone: boolean },
  source: { objects: number; bytes: number },
): SyncProgress {
  return {
    phase: "syncing",
    listingDone: synced.listingDone,
    objectsSeen: source.objects,
    objectsToCopy: source.objects,
    bytesToCopy: source.bytes,
    objectsCopied: synced.objects,
    bytesCopied: synced.bytes,
    objectsSkipped: 0,
    objectsFailed: 0,
    bytesPerSecond: 0,
  };
}

function progressLine(p: SyncProgress): string {
  const mib = (n: number) => (n / 1024 / 1024).toFixed(1);
  return `${p.objectsCopied + p.objectsSkipped}/${p.objectsSeen}${p.listingDone ? "" : "+"} objects, ${mib(p.bytesCopied)} MiB copied`;
}

/**
 * The version of data that stays where it is: the manifest digest over (key, size, sha256) of
 * every source object, hashing each object once and then only when its etag or size changed
 * (the cache lives in the operator's memory; a restart hashes once more).
 */
export class SourceIndex {
  private readonly hashes = new Map<string, { etag: string; size: number; sha256: string }>();
  result: { version: string; objects: number; bytes: number } | undefined;
  error: string | undefined;
  terminal = false;
  uri: string | undefined;
  running = false;
  finishedAt = 0;

  start(
    open: () => Promise<ObjectStore>,
    now: () => number,
    onSettled: () => void,
    signal?: AbortSignal,
  ): void {
    this.running = true;
    void (async () => {
      try {
        const store = await open();
        this.uri = store.displayUri;
        this.result = await this.compute(store, signal);
        this.error = undefined;
        this.terminal = false;
      } catch (e) {
        this.error = e instanceof Error ? e.message : String(e);
        this.terminal = e instanceof StoreError && CONFIG_ERRORS.has(e.code);
      } finally {
        this.running = false;
        this.finishedAt = now();
        onSettled();
      }
    })();
  }

  async compute(
    store: ObjectStore,
    signal?: AbortSignal,
  ): Promise<{ version: string; objects: number; bytes: number }> {
    const m: Manifest = new Map();
    let bytes = 0;
    for await (const o of store.list(signal ? { signal } : {})) {
      if (o.key.startsWith(META_PREFIX)) continue;
      let key: string;
      try {
        key = normaliseKey(o.key);
      } catch {
        continue; // the same keys a sync rejects are not part of any version
      }
      const cached = this.hashes.get(key);
      let sha256 =
        o.sha256 ?? (cached && cached.etag === o.etag && cached.size === o.size ? cached.sha256 : undefined);
      if (!sha256) {
        const h = createHash("sha256");
        for await (const c of await store.read(key, signal ? { signal } : {})) h.update(c as Uint8Array);
        sha256 = h.digest("hex");
      }
      this.hashes.set(key, { etag: o.etag, size: o.size, sha256 });
      m.set(key, { size: o.size, sha256, srcEtag: o.etag, dstEtag: o.etag });
      bytes += o.size;
    }
    return { version: manifestDigest(m), objects: m.size, bytes };
  }
}
