/**
 * The HTTP transport of the stores' own requests (S3ObjectHttp, AzureBlobHttp): node:http or
 * node:https for the endpoint's protocol, one keep-alive agent per store, and one function
 * that sends a request and resolves when its response headers arrive.
 *
 * node:http and node:https are taken with `process.getBuiltinModule` when a store is built,
 * not `import`ed: an ESM import of a built-in module builds its ESM facade, which reads every
 * export — and node:http's `WebSocket`, `CloseEvent` and `MessageEvent` are getters that load
 * Node's bundled undici (fetch, WebSocket, HTTP/2 client): 50–55 ms of CPU against 4–5 for
 * the module itself (Node 24.21), on the path to a sync's first request. node:https (it loads
 * tls, ≈ 19 ms) only for an https endpoint.
 */
import type { Agent, ClientRequest, IncomingMessage, OutgoingHttpHeaders, RequestOptions } from "node:http";
import type { Readable } from "node:stream";
import { SPILLWAY_VERSION } from "../version.ts";
import { abortError, onAbort } from "./abort.ts";

/**
 * The User-Agent of every request Spillway's stores send themselves (the SDKs send their own):
 * a store's access log tells Spillway's requests, and which version sent them, from others'.
 */
export const USER_AGENT = `spillway/${SPILLWAY_VERSION} (node/${process.versions.node}; ${process.platform})`;

export interface Transport {
  readonly secure: boolean;
  readonly agent: Agent;
  readonly request: (options: RequestOptions) => ClientRequest;
}

const PROXY_VARIABLES = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] as const;

/**
 * The transport for `endpoint`'s protocol, with a keep-alive agent of `maxSockets`.
 *
 * A proxy in the environment (HTTPS_PROXY / HTTP_PROXY, NO_PROXY honoured) is used as curl,
 * rclone and the Azure SDK use it: the agent gets Node's own proxy support (`proxyEnv`, Node
 * ≥ 24.5: a CONNECT tunnel for https, absolute-form requests for http). Without one the agent
 * connects directly, as before (no proxy lookup per request).
 */
export function transport(
  endpoint: URL,
  maxSockets: number,
  env: NodeJS.ProcessEnv = process.env,
): Transport {
  const secure = endpoint.protocol === "https:";
  const m = secure ? process.getBuiltinModule("node:https") : process.getBuiltinModule("node:http");
  const proxied = PROXY_VARIABLES.some((v) => env[v]);
  const agent = new m.Agent({ keepAlive: true, maxSockets, ...(proxied ? { proxyEnv: env } : {}) });
  return { secure, agent, request: m.request };
}

export interface SendOptions {
  method: string;
  hostname: string;
  port: number | undefined;
  /** Path and query, encoded. */
  path: string;
  headers: OutgoingHttpHeaders;
  /** Sent as is; a stream is piped, and its failure fails the request. */
  body?: Uint8Array | Readable;
  signal?: AbortSignal;
  /** Socket idle time that fails the request with `timeoutError()`. */
  timeoutMs: number;
  timeoutError: () => Error;
}

/**
 * Sends one request; resolves with the response once its headers arrived (unread), rejects
 * with the request's error. A stream body that fails destroys the request with its error
 * (nothing half-sent becomes visible: the store sees a short body against its Content-Length
 * and discards it).
 */
export function send(t: Transport, o: SendOptions): Promise<IncomingMessage> {
  return new Promise<IncomingMessage>((resolve, reject) => {
    o.signal?.throwIfAborted();
    const req = t.request({
      method: o.method,
      hostname: o.hostname,
      ...(o.port !== undefined ? { port: o.port } : {}),
      path: o.path,
      headers: { "user-agent": USER_AGENT, ...o.headers },
      agent: t.agent,
    });
    // Not node:http's `signal` option: see `onAbort`.
    const signal = o.signal;
    if (signal)
      req.once(
        "close",
        onAbort(signal, () => req.destroy(abortError(signal))),
      );
    req.setTimeout(o.timeoutMs, () => req.destroy(o.timeoutError()));
    req.once("response", resolve);
    // `on`, not `once`: a stream body may still fail the request after the response arrived
    // (an early error answer), and a second 'error' without a listener would be thrown.
    req.on("error", reject);
    const body = o.body;
    if (body === undefined) req.end();
    else if (body instanceof Uint8Array) req.end(body);
    else {
      body.once("error", (e) => req.destroy(e));
      body.pipe(req);
    }
  });
}

/**
 * The body of a failed response, as text: error documents are small, and one that is not is
 * read only up to 64 KiB. Throws an AbortError when `signal` aborted the read.
 */
export async function errorText(response: IncomingMessage, signal: AbortSignal | undefined): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const c of response as AsyncIterable<Buffer>) {
      if (n < 64 * 1024) chunks.push(c);
      n += c.length;
    }
  } catch {
    if (signal?.aborted) throw Object.assign(new Error("aborted"), { name: "AbortError" });
  }
  return Buffer.concat(chunks).toString("utf8");
}
