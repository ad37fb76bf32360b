/**
 * A Kubernetes API client on @kubernetes/client-node: its `KubeConfig` (every auth method it
 * supports), its HTTP pipeline (`RequestContext` + `IsomorphicFetchHttpLibrary`) and its
 * `Watch`. On top: explicit resource addressing (no discovery calls), the `/status`
 * subresource, server-side apply with Spillway's field manager, delete preconditions, a
 * client-side token bucket and request accounting. One client per cluster (management or
 * remote); build remote ones from a kubeconfig string with `KubeClient.fromKubeconfig`.
 */
import {
  HttpMethod,
  IsomorphicFetchHttpLibrary,
  type KubeConfig,
  PatchStrategy,
  RequestContext,
  Watch,
} from "@kubernetes/client-node";
import { type Clock, realClock } from "./clock.ts";
import { PooledKubeConfig } from "./kubeconfig.ts";
import { DEFAULT_RATE_LIMIT, type RateLimitOptions, TokenBucket } from "./ratelimit.ts";
import {
  apiVersionOf,
  type KubeList,
  type KubeObject,
  type ResourceType,
  resourcePath,
} from "./resources.ts";

/** The field manager of every server-side apply the operator makes. */
export const FIELD_MANAGER = "spillway-operator";

export type Verb = "get" | "list" | "watch" | "create" | "update" | "patch" | "delete";

export type PatchType = "merge" | "json" | "strategic" | "apply";
const PATCH_CONTENT_TYPE: Record<PatchType, string> = {
  merge: PatchStrategy.MergePatch,
  json: PatchStrategy.JsonPatch,
  strategic: PatchStrategy.StrategicMergePatch,
  apply: PatchStrategy.ServerSideApply,
};

/** A `metav1.Status` as the API server returns it on errors. */
export interface KubeStatus {
  kind?: string;
  status?: string;
  message?: string;
  reason?: string;
  code?: number;
  details?: unknown;
}

