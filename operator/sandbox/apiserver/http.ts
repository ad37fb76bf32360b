/**
 * The HTTP surface: routes requests to discovery, OpenAPI, health, and the resource verbs of
 * `Cluster`, and writes responses the way the real server does (Status bodies for errors,
 * `Warning` headers, 201 on create, 202 for a deletion that waits on finalizers, Tables and
 * PartialObjectMetadata on request, watch streams).
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { parse as parseYaml } from "yaml";
import { type Cluster, type OpContext, parseJson } from "./cluster.ts";
import { apiGroup, apiGroupList, apiResourceList, apiVersions } from "./discovery.ts";
import { ApiError, errors } from "./errors.ts";
import { type OpenApiCache, openApiRoot, openApiV3Document } from "./openapi.ts";
import { isPlainObject } from "./patch.ts";
import { decodeProtobuf, isProtobuf } from "./protobuf.ts";
import { includeObjectOf, toTable } from "./table.ts";
import { type JsonObject, type KubeObject, type ResourceType, resourceKey } from "./types.ts";
import { type EventRenderer, serveWatch, type WatchHub } from "./watch.ts";

/** The real server's limit on request bodies (3 MiB). */
const MAX_BODY_BYTES = 3 * 1024 * 1024;

export const SERVER_VERSION = {
  major: "1",
  minor: "32",
  gitVersion: "v1.32.0-spillway-sandbox",
  gitCommit: "0000000000000000000000000000000000000000",
  gitTreeState: "clean",
  buildDate: "2026-01-01T00:00:00Z",
  goVersion: "go1.23.0",
  compiler: "gc",
  platform: "linux/amd64",
};

export interface HttpContext {
  cluster: Cluster;
  watches: WatchHub;
  openapi: OpenApiCache;
  /** `host:port` as clients reach this server. */
  address(): string;
  /** When set, requests must carry `Authorization: Bearer <token>` (health and version excepted). */
  token?: string;
  bookmarkIntervalMs: number;
}

type Responder = (res: ServerResponse) => void;

