/**
 * A list-watch cache of one resource (client-go's reflector + indexer, in one class).
 *
 * - Lists, then watches from the list's resourceVersion; every event moves the version on.
 * - 410 Gone (as an HTTP status or a watch ERROR event) → relist; the relist is diffed
 *   against the store by key *and uid*, so objects deleted or replaced meanwhile produce
 *   delete (and add) events.
 * - Any other watch/list failure → retry with exponential backoff and jitter. client-node's
 *   own informer stops for good after such errors; this one never gives up until `stop()`.
 * - A client-side inactivity timeout or a server-side close → re-watch at once from the last
 *   version.
 * - Periodic resync with jitter replays every cached object as an update, so controllers
 *   re-check the world even when nothing changed (level-triggered safety net).
 * - A store keyed by `namespace/name`, a uid index and named secondary indexes.
 *
 * Reconcilers read from here, never by listing the API server.
 */
import { type BackoffOptions, backoffDelay, jittered } from "./backoff.ts";
import { isGone, type KubeClient } from "./client.ts";
import { type Clock, realClock, sleep, type Timer } from "./clock.ts";
import { type Logger, silentLogger } from "./logging.ts";
import type { RuntimeMetrics } from "./metrics.ts";
import { type KubeObject, objectKey, type ResourceType } from "./resources.ts";

export interface EventHandler<T> {
  add?(obj: T): void;
  update?(oldObj: T, newObj: T): void;
  delete?(obj: T): void;
}

export type IndexFunc<T> = (obj: T) => readonly string[];

export interface InformerOptions {
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** Replay all cached objects as updates this often (0 = never). Default 10 min. */
  resyncPeriodMs?: number;
  /** Each resync period is stretched by up to this fraction at random. Default 0.1. */
  resyncJitter?: number;
  /** Backoff between failed list/watch attempts. Default 500 ms … 30 s. */
  backoff?: BackoffOptions;
  clock?: Clock;
  random?: () => number;
  logger?: Logger;
  metrics?: RuntimeMetrics;
  /**
   * Applied to every object before it is stored (client-go's TransformFunc): what the cache
   * keeps is what the controllers read. Default `stripManagedFields`; pass `(o) => o` to keep
   * objects whole.
   */
  transform?: <O extends KubeObject>(obj: O) => O;
}

/**
 * Drops `metadata.managedFields` (server-side apply's per-manager field sets). No controller
 * reads them, and on objects written by several managers they are often the largest part of
 * the object: kept, they would be held once per cached object for the life of the process.
 */
export function stripManagedFields<O extends KubeObject>(obj: O): O {
  // Not in Spillway's ObjectMeta type (no controller reads it): looked up by name.
  const meta = obj.metadata as O["metadata"] & { managedFields?: unknown };
  if (meta?.managedFields === undefined) return obj;
  const { managedFields: _dropped, ...metadata } = meta;
  return { ...obj, metadata };
}

/** Thrown inside the watch loop to restart it. */
class WatchRestart extends Error {
  constructor(
    readonly reason: "gone" | "error",
    message: string,
  ) {
    super(message);
  }
}

export class Informer<T extends KubeObject = KubeObject> {
  readonly resource: ResourceType;
  private readonly items = new Map<string, T>();
  private readonly uidToKey = new Map<string, string>();
  private readonly indexers = new Map<string, IndexFunc<T>>();
  private readonly indices = new Map<string, Map<string, Set<string>>>();
  private readonly handlers: EventHandler<T>[] = [];
  private synced = false;
  private syncWaiters: Array<() => void> = [];
  private rv = "";
  private abort?: AbortController;
  private loop?: Promise<void>;
  private resyncTimer?: Timer;
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly log: Logger;
  private readonly backoff: BackoffOptions;
  private readonly transform: <O extends KubeObject>(obj: O) => O;

  constructor(
    private readonly client: KubeClient,
    resource: ResourceType,
    private readonly opts: InformerOptions = {},
  ) {
    this.resource = resource;
    this.clock = opts.clock ?? realClock;
    this.random = opts.random ?? Math.random;
    this.log = (opts.logger ?? silentLogger()).child({ informer: resource.plural, cluster: client.cluster });
    this.backoff = opts.backoff ?? { baseMs: 500, maxMs: 30_000, jitter: 0.2 };
    this.transform = opts.transform ?? stripManagedFields;
  }

  // ---- lifecycle ------------------------------------------------------------------------

  start(): void {
    if (this.loop) return;
    this.abort = new AbortController();
    const signal = this.abort.signal;
    this.loop = this.run(signal);
    this.scheduleResync();
  }

  async stop(): Promise<void> {
    this.abort?.abort();
    this.resyncTimer?.cancel();
    await this.loop;
    this.loop = undefined;
    for (const w of this.syncWaiters) w();
    this.syncWaiters = [];
  }

  /** True once the first list has been stored. */
  hasSynced(): boolean {
    return this.synced;
  }

