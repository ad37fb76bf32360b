/**
 * Watch streams: newline-delimited JSON `{"type", "object"}` events over a chunked response,
 * as the real server sends them. A watch without a resourceVersion (or with "0") starts with
 * synthetic ADDED events for what exists; a watch from a version resumes from the store's
 * history, or gets one ERROR event carrying a 410 `Expired` Status when that version is no
 * longer retained (the client relists). Bookmarks are sent when asked for, the stream ends
 * after `timeoutSeconds`, and the server can close every stream at once (shutdown, forced
 * expiry).
 */
import type { ServerResponse } from "node:http";
import type { Cluster, OpContext } from "./cluster.ts";
import { errors } from "./errors.ts";
import { both, parseFieldSelector, parseLabelSelector } from "./selectors.ts";
import type { ChangeEvent, WatchEventType, Watcher, WatchFilter } from "./store.ts";
import { apiVersionOf, type KubeObject, resourceKey } from "./types.ts";

/** Renders an object for the stream (as a Table row, as metadata only); none: the object itself. */
export type EventRenderer = (obj: KubeObject, first: boolean) => unknown;

/** Serialized events of plain watches, by event type and version, shared by their watchers. */
const lineCache = new WeakMap<ChangeEvent, Map<string, string>>();

export interface WatchOptions {
  bookmarkIntervalMs: number;
  /** A consumer this far behind is cut off (the real server drops slow watchers too). */
  maxBufferedBytes: number;
}

/** Every open watch stream of one server, so they can be ended together. */
export class WatchHub {
  private readonly open = new Set<Watcher>();

  add(w: Watcher): void {
    this.open.add(w);
  }

  delete(w: Watcher): void {
    this.open.delete(w);
  }

  size(): number {
    return this.open.size;
  }

  closeAll(): void {
    for (const w of [...this.open]) w.close();
  }
}

export function serveWatch(
  cluster: Cluster,
  hub: WatchHub,
  ctx: OpContext,
  res: ServerResponse,
  render: EventRenderer | undefined,
  opts: WatchOptions,
): void {
  const plain = render === undefined;
  const q = ctx.query;
  const filter: WatchFilter = {
    resource: resourceKey(ctx.rt),
    namespace: ctx.namespace,
    matcher: both(parseLabelSelector(q.get("labelSelector")), parseFieldSelector(q.get("fieldSelector"))),
  };
  const store = cluster.store;
  const rvParam = q.get("resourceVersion") ?? "";
  const sendInitial = q.get("sendInitialEvents") === "true";
  const bookmarks = q.get("allowWatchBookmarks") === "true" || q.get("allowWatchBookmarks") === "1";
  let since: number | undefined;
  if (rvParam !== "" && rvParam !== "0") {
    since = Number(rvParam);
    if (!Number.isInteger(since) || since < 0)
      throw errors.badRequest(`invalid resource version: ${JSON.stringify(rvParam)}`);
  }

  res.writeHead(200, {
    "Content-Type": "application/json",
    "Cache-Control": "no-cache, private",
    "Transfer-Encoding": "chunked",
  });
  res.flushHeaders();

  let first = true;
  let closed = false;
  const writeLine = (line: string): void => {
    if (closed) return;
    res.write(line);
    if (res.writableLength > opts.maxBufferedBytes) watcher.close();
  };
  const write = (type: string, object: unknown): void => writeLine(`${JSON.stringify({ type, object })}\n`);
  const present = (obj: KubeObject) => {
    const presented = cluster.present(ctx.rt, ctx.version, obj);
    const out = render ? render(presented, first) : presented;
    first = false;
    return out;
  };
  const bookmark = (extra?: Record<string, string>): void =>
    write("BOOKMARK", {
      kind: ctx.rt.kind,
      apiVersion: apiVersionOf(ctx.rt.group, ctx.version),
      metadata: {
        resourceVersion: String(store.currentRv()),
        ...(extra ? { annotations: extra } : {}),
      },
    });

  const timers: NodeJS.Timeout[] = [];
  const watcher: Watcher = {
    filter,
    deliver(ev: ChangeEvent, type: WatchEventType) {
      if (!plain) {
        write(type, present(ev.object));
        return;
      }
      // Plain watches of one version share the serialized event: n watchers, one stringify.
      let byKey = lineCache.get(ev);
      if (!byKey) {
        byKey = new Map();
        lineCache.set(ev, byKey);
      }
      const key = `${type} ${ctx.version}`;
      let line = byKey.get(key);
      if (line === undefined) {
        line = `${JSON.stringify({ type, object: cluster.present(ctx.rt, ctx.version, ev.object) })}\n`;
        byKey.set(key, line);
      }
      writeLine(line);
    },
    close() {
      if (closed) return;
      closed = true;
      for (const t of timers) clearTimeout(t);
      store.removeWatcher(watcher);
      hub.delete(watcher);
      res.end();
    },
  };
  res.on("close", () => watcher.close());

  // Replay and subscription happen in the same tick: no change can fall between them.
  if (since === undefined) {
    for (const obj of cluster.list({ ...ctx, query: selectorsOnly(q) }).items) write("ADDED", present(obj));
    if (sendInitial && bookmarks) bookmark({ "k8s.io/initial-events-end": "true" });
  } else {
    const changes = store.changesSince(since, filter);
    if (changes === undefined) {
      write(
        "ERROR",
        errors.gone(`too old resource version: ${since} (${store.oldestWatchableRv()})`).toStatus(),
      );
      watcher.close();
      return;
    }
    for (const { event, type } of changes) watcher.deliver(event, type);
  }
  // A client too slow for the replay was already cut off: nothing to subscribe.
  if (closed) return;
  store.addWatcher(watcher);
  hub.add(watcher);

  if (bookmarks && opts.bookmarkIntervalMs > 0) {
    const tick = (): void => {
      bookmark();
      timers[0] = setTimeout(tick, opts.bookmarkIntervalMs);
    };
    timers[0] = setTimeout(tick, opts.bookmarkIntervalMs);
  }
  const timeout = Number(q.get("timeoutSeconds") ?? 0);
  if (timeout > 0) timers[1] = setTimeout(() => watcher.close(), timeout * 1000);
}

function selectorsOnly(q: URLSearchParams): URLSearchParams {
  const out = new URLSearchParams();
  for (const k of ["labelSelector", "fieldSelector"]) {
    const v = q.get(k);
    if (v) out.set(k, v);
  }
  return out;
}