function json(code: number, body: unknown, warnings: string[] = []): Responder {
  return (res) => {
    const text = JSON.stringify(body);
    const headers: Record<string, string | string[]> = {
      "Content-Type": "application/json",
      "Content-Length": String(Buffer.byteLength(text)),
      "Cache-Control": "no-cache, private",
    };
    // Header values are ASCII: anything else (a unicode field name) is \u-escaped.
    const ascii = (w: string) =>
      JSON.stringify(w).replace(
        /[^\x20-\x7e]/g,
        (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
      );
    if (warnings.length > 0) headers.Warning = warnings.map((w) => `299 - ${ascii(w)}`);
    res.writeHead(code, headers);
    res.end(text);
  };
}

function text(code: number, body: string): Responder {
  return (res) => {
    res.writeHead(code, {
      "Content-Type": "text/plain; charset=utf-8",
      "Content-Length": Buffer.byteLength(body),
    });
    res.end(body);
  };
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (tooLarge) {
        // Discarded so the 413 reaches the client; a client that goes on far past the limit
        // is cut off.
        if (size > 10 * MAX_BODY_BYTES) req.destroy();
        return;
      }
      if (size > MAX_BODY_BYTES) {
        tooLarge = true;
        chunks.length = 0;
        reject(errors.tooLarge(MAX_BODY_BYTES));
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

/** Deepest nesting of objects and arrays in a decoded body, counted without recursion. */
export function nestingDepth(value: unknown): number {
  let max = 0;
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (v === null || typeof v !== "object") continue;
    if (d > max) max = d;
    for (const child of Array.isArray(v) ? v : Object.values(v)) {
      if (child !== null && typeof child === "object") stack.push([child, d + 1]);
    }
  }
  return max;
}

/**
 * Bodies nested deeper than this are refused with 400 before anything walks them (the
 * schema walkers and managed-fields bookkeeping are recursive). Real objects stay far below:
 * a CRD with its whole OpenAPI schema nests about 40 levels.
 */
export const MAX_NESTING = 200;

function decodeBody(raw: Buffer, contentType: string, rt: ResourceType): unknown {
  const decoded = decodeBodyUnchecked(raw, contentType, rt);
  if (nestingDepth(decoded) > MAX_NESTING) {
    throw errors.badRequest(`the object is nested more than ${MAX_NESTING} levels deep`);
  }
  return decoded;
}

function decodeBodyUnchecked(raw: Buffer, contentType: string, rt: ResourceType): unknown {
  if (raw.length === 0) return undefined;
  if (isProtobuf(contentType)) return decodeProtobuf(raw, rt);
  if (/cbor/i.test(contentType)) throw errors.unsupportedMediaType(contentType.split(";")[0]!);
  const body = raw.toString("utf8");
  if (body.trim() === "") return undefined;
  if (/yaml/i.test(contentType)) {
    try {
      return parseYaml(body);
    } catch (e) {
      throw errors.badRequest(`error decoding YAML: ${(e as Error).message.split("\n")[0]}`);
    }
  }
  return parseJson(body);
}

/** `kubectl/v1.32.4 (linux/amd64) …` → `kubectl`, the real server's default field manager. */
function managerFromUserAgent(ua: string | undefined): string {
  return (ua ?? "unknown").split("/")[0]!.slice(0, 128) || "unknown";
}

interface ResourcePath {
  rt: ResourceType;
  namespace?: string;
  name?: string;
  subresource?: string;
}

/** `…/namespaces/{ns}/{plural}[/{name}[/{sub}]]` or `…/{plural}[/{name}[/{sub}]]`. */
function resolveResource(
  cluster: Cluster,
  group: string,
  version: string,
  rest: string[],
): ResourcePath | undefined {
  const reg = cluster.registry;
  if (rest[0] === "namespaces" && rest.length >= 3) {
    const rt = reg.lookup(group, version, rest[2]!);
    if (rt?.namespaced && rest.length <= 5)
      return { rt, namespace: rest[1], name: rest[3], subresource: rest[4] };
  }
  const rt = reg.lookup(group, version, rest[0]!);
  if (!rt || rest.length > 3) return undefined;
  return { rt, name: rest[1], subresource: rest[2] };
}

export async function handleRequest(
  hc: HttpContext,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  try {
    const responder = await route(hc, req, res);
    if (responder) responder(res);
  } catch (e) {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const err = e instanceof ApiError ? e : errors.internal(e instanceof Error ? e.message : String(e));
    json(err.code, err.toStatus())(res);
  }
}

/** Returns how to respond, or nothing when the handler took the response over (watches). */
async function route(
  hc: HttpContext,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<Responder | undefined> {
  const url = new URL(req.url ?? "/", "http://sandbox");
  const segs = url.pathname
    .split("/")
    .filter((s) => s !== "")
    .map(decodeURIComponent);
  const method = req.method ?? "GET";
  const head = segs[0] ?? "";

  if (["healthz", "livez", "readyz"].includes(head)) return text(200, "ok");
  if (head === "version") return json(200, SERVER_VERSION);
  if (hc.token && req.headers.authorization !== `Bearer ${hc.token}`) throw errors.unauthorized();
  if (segs.length === 0)
    return json(200, { paths: ["/api", "/api/v1", "/apis", "/healthz", "/openapi/v3", "/version"] });
  const reg = hc.cluster.registry;

  if (head === "openapi") {
    if (segs[1] !== "v3") throw errors.pathNotFound();
    if (segs.length === 2) return json(200, openApiRoot(hc.openapi, reg));
    const doc = openApiV3Document(hc.openapi, reg, segs.slice(2).join("/"));
    if (!doc) throw errors.pathNotFound();
    return json(200, doc);
  }

  let group: string;
  let version: string;
  let rest: string[];
  if (head === "api") {
    if (segs.length === 1) return json(200, apiVersions(hc.address()));
    group = "";
    version = segs[1]!;
    rest = segs.slice(2);
  } else if (head === "apis") {
    if (segs.length === 1) return json(200, apiGroupList(reg));
    if (segs.length === 2) {
      const g = apiGroup(reg, segs[1]!);
      if (!g) throw errors.pathNotFound();
      return json(200, g);
    }
    group = segs[1]!;
    version = segs[2]!;
    rest = segs.slice(3);
  } else throw errors.pathNotFound();

  if (rest.length === 0) {
    const list = apiResourceList(reg, group, version);
    if (!list) throw errors.pathNotFound();
    return json(200, list);
  }
  const where = resolveResource(hc.cluster, group, version, rest);
  if (!where) throw errors.pathNotFound();
  return serveResource(hc, req, res, url.searchParams, version, where, method);
}

async function serveResource(
  hc: HttpContext,
  req: IncomingMessage,
  res: ServerResponse,
  query: URLSearchParams,
  version: string,
  where: ResourcePath,
  method: string,
): Promise<Responder | undefined> {
  const { rt, namespace, name, subresource } = where;
  if (subresource !== undefined && !(subresource === "status" && rt.statusSubresource))
    throw errors.pathNotFound();
  const ctx: OpContext = {
    rt,
    version,
    namespace,
    name,
    subresource,
    query,
    userAgentManager: managerFromUserAgent(req.headers["user-agent"]),
    warnings: [],
  };
  const cluster = hc.cluster;
  const accept = String(req.headers.accept ?? "");
  const contentType = String(req.headers["content-type"] ?? "");

  if (method === "GET") {
    if (name !== undefined) return present(ctx, accept, cluster.get(ctx), 200);
    if (query.get("watch") === "true" || query.get("watch") === "1") {
      const asTable = /as=Table/.test(accept);
      const metadataOnly = /as=PartialObjectMetadata/.test(accept);
      const includeObject = includeObjectOf(query);
      const render: EventRenderer | undefined = asTable
        ? (obj, first) => toTable(rt, version, [obj], { includeObject, withColumns: first })
        : metadataOnly
          ? (obj) => ({ kind: "PartialObjectMetadata", apiVersion: "meta.k8s.io/v1", metadata: obj.metadata })
          : undefined;
      serveWatch(cluster, hc.watches, ctx, res, render, {
        bookmarkIntervalMs: hc.bookmarkIntervalMs,
        maxBufferedBytes: 256 * 1024 * 1024,
      });
      return undefined;
    }
    const list = cluster.list(ctx);
    if (/as=Table/.test(accept))
      return json(
        200,
        toTable(rt, version, list.items, {
          includeObject: includeObjectOf(query),
          withColumns: true,
          listMeta: list.metadata,
        }),
      );
    if (/as=PartialObjectMetadataList/.test(accept))
      return json(200, {
        kind: "PartialObjectMetadataList",
        apiVersion: "meta.k8s.io/v1",
        metadata: list.metadata,
        items: list.items.map((o) => ({
          kind: "PartialObjectMetadata",
          apiVersion: "meta.k8s.io/v1",
          metadata: o.metadata,
        })),
      });
    return json(200, list);
  }

  const raw = await readBody(req);
  switch (method) {
    case "POST": {
      if (name !== undefined || (rt.namespaced && namespace === undefined)) throw errors.methodNotAllowed();
      const created = cluster.create(ctx, decodeBody(raw, contentType, rt));
      return present(ctx, accept, created, 201);
    }
    case "PUT":
      if (name === undefined) throw errors.methodNotAllowed();
      return present(ctx, accept, cluster.update(ctx, decodeBody(raw, contentType, rt)), 200);
    case "PATCH": {
      if (name === undefined) throw errors.methodNotAllowed();
      // An apply that creates the object answers 201, like a create.
      const existed = cluster.store.get(resourceKey(rt), namespace, name) !== undefined;
      decodeBody(raw, contentType, rt); // the nesting limit holds for patches too
      return present(ctx, accept, cluster.patch(ctx, raw.toString("utf8"), contentType), existed ? 200 : 201);
    }
    case "DELETE": {
      if (subresource !== undefined) throw errors.methodNotAllowed();
      const options = decodeBody(raw, contentType, rt);
      if (name === undefined) return json(200, cluster.deleteCollection(ctx, options), ctx.warnings);
      const result = cluster.delete(ctx, options);
      const bodyDryRun =
        isPlainObject(options) && Array.isArray(options.dryRun) && options.dryRun.includes("All");
      const dryRun = bodyDryRun || query.getAll("dryRun").includes("All");
      const stillThere = cluster.store.get(resourceKey(rt), namespace, name) !== undefined;
      if (stillThere && !dryRun) return json(202, result, ctx.warnings);
      if (dryRun) return json(200, result, ctx.warnings);
      // Gone at once: custom resources return the object, built-in kinds a Success Status.
      if (rt.custom) return json(200, result, ctx.warnings);
      return json(
        200,
        {
          kind: "Status",
          apiVersion: "v1",
          metadata: {},
          status: "Success",
          details: { name, group: rt.group, kind: rt.plural, uid: result.metadata.uid },
        },
        ctx.warnings,
      );
    }
    default:
      throw errors.methodNotAllowed();
  }
}

function present(ctx: OpContext, accept: string, obj: KubeObject, code: number): Responder {
  if (/as=Table/.test(accept)) {
    return json(
      code,
      toTable(ctx.rt, ctx.version, [obj], {
        includeObject: includeObjectOf(ctx.query),
        withColumns: true,
        listMeta: { resourceVersion: obj.metadata.resourceVersion },
      }),
      ctx.warnings,
    );
  }
  if (/as=PartialObjectMetadata/.test(accept)) {
    const meta: JsonObject = {
      kind: "PartialObjectMetadata",
      apiVersion: "meta.k8s.io/v1",
      metadata: obj.metadata,
    };
    return json(code, meta, ctx.warnings);
  }
  return json(code, obj, ctx.warnings);
}
