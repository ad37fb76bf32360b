/**
 * The object store: every object by resource, namespace and name, one cluster-wide
 * resourceVersion counter (like etcd's revision), a bounded history of changes from which
 * watches resume, and the live watchers. A watch from a version older than the retained
 * history is refused with 410 Gone, exactly as a compacted etcd makes the real server do.
 */
import type { Matcher } from "./selectors.ts";
import type { KubeObject } from "./types.ts";

export type WatchEventType = "ADDED" | "MODIFIED" | "DELETED";

export interface ChangeEvent {
  rv: number;
  type: WatchEventType;
  resource: string;
  object: KubeObject;
  /** For MODIFIED: the object before, so a selector watch sees it enter or leave its set. */
  previous?: KubeObject;
}

/** A change as one watch sees it: the type can differ from the change's (see `eventFor`). */
export interface Delivery {
  event: ChangeEvent;
  type: WatchEventType;
}

export interface WatchFilter {
  resource: string;
  namespace?: string;
  matcher?: Matcher;
}

export interface Watcher {
  filter: WatchFilter;
  deliver(event: ChangeEvent, type: WatchEventType): void;
  /** Ends the watch from the server side (the client sees the stream close). */
  close(): void;
}

function objectKey(namespace: string | undefined, name: string): string {
  return namespace ? `${namespace}/${name}` : name;
}

export function matchesFilter(filter: WatchFilter, resource: string, obj: KubeObject): boolean {
  if (filter.resource !== resource) return false;
  if (filter.namespace && obj.metadata.namespace !== filter.namespace) return false;
  return !filter.matcher || filter.matcher(obj);
}

/**
 * What a watch with this filter sees of a change, as the real server's watch cache decides:
 * an update that brings an object into the selected set is ADDED, one that takes it out is
 * DELETED (carrying the new state), one outside before and after is not sent.
 */
export function eventFor(filter: WatchFilter, ev: ChangeEvent): WatchEventType | undefined {
  if (filter.resource !== ev.resource) return undefined;
  if (filter.namespace && ev.object.metadata.namespace !== filter.namespace) return undefined;
  const m = filter.matcher;
  if (!m) return ev.type;
  const now = m(ev.object);
  if (ev.type !== "MODIFIED" || !ev.previous) return now ? ev.type : undefined;
  const before = m(ev.previous);
  if (now && before) return "MODIFIED";
  if (now) return "ADDED";
  return before ? "DELETED" : undefined;
}

export class ObjectStore {
  private rv: number;
  /** Watches from a resourceVersion below this are expired (410). */
  private compactedRv: number;
  private readonly buckets = new Map<string, Map<string, KubeObject>>();
  private readonly perNamespace = new Map<string, number>();
  private history: ChangeEvent[] = [];
  private readonly watchers = new Set<Watcher>();
  /** Called after every change, before watchers see it (indexes and persistence hook in here). */
  private readonly listeners: Array<(event: ChangeEvent) => void> = [];

  constructor(
    private readonly historyLimit: number,
    initialRv = 0,
  ) {
    this.rv = initialRv;
    this.compactedRv = initialRv;
  }

  currentRv(): number {
    return this.rv;
  }

  oldestWatchableRv(): number {
    return this.compactedRv;
  }

  get(resource: string, namespace: string | undefined, name: string): KubeObject | undefined {
    return this.buckets.get(resource)?.get(objectKey(namespace, name));
  }

  /** Objects of a resource (in one namespace when given), in name order like etcd's key order. */
  list(resource: string, namespace?: string): KubeObject[] {
    const bucket = this.buckets.get(resource);
    if (!bucket) return [];
    const out: KubeObject[] = [];
    for (const obj of bucket.values()) {
      if (!namespace || obj.metadata.namespace === namespace) out.push(obj);
    }
    return out.sort((a, b) => compareKeys(a, b));
  }

  resources(): string[] {
    return [...this.buckets.keys()];
  }