  /** Resolves true when synced, false if `signal` aborts or the informer stops first. */
  waitForSync(signal?: AbortSignal): Promise<boolean> {
    if (this.synced) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = () => resolve(this.synced);
      this.syncWaiters.push(done);
      signal?.addEventListener("abort", done, { once: true });
    });
  }

  /** The resourceVersion the next watch starts from ("" = a relist is due). */
  lastSyncResourceVersion(): string {
    return this.rv;
  }

  // ---- reads ----------------------------------------------------------------------------

  get(key: string): T | undefined {
    return this.items.get(key);
  }

  getByName(name: string, namespace?: string): T | undefined {
    return this.items.get(namespace ? `${namespace}/${name}` : name);
  }

  getByUid(uid: string): T | undefined {
    const key = this.uidToKey.get(uid);
    return key === undefined ? undefined : this.items.get(key);
  }

  list(namespace?: string): T[] {
    const all = [...this.items.values()];
    return namespace === undefined ? all : all.filter((o) => o.metadata.namespace === namespace);
  }

  keys(): string[] {
    return [...this.items.keys()];
  }

  get size(): number {
    return this.items.size;
  }

  /** Registers a named index (e.g. offers by run uid); existing objects are indexed at once. */
  addIndex(name: string, fn: IndexFunc<T>): void {
    if (this.indexers.has(name)) throw new Error(`index ${name} already exists on ${this.resource.plural}`);
    this.indexers.set(name, fn);
    this.indices.set(name, new Map());
    for (const [key, obj] of this.items) this.indexOne(name, fn, key, obj);
  }

  /** Objects whose index `name` yields `value`. */
  byIndex(name: string, value: string): T[] {
    const idx = this.indices.get(name);
    if (!idx) throw new Error(`no index ${name} on ${this.resource.plural}`);
    const out: T[] = [];
    for (const key of idx.get(value) ?? []) {
      const obj = this.items.get(key);
      if (obj) out.push(obj);
    }
    return out;
  }

  /**
   * Subscribes to changes. If the cache already holds objects they are replayed as adds,
   * so a late subscriber sees the same world as an early one.
   */
  addHandler(handler: EventHandler<T>): () => void {
    this.handlers.push(handler);
    for (const obj of this.items.values()) this.safely(() => handler.add?.(obj));
    return () => {
      const i = this.handlers.indexOf(handler);
      if (i >= 0) this.handlers.splice(i, 1);
    };
  }

  // ---- list/watch loop ------------------------------------------------------------------

  private async run(signal: AbortSignal): Promise<void> {
    let failures = 0;
    while (!signal.aborted) {
      try {
        if (!this.rv) await this.relist();
        const sawEvents = await this.watchOnce(signal);
        // A normal close (server timeout) → re-watch at once; a close with nothing
        // received counts as a soft failure so a misbehaving server cannot spin us.
        if (sawEvents) failures = 0;
        else if (!signal.aborted)
          await sleep(this.clock, backoffDelay(++failures, this.backoff, this.random), signal);
        this.opts.metrics?.informerRestarts.inc({ resource: this.resource.plural, reason: "closed" });
      } catch (err) {
        if (signal.aborted) break;
        if (isGone(err) || (err instanceof WatchRestart && err.reason === "gone")) {
          this.log.info("resourceVersion too old, relisting", { resourceVersion: this.rv });
          this.rv = "";
          this.opts.metrics?.informerRestarts.inc({ resource: this.resource.plural, reason: "gone" });
          continue;
        }
        if (err instanceof Error && err.name === "TimeoutError") {
          // client-side inactivity timeout: the connection idled, re-watch from the same version.
          continue;
        }
        failures++;
        const delay = backoffDelay(failures, this.backoff, this.random);
        this.opts.metrics?.informerRestarts.inc({ resource: this.resource.plural, reason: "error" });
        this.log.warn("list/watch failed, retrying", { err, failures, retryInMs: Math.round(delay) });
        await sleep(this.clock, delay, signal);
      }
    }
  }

  private async relist(): Promise<void> {
    const { namespace, labelSelector, fieldSelector } = this.opts;
    const list = await this.client.listAll<T>(this.resource, { namespace, labelSelector, fieldSelector });
    const seen = new Set<string>();
    for (const item of list.items) {
      const obj = this.transform(item);
      const key = objectKey(obj);
      seen.add(key);
      this.upsert(key, obj);
    }
    for (const [key, old] of [...this.items]) {
      if (!seen.has(key)) {
        this.remove(key);
        this.emit((h) => h.delete?.(old));
      }
    }
    this.rv = list.metadata?.resourceVersion ?? "";
    if (!this.synced) {
      this.synced = true;
      for (const w of this.syncWaiters) w();
      this.syncWaiters = [];
    }
  }

  /** One watch from `this.rv`; resolves on a normal close, throws to restart. */
  private async watchOnce(signal: AbortSignal): Promise<boolean> {
    const { namespace, labelSelector, fieldSelector } = this.opts;
    // Stopped during the list: an abort listener added now would never fire, and the watch
    // would run until the server's timeout (minutes), holding up `stop()`.
    if (signal.aborted) return false;
    const watchAbort = new AbortController();
    const onOuterAbort = () => watchAbort.abort();
    signal.addEventListener("abort", onOuterAbort, { once: true });
    let restart: WatchRestart | undefined;
    let sawEvents = false;
    try {
      await this.client.watch<T>(
        this.resource,
        {
          namespace,
          labelSelector,
          fieldSelector,
          resourceVersion: this.rv,
          allowWatchBookmarks: true,
          // Like client-go: a server-side timeout between 5 and 10 minutes.
          timeoutSeconds: Math.floor(300 * (1 + this.random())),
        },
        (event) => {
          if (restart) return;
          sawEvents = true;
          if (event.type === "ERROR") {
            const status = event.object as unknown as { code?: number; message?: string };
            restart = new WatchRestart(
              status.code === 410 ? "gone" : "error",
              `watch error event: ${status.code ?? "?"} ${status.message ?? ""}`,
            );
            watchAbort.abort();
            return;
          }
          this.apply(event.type, event.type === "BOOKMARK" ? event.object : this.transform(event.object));
        },
        watchAbort.signal,
      );
    } finally {
      signal.removeEventListener("abort", onOuterAbort);
    }
    if (restart) throw restart;
    return sawEvents;
  }

  private apply(type: string, obj: T): void {
    const key = objectKey(obj);
    switch (type) {
      case "ADDED":
      case "MODIFIED":
        this.upsert(key, obj);
        break;
      case "DELETED": {
        const old = this.items.get(key);
        if (old && (!obj.metadata.uid || old.metadata.uid === obj.metadata.uid)) {
          this.remove(key);
          this.emit((h) => h.delete?.(obj));
        }
        break;
      }
      default:
        break; // BOOKMARK: only moves the resourceVersion on.
    }
    const rv = obj.metadata?.resourceVersion;
    if (rv) this.rv = rv;
  }

  /** Stores `obj`; emits add, update, or delete+add when the uid changed under the same key. */
  private upsert(key: string, obj: T): void {
    const old = this.items.get(key);
    if (old && old.metadata.uid !== obj.metadata.uid) {
      this.remove(key);
      this.emit((h) => h.delete?.(old));
      this.store(key, obj);
      this.emit((h) => h.add?.(obj));
      return;
    }
    if (old && old.metadata.resourceVersion === obj.metadata.resourceVersion) return;
    this.store(key, obj);
    if (old) this.emit((h) => h.update?.(old, obj));
    else this.emit((h) => h.add?.(obj));
  }

  private store(key: string, obj: T): void {
    const old = this.items.get(key);
    if (old) this.unindex(key, old);
    this.items.set(key, obj);
    if (obj.metadata.uid) this.uidToKey.set(obj.metadata.uid, key);
    for (const [name, fn] of this.indexers) this.indexOne(name, fn, key, obj);
  }

  private remove(key: string): void {
    const old = this.items.get(key);
    if (!old) return;
    this.unindex(key, old);
    this.items.delete(key);
    if (old.metadata.uid) this.uidToKey.delete(old.metadata.uid);
  }

  private indexOne(name: string, fn: IndexFunc<T>, key: string, obj: T): void {
    const idx = this.indices.get(name)!;
    for (const value of this.safeIndex(fn, obj)) {
      let keys = idx.get(value);
      if (!keys) {
        keys = new Set();
        idx.set(value, keys);
      }
      keys.add(key);
    }
  }

  private unindex(key: string, obj: T): void {
    for (const [name, fn] of this.indexers) {
      const idx = this.indices.get(name)!;
      for (const value of this.safeIndex(fn, obj)) {
        const keys = idx.get(value);
        keys?.delete(key);
        if (keys?.size === 0) idx.delete(value);
      }
    }
  }

  private safeIndex(fn: IndexFunc<T>, obj: T): readonly string[] {
    try {
      return fn(obj);
    } catch {
      return [];
    }
  }

  private scheduleResync(): void {
    const period = this.opts.resyncPeriodMs ?? 600_000;
    if (period <= 0) return;
    this.resyncTimer = this.clock.setTimer(
      () => {
        if (this.abort?.signal.aborted) return;
        for (const obj of this.items.values()) this.emit((h) => h.update?.(obj, obj));
        this.scheduleResync();
      },
      jittered(period, this.opts.resyncJitter ?? 0.1, this.random),
    );
  }

  private emit(call: (h: EventHandler<T>) => void): void {
    for (const h of this.handlers) this.safely(() => call(h));
  }

  private safely(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.log.error("event handler failed", { err });
    }
  }
}

/** Index function: uids of an object's owners (e.g. remote objects by owning run). */
export const byOwnerUid = <T extends KubeObject>(obj: T): string[] =>
  (obj.metadata.ownerReferences ?? []).map((r) => r.uid);

/** Index function factory: the value of a label (e.g. `spillway.dev/run-uid`). */
export const byLabel =
  (label: string) =>
  <T extends KubeObject>(obj: T): string[] => {
    const v = obj.metadata.labels?.[label];
    return v === undefined ? [] : [v];
  };
