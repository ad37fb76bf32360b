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
import type { Duplex, Readable } from "node:stream";
import { SPILLWAY_VERSION } from "../version.ts";
import { abortError, onAbort } from "./abort.ts";
import { LentChunks, noteTransientRead } from "./reads.ts";

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
  // A proxied agent keeps Node's own connection path (its proxy tunnel is made there).
  const Agent = proxied || env.SPILLWAY_SOCKET_READ_BUFFER === "0" ? m.Agent : readIntoAgent(m.Agent);
  const agent = new Agent({ keepAlive: true, maxSockets, ...(proxied ? { proxyEnv: env } : {}) });
  return { secure, agent, request: m.request };
}

/** The size of a socket's own read buffer (Node's own reads are 64 KiB too). */
export const SOCKET_READ_BUFFER = 64 * 1024;

/** The read buffer every socket of the stores' agents reads into (allocated on first use). */
let sharedReadBuffer: Buffer | undefined;

/**
 * An agent class whose sockets read into one buffer, reused for every read (net/tls
 * `onread`), instead of a fresh 64 KiB allocation per read — one buffer for every socket of
 * the process: a read is handed on synchronously, on the one event-loop thread, before the next
 * read of any socket starts, so the stores' memory for reads is 64 KiB whatever the number of
 * sockets (a store's agent allows 128, and idle keep-alive sockets would each hold theirs).
 *
 * Why: every byte a sync moves is read from a socket. With Node's default reads each one lands
 * in newly allocated memory, freed only when V8's GC finds its Buffer dead — so a copy of
 * hundreds of MiB makes the allocator's heap grow by tens of MiB of dead read buffers between
 * GCs, and the kernel fault in and zero every new page. Measured (2026-12-07, Node 24.21, 2
 * cores, Azurite): two concurrent 100 MiB GETs, sha256 of every byte, 0.71–0.79 CPU s (user +
 * sys) and 28–34 thousand page faults with Node's reads; 0.52–0.55 CPU s and 24–27 thousand
 * with this buffer (3 runs each; larger buffers, 128 and 256 KiB, measured no better).
 *
 * Why it is safe: the socket's data goes to node:http's response parser, synchronously, as
 * with Node's own reads (a 'data' event of a view of the buffer); the parser copies a
 * response body's bytes into Buffers of their own (`Buffer::Copy` in its on_body) and saves any
 * header bytes it still points at before `execute` returns, so nothing handed on refers to
 * the buffer after the callback. Flow control is unchanged: a paused socket stops reading
 * (`readStop`) in this mode too, and EOF and errors take Node's usual path. The tests send
 * responses split at every byte through it (test/dataplane/transport.test.ts).
 * `SPILLWAY_SOCKET_READ_BUFFER=0` turns it off.
 */
function readIntoAgent(Base: typeof Agent): typeof Agent {
  return class ReadIntoAgent extends Base {
    override createConnection(options: object, callback?: unknown): Duplex | null | undefined {
      sharedReadBuffer ??= Buffer.allocUnsafe(SOCKET_READ_BUFFER);
      const onread = {
        buffer: sharedReadBuffer,
        callback(this: Duplex, n: number, b: Buffer) {
          this.emit("data", b.subarray(0, n));
          noteTransientRead(n);
        },
      };
      // node:http's is net.createConnection, node:https's its own (TLS session reuse); both
      // pass the options on to net/tls connect, which take `onread`.
      return (super.createConnection as (o: object, cb?: unknown) => Duplex | null | undefined)(
        { ...options, onread },
        callback,
      );
    }
  };
}

export interface SendOptions {
  method: string;
  hostname: string;
  port: number | undefined;
  /** Path and query, encoded. */
  path: string;
  headers: OutgoingHttpHeaders;
  /**
   * Sent as is; a stream is piped, lent chunks are written one at a time (`writeLent`); a
   * failing body fails the request.
   */
  body?: Uint8Array | Readable | LentChunks;
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
    else if (body instanceof LentChunks) void writeLent(req, body);
    else {
      body.once("error", (e) => req.destroy(e));
      body.pipe(req);
    }
  });
}

/**
 * Writes lent chunks (`LentChunks`, reads.ts), asking for the next only once the socket has
 * taken the last: a write's callback runs when its bytes left Node (before the request has a
 * socket, when it flushed), after which nothing refers to the chunk. A request that closes
 * first (destroyed, aborted, timed out, or answered early) stops the writing and closes the
 * body's source; a failing source destroys the request with its error, as a stream body does.
 */
async function writeLent(req: ClientRequest, body: LentChunks): Promise<void> {
  try {
    for await (const chunk of body.chunks()) {
      if (req.destroyed) return;
      await new Promise<void>((resolve, reject) => {
        const closed = () => reject(new Error("the request closed before its body was sent"));
        req.once("close", closed);
        req.write(chunk, (e) => {
          req.off("close", closed);
          if (e) reject(e);
          else resolve();
        });
      });
    }
    req.end();
  } catch (e) {
    req.destroy(e as Error);
  }
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