  /** Stores `obj` under a new resourceVersion and notifies watchers. Returns the stored object. */
  put(resource: string, obj: KubeObject, type: "ADDED" | "MODIFIED"): KubeObject {
    const rv = ++this.rv;
    obj.metadata.resourceVersion = String(rv);
    let bucket = this.buckets.get(resource);
    if (!bucket) {
      bucket = new Map();
      this.buckets.set(resource, bucket);
    }
    const key = objectKey(obj.metadata.namespace, obj.metadata.name!);
    const previous = bucket.get(key);
    if (!previous) this.countIn(obj.metadata.namespace, 1);
    bucket.set(key, obj);
    this.record({
      rv,
      type,
      resource,
      object: obj,
      ...(previous && type === "MODIFIED" ? { previous } : {}),
    });
    return obj;
  }

  /** Removes an object; the DELETED event carries the deletion's resourceVersion. */
  remove(resource: string, obj: KubeObject): KubeObject {
    const rv = ++this.rv;
    const gone: KubeObject = { ...obj, metadata: { ...obj.metadata, resourceVersion: String(rv) } };
    if (this.buckets.get(resource)?.delete(objectKey(obj.metadata.namespace, obj.metadata.name!)))
      this.countIn(obj.metadata.namespace, -1);
    this.record({ rv, type: "DELETED", resource, object: gone });
    return gone;
  }

  /** Loads a persisted object as it was, without an event. */
  restore(resource: string, obj: KubeObject): void {
    let bucket = this.buckets.get(resource);
    if (!bucket) {
      bucket = new Map();
      this.buckets.set(resource, bucket);
    }
    const key = objectKey(obj.metadata.namespace, obj.metadata.name!);
    if (!bucket.has(key)) this.countIn(obj.metadata.namespace, 1);
    bucket.set(key, obj);
  }

  /** How many objects (of any resource) live in a namespace: O(1), for namespace deletion. */
  objectsInNamespace(namespace: string): number {
    return this.perNamespace.get(namespace) ?? 0;
  }

  private countIn(namespace: string | undefined, delta: number): void {
    if (!namespace) return;
    const n = (this.perNamespace.get(namespace) ?? 0) + delta;
    if (n === 0) this.perNamespace.delete(namespace);
    else this.perNamespace.set(namespace, n);
  }

  /** Changes after `rv` for a watch, or `undefined` when that version is no longer retained. */
  changesSince(rv: number, filter: WatchFilter): Delivery[] | undefined {
    if (rv < this.compactedRv) return undefined;
    const start = lowerBound(this.history, rv);
    const out: Delivery[] = [];
    for (let i = start; i < this.history.length; i++) {
      const event = this.history[i]!;
      const type = eventFor(filter, event);
      if (type) out.push({ event, type });
    }
    return out;
  }

  subscribe(listener: (event: ChangeEvent) => void): void {
    this.listeners.push(listener);
  }

  addWatcher(w: Watcher): void {
    this.watchers.add(w);
  }

  removeWatcher(w: Watcher): void {
    this.watchers.delete(w);
  }

  watcherCount(): number {
    return this.watchers.size;
  }

  /** Closes every open watch; clients must re-watch (and relist if their version expired). */
  dropWatchers(): number {
    const all = [...this.watchers];
    this.watchers.clear();
    for (const w of all) w.close();
    return all.length;
  }

  /**
   * Forgets the history up to now: any watch from a version issued so far gets 410. The
   * compaction takes a version of its own, so a list made after it returns a version that can
   * be watched again (and an up-to-date watcher's version expires too, which forces a relist).
   */
  compact(): void {
    this.history = [];
    this.rv += 1;
    this.compactedRv = this.rv;
  }

  private record(ev: ChangeEvent): void {
    this.history.push(ev);
    if (this.history.length > this.historyLimit) {
      const dropped = this.history.splice(0, this.history.length - this.historyLimit);
      this.compactedRv = dropped[dropped.length - 1]!.rv;
    }
    for (const l of this.listeners) l(ev);
    for (const w of this.watchers) {
      const type = eventFor(w.filter, ev);
      if (type) w.deliver(ev, type);
    }
  }
}

function compareKeys(a: KubeObject, b: KubeObject): number {
  const ka = objectKey(a.metadata.namespace, a.metadata.name!);
  const kb = objectKey(b.metadata.namespace, b.metadata.name!);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

/** Index of the first event with rv > `rv` (history is sorted by rv). */
function lowerBound(history: ChangeEvent[], rv: number): number {
  let lo = 0;
  let hi = history.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (history[mid]!.rv <= rv) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