export class ApiError extends Error {
  constructor(
    readonly statusCode: number,
    readonly reason: string,
    message: string,
    readonly status?: KubeStatus,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

export const isNotFound = (e: unknown): boolean => e instanceof ApiError && e.statusCode === 404;
export const isConflict = (e: unknown): boolean => e instanceof ApiError && e.statusCode === 409;
export const isAlreadyExists = (e: unknown): boolean =>
  e instanceof ApiError && e.statusCode === 409 && e.reason === "AlreadyExists";
export const isGone = (e: unknown): boolean => e instanceof ApiError && e.statusCode === 410;

/** Counts of API requests a client made (benchmarks report requests per run from these). */
export class RequestStats {
  total = 0;
  readonly byVerb = new Map<string, number>();
  readonly byResource = new Map<string, number>();
  /** Time spent waiting on the client-side rate limiter, ms. */
  throttledMs = 0;

  record(verb: Verb, resource: string): void {
    this.total++;
    this.byVerb.set(verb, (this.byVerb.get(verb) ?? 0) + 1);
    this.byResource.set(resource, (this.byResource.get(resource) ?? 0) + 1);
  }

  snapshot(): { total: number; byVerb: Record<string, number>; byResource: Record<string, number> } {
    return {
      total: this.total,
      byVerb: Object.fromEntries(this.byVerb),
      byResource: Object.fromEntries(this.byResource),
    };
  }
}

export interface ClientOptions {
  /** Label for metrics and logs (e.g. `management`, a provider name). */
  cluster?: string;
  rateLimit?: Partial<RateLimitOptions>;
  clock?: Clock;
  /** Called after every request (the manager wires this to the API-requests metric). */
  onRequest?: (cluster: string, verb: Verb, code: number, resource: string) => void;
}

export interface ListOptions {
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  limit?: number;
  continue?: string;
  resourceVersion?: string;
}

export interface WatchOptions {
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  resourceVersion?: string;
  timeoutSeconds?: number;
  allowWatchBookmarks?: boolean;
}

export interface WatchEvent<T> {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: T;
}

export interface DeleteOptions {
  /** Delete only the object with this uid (guards against a same-name replacement). */
  uid?: string;
  /** Delete only this version (optimistic concurrency). */
  resourceVersion?: string;
  propagationPolicy?: "Foreground" | "Background" | "Orphan";
  gracePeriodSeconds?: number;
}

export interface PatchOptions {
  subresource?: string;
  fieldManager?: string;
  force?: boolean;
}

type Query = Record<string, string | number | boolean | undefined>;

export class KubeClient {
  readonly kubeConfig: KubeConfig;
  readonly cluster: string;
  readonly stats = new RequestStats();
  readonly limiter: TokenBucket;
  private readonly http = new IsomorphicFetchHttpLibrary();
  private readonly server: string;
  private readonly clock: Clock;
  private readonly onRequest: ClientOptions["onRequest"];
  private dispatcher?: ReturnType<RequestContext["getDispatcher"]>;

  /** A client for the cluster of a kubeconfig document (YAML or JSON text). */
  static fromKubeconfig(text: string, opts: ClientOptions = {}): KubeClient {
    const kc = new PooledKubeConfig();
    kc.loadFromString(text);
    return new KubeClient(kc, opts);
  }

  /** A client for the ambient cluster: $KUBECONFIG, ~/.kube/config or in-cluster. */
  static fromDefault(opts: ClientOptions = {}): KubeClient {
    const kc = new PooledKubeConfig();
    kc.loadFromDefault();
    return new KubeClient(kc, opts);
  }

  constructor(kc: KubeConfig, opts: ClientOptions = {}) {
    this.kubeConfig = kc;
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error("kubeconfig has no current cluster");
    this.server = cluster.server.replace(/\/+$/, "");
    this.cluster = opts.cluster ?? cluster.name;
    this.clock = opts.clock ?? realClock;
    this.limiter = new TokenBucket({ ...DEFAULT_RATE_LIMIT, ...opts.rateLimit }, this.clock);
    this.onRequest = opts.onRequest;
  }

  async get<T extends KubeObject>(r: ResourceType, name: string, namespace?: string): Promise<T> {
    return this.request<T>("get", r, HttpMethod.GET, resourcePath(r, namespace, name));
  }

  /** `get`, but `undefined` instead of a 404. */
  async tryGet<T extends KubeObject>(
    r: ResourceType,
    name: string,
    namespace?: string,
  ): Promise<T | undefined> {
    try {
      return await this.get<T>(r, name, namespace);
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  async list<T extends KubeObject>(r: ResourceType, opts: ListOptions = {}): Promise<KubeList<T>> {
    const { namespace, ...query } = opts;
    return this.request<KubeList<T>>("list", r, HttpMethod.GET, resourcePath(r, namespace), { query });
  }

  /** Every page of a list, with the resourceVersion of the first page (a consistent snapshot). */
  async listAll<T extends KubeObject>(r: ResourceType, opts: ListOptions = {}): Promise<KubeList<T>> {
    const first = await this.list<T>(r, { limit: 500, ...opts });
    const items = [...first.items];
    let cont = first.metadata?.continue;
    while (cont) {
      const page = await this.list<T>(r, { limit: 500, ...opts, continue: cont });
      items.push(...page.items);
      cont = page.metadata?.continue;
    }
    return { ...first, metadata: { resourceVersion: first.metadata?.resourceVersion }, items };
  }

  async create<T extends KubeObject>(r: ResourceType, obj: T): Promise<T> {
    const body = withTypeMeta(r, obj);
    return this.request<T>("create", r, HttpMethod.POST, resourcePath(r, obj.metadata.namespace), { body });
  }

  /** PUT of the whole object; `metadata.resourceVersion` makes it conditional. */
  async update<T extends KubeObject>(r: ResourceType, obj: T): Promise<T> {
    const path = resourcePath(r, obj.metadata.namespace, requireName(obj));
    return this.request<T>("update", r, HttpMethod.PUT, path, { body: withTypeMeta(r, obj) });
  }

  /** PUT to the `/status` subresource (spec changes in `obj` are ignored by the server). */
  async updateStatus<T extends KubeObject>(r: ResourceType, obj: T): Promise<T> {
    const path = resourcePath(r, obj.metadata.namespace, requireName(obj), "status");
    return this.request<T>("update", r, HttpMethod.PUT, path, { body: withTypeMeta(r, obj) });
  }

  async patch<T extends KubeObject>(
    r: ResourceType,
    name: string,
    namespace: string | undefined,
    patch: unknown,
    type: PatchType = "merge",
    opts: PatchOptions = {},
  ): Promise<T> {
    const query: Query = {};
    const fieldManager = opts.fieldManager ?? (type === "apply" ? FIELD_MANAGER : undefined);
    if (fieldManager) query.fieldManager = fieldManager;
    if (type === "apply" && opts.force !== false) query.force = true;
    const path = resourcePath(r, namespace, name, opts.subresource);
    return this.request<T>("patch", r, HttpMethod.PATCH, path, {
      query,
      body: patch,
      contentType: PATCH_CONTENT_TYPE[type],
    });
  }

  /**
   * Server-side apply of `obj` (its fields become owned by `spillway-operator`). Conflicts
   * with other managers are forced by default, as controllers own what they apply.
   */
  async apply<T extends KubeObject>(r: ResourceType, obj: T, opts: PatchOptions = {}): Promise<T> {
    return this.patch<T>(r, requireName(obj), obj.metadata.namespace, withTypeMeta(r, obj), "apply", opts);
  }

  async delete(r: ResourceType, name: string, namespace?: string, opts: DeleteOptions = {}): Promise<void> {
    const body: Record<string, unknown> = { apiVersion: "v1", kind: "DeleteOptions" };
    if (opts.uid || opts.resourceVersion) {
      body.preconditions = {
        ...(opts.uid ? { uid: opts.uid } : {}),
        ...(opts.resourceVersion ? { resourceVersion: opts.resourceVersion } : {}),
      };
    }
    if (opts.propagationPolicy) body.propagationPolicy = opts.propagationPolicy;
    if (opts.gracePeriodSeconds !== undefined) body.gracePeriodSeconds = opts.gracePeriodSeconds;
    await this.request("delete", r, HttpMethod.DELETE, resourcePath(r, namespace, name), { body });
  }

  /**
   * Streams watch events until the server closes the watch (resolves) or it fails
   * (rejects: an `ApiError` for HTTP errors, a `TimeoutError` after 30 s without data).
   * Aborting `signal` ends it quietly.
   */
  async watch<T extends KubeObject>(
    r: ResourceType,
    opts: WatchOptions,
    onEvent: (event: WatchEvent<T>) => void,
    signal?: AbortSignal,
  ): Promise<void> {
    const { namespace, ...query } = opts;
    await this.throttle(signal);
    // Aborted before the request went out (an informer stopped right after its list): no
    // watch at all. Started anyway, its abort listener would never fire and the stop would
    // wait for the server's first byte.
    if (signal?.aborted) return;
    this.stats.record("watch", r.plural);
    const w = new Watch(this.kubeConfig);
    let controller: AbortController | undefined;
    let answered = false;
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => controller?.abort();
      signal?.addEventListener("abort", onAbort, { once: true });
      const finish = (err: unknown) => {
        signal?.removeEventListener("abort", onAbort);
        if (signal?.aborted) return resolve();
        if (!err) {
          // A normal close by the server (its timeout): it was there.
          if (!answered) this.onRequest?.(this.cluster, "watch", 200, r.plural);
          return resolve();
        }
        const code = (err as { statusCode?: unknown }).statusCode;
        if (typeof code === "number") {
          this.onRequest?.(this.cluster, "watch", code, r.plural);
          reject(new ApiError(code, "", `watch ${r.plural}: ${(err as Error).message}`));
        } else {
          // No HTTP answer (refused, reset): code 0 for reachability tracking.
          this.onRequest?.(this.cluster, "watch", 0, r.plural);
          reject(err);
        }
      };
      w.watch(
        resourcePath(r, namespace),
        query,
        (type, object) => {
          // The server is answering: the first event (a bookmark at least) counts as a success.
          if (!answered) {
            answered = true;
            this.onRequest?.(this.cluster, "watch", 200, r.plural);
          }
          onEvent({ type: type as WatchEvent<T>["type"], object: object as T });
        },
        finish,
      ).then((c) => {
        controller = c;
        if (signal?.aborted) c.abort();
      }, finish);
    });
  }

  private async throttle(signal?: AbortSignal): Promise<void> {
    const wait = this.limiter.reserve();
    if (wait > 0) {
      this.stats.throttledMs += wait;
      await new Promise<void>((resolve) => {
        const t = this.clock.setTimer(resolve, wait);
        signal?.addEventListener(
          "abort",
          () => {
            t.cancel();
            resolve();
          },
          { once: true },
        );
      });
    }
  }

  /** One REST call through client-node's HTTP pipeline; JSON in, JSON out. */
  async request<T>(
    verb: Verb,
    r: ResourceType,
    method: HttpMethod,
    path: string,
    opts: { query?: Query; body?: unknown; contentType?: string; signal?: AbortSignal } = {},
  ): Promise<T> {
    await this.throttle(opts.signal);
    const url = new URL(this.server + path);
    for (const [k, v] of Object.entries(opts.query ?? {}))
      if (v !== undefined) url.searchParams.set(k, String(v));
    const ctx = new RequestContext(url.toString(), method);
    ctx.setHeaderParam("Accept", "application/json");
    if (opts.body !== undefined) {
      ctx.setHeaderParam("Content-Type", opts.contentType ?? "application/json");
      ctx.setBody(JSON.stringify(opts.body));
    }
    if (opts.signal) ctx.setSignal(opts.signal);
    await this.kubeConfig.applySecurityAuthentication(ctx);
    // One dispatcher per client (see PooledKubeConfig): a KubeConfig handed in from outside
    // may be a plain one, so the pooling is done here too.
    const dispatcher = ctx.getDispatcher();
    if (dispatcher) {
      if (this.dispatcher) ctx.setDispatcher(this.dispatcher);
      else this.dispatcher = dispatcher;
    }
    this.stats.record(verb, r.plural);
    let resp: Awaited<ReturnType<ReturnType<typeof this.http.send>["toPromise"]>>;
    try {
      resp = await this.http.send(ctx).toPromise();
    } catch (err) {
      // No answer at all (refused, reset, timed out): code 0, so reachability tracking sees it.
      if (!opts.signal?.aborted) this.onRequest?.(this.cluster, verb, 0, r.plural);
      throw err;
    }
    this.onRequest?.(this.cluster, verb, resp.httpStatusCode, r.plural);
    const text = await resp.body.text();
    let data: unknown;
    try {
      data = text ? JSON.parse(text) : undefined;
    } catch {
      data = undefined;
    }
    if (resp.httpStatusCode >= 200 && resp.httpStatusCode < 300) return data as T;
    const status = (data && typeof data === "object" ? data : {}) as KubeStatus;
    throw new ApiError(
      resp.httpStatusCode,
      status.reason ?? "",
      `${method} ${path}: ${resp.httpStatusCode} ${status.message ?? text.slice(0, 200)}`,
      status,
    );
  }
}

function requireName(obj: KubeObject): string {
  if (!obj.metadata.name) throw new Error("object has no metadata.name");
  return obj.metadata.name;
}

function withTypeMeta<T extends KubeObject>(r: ResourceType, obj: T): T {
  return { ...obj, apiVersion: obj.apiVersion ?? apiVersionOf(r), kind: obj.kind ?? r.kind };
}
