/**
 * One sandbox API server: the storage core (`Cluster`) behind a node:http server on
 * 127.0.0.1, with its kubeconfig, optional persistence under a state directory, and a clean
 * shutdown (watches ended, sockets closed, state flushed). Several can run in one process:
 * nothing here is global.
 */

import { writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { Cluster } from "./cluster.ts";
import { CRD_RESOURCE, resourceFromCrd } from "./crds.ts";
import { type HttpContext, handleRequest } from "./http.ts";
import { renderKubeconfig } from "./kubeconfig.ts";
import { newOpenApiCache } from "./openapi.ts";
import { loadState, Persistence } from "./persist.ts";
import { ResourceRegistry } from "./registry.ts";
import { ObjectStore } from "./store.ts";
import { type KubeObject, resourceKey } from "./types.ts";
import { WatchHub } from "./watch.ts";

export interface ApiServerOptions {
  /** Names the kubeconfig's cluster, user and context. */
  name: string;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0: a free port. */
  port?: number;
  /** When set, objects are loaded from and saved under this directory. */
  stateDir?: string;
  /** When set, requests must carry this bearer token (the kubeconfig carries it). */
  token?: string;
  /**
   * How many changes watches can resume from; older versions get 410 Gone. Default 20,000
   * (bounds the memory a long-running sandbox spends on old object versions).
   */
  historyLimit?: number;
  /** Period of BOOKMARK events on watches that allow them. Default 15 s. */
  bookmarkIntervalMs?: number;
  /** Called once per request when it completes: `METHOD path?query status` (an access log). */
  accessLog?: (line: string) => void;
}

export interface ApiServer {
  readonly name: string;
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  /** The storage core, for in-process callers (simulated nodes, tests). */
  readonly cluster: Cluster;
  kubeconfig(): string;
  writeKubeconfig(path: string): Promise<void>;
  /**
   * Forgets the change history and ends every open watch: each client re-watches from its
   * last version, gets 410 Gone, and must relist (what an etcd compaction does to a real one).
   */
  expireWatches(): void;
  /** Waits until every change so far is on disk (no-op without a state directory). */
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** Namespaces a fresh cluster has, as a real one does. */
const INITIAL_NAMESPACES = ["default", "kube-system", "kube-public", "kube-node-lease"];

function systemCreate(
  cluster: Cluster,
  group: string,
  version: string,
  plural: string,
  body: KubeObject,
): void {
  const rt = cluster.registry.lookup(group, version, plural)!;
  cluster.create(
    {
      rt,
      version,
      namespace: body.metadata.namespace,
      query: new URLSearchParams(),
      userAgentManager: "spillway-sandbox",
      warnings: [],
    },
    body,
  );
}

async function buildCluster(stateDir: string | undefined, historyLimit: number): Promise<Cluster> {
  const saved = stateDir ? await loadState(stateDir) : { rv: 0, objects: [] };
  const registry = new ResourceRegistry();
  const store = new ObjectStore(historyLimit, saved.rv);
  const cluster = new Cluster(registry, store);
  for (const { resource, object } of saved.objects) {
    store.restore(resource, object);
    if (resource === resourceKey(CRD_RESOURCE) && !object.metadata.deletionTimestamp)
      registry.add(resourceFromCrd(object));
  }
  cluster.gc.reindex();
  for (const ns of INITIAL_NAMESPACES) {
    if (!store.get("/namespaces", undefined, ns))
      systemCreate(cluster, "", "v1", "namespaces", {
        apiVersion: "v1",
        kind: "Namespace",
        metadata: { name: ns },
      });
  }
  return cluster;
}

export async function startApiServer(opts: ApiServerOptions): Promise<ApiServer> {
  const host = opts.host ?? "127.0.0.1";
  const cluster = await buildCluster(opts.stateDir, opts.historyLimit ?? 20_000);
  const persistence = opts.stateDir ? await Persistence.open(opts.stateDir, cluster.store) : undefined;
  const watches = new WatchHub();
  let address = `${host}:${opts.port ?? 0}`;
  const hc: HttpContext = {
    cluster,
    watches,
    openapi: newOpenApiCache(),
    address: () => address,
    token: opts.token,
    bookmarkIntervalMs: opts.bookmarkIntervalMs ?? 15_000,
  };
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    const log = opts.accessLog;
    if (log)
      res.on("finish", () =>
        log(`${req.method} ${req.url} ${res.statusCode} ${req.headers["content-type"] ?? ""}`),
      );
    void handleRequest(hc, req, res);
  });
  server.keepAliveTimeout = 30_000;
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  address = `${host}:${port}`;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
  let closing: Promise<void> | undefined;

  return {
    name: opts.name,
    url,
    cluster,
    kubeconfig: () => renderKubeconfig(opts.name, url, opts.token),
    async writeKubeconfig(path: string) {
      await writeFile(path, renderKubeconfig(opts.name, url, opts.token), { mode: 0o600 });
    },
    expireWatches() {
      cluster.store.compact();
      cluster.store.dropWatchers();
    },
    async flush() {
      await persistence?.flush();
    },
    close() {
      closing ??= (async () => {
        watches.closeAll();
        cluster.store.dropWatchers();
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        for (const s of sockets) s.destroy();
        await closed;
        await persistence?.close();
      })();
      return closing;
    },
  };
}
