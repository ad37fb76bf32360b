/**
 * The hot Azure Blob requests — Get Blob (whole, ranged, conditional) and Put Blob (one request,
 * bytes or a stream), one of each per small object in a sync — sent over `node:http(s)` on the
 * store's keep-alive agent, authorised by a SAS in the query. Everything else (listing, Get
 * Blob Properties, blocks, metadata, delete, container checks) stays on the SDK's
 * `ContainerClient` with the store's credential.
 *
 * Why: these two requests went "raw" through the container client's own pipeline already (no
 * operation-spec serialization, no typed header parse), but still through its policies — request
 * id, user agent, a shared-key signature computed per request (canonicalised headers and
 * resource, one HMAC), the pipeline's logging and tracing hooks — and core-rest-pipeline's
 * NodeHttpClient. With a SAS the request is authorised by its query string alone: nothing to
 * compute per request. The measured gain is in the comment where the store chooses this route
 * (`AzureBlobStore.open`).
 *
 * The SAS is a secret: it is only ever the query of the request path handed to node, never part
 * of an error. Node's own errors (ECONNRESET, ECONNREFUSED, invalid header characters, aborts)
 * do not carry the path, and the errors made here carry the operation, the status and the
 * service's error code only.
 */
import type { Agent as HttpAgent, IncomingMessage, OutgoingHttpHeaders } from "node:http";
import { request as httpRequest } from "node:http";
import type { Agent as HttpsAgent } from "node:https";
import { request as httpsRequest } from "node:https";
import type { Readable } from "node:stream";
import {
  ContainerSASPermissions,
  generateBlobSASQueryParameters,
  SASProtocol,
  type StorageSharedKeyCredential,
} from "@azure/storage-blob";

/** A service version every Azure Blob endpoint and Azurite answer (List Blobs has what we read). */
export const AZURE_API_VERSION = "2021-12-02";

/** What a request needs the SAS for: reading a blob, or creating/overwriting one. */
export type SasAccess = "read" | "write";

/** Where the SAS of a request comes from (the token without its leading `?`). */
export interface SasSource {
  token(access: SasAccess): string;
}

/** A SAS the user gave (`sas=` in the URI, the credentials' `sas`, a connection string's): used as is. */
export class GivenSas implements SasSource {
  private readonly sas: string;
  constructor(sas: string) {
    this.sas = sas.replace(/^\?/, "");
  }
  token(): string {
    return this.sas;
  }
}

export interface KeySasOptions {
  /** The clock (ms since the epoch); injectable so tests can move it. */
  now?: () => number;
  /** How long a generated SAS is valid. Default 1 h. */
  lifetimeMs?: number;
  /** A SAS with less than this left is replaced before a request uses it. Default 15 min. */
  refreshMarginMs?: number;
}

/**
 * Service SASes for one container, generated from the account key (the SDK's public
 * `generateBlobSASQueryParameters` with the store's `StorageSharedKeyCredential`), one per
 * access kind and reused until near expiry.
 *
 * Decisions:
 * - Least privilege: reads get `r`, writes `cw` (create a blob, or overwrite one — what Put
 *   Blob needs, conditions included). Nothing here lists, deletes or touches the container; a
 *   leaked token reads or writes blobs of this one container for at most its lifetime.
 * - No start time: a start time stamped from this machine's clock would be refused by a
 *   service whose clock is behind ("not yet valid"); without one the SAS is valid at once.
 * - A short lifetime (1 h), replaced when less than 15 min are left. The service authorises a
 *   request when it arrives, so a request started before expiry — a streamed put of up to
 *   256 MiB included — runs to its end; 15 min is also the clock skew shared-key requests are
 *   allowed, so a clock that far behind the service's still sends valid tokens.
 * - Protocol `https` unless the endpoint is plain http (the emulator), as the store's URI says.
 * - Generated when first needed, then one HMAC per access kind per 45 min — against one HMAC
 *   and a canonicalised request per request with shared-key signing.
 */
export class KeySas implements SasSource {
  private readonly now: () => number;
  private readonly lifetimeMs: number;
  private readonly refreshMarginMs: number;
  private readonly tokens: Partial<Record<SasAccess, { token: string; expiresAt: number }>> = {};

  constructor(
    private readonly containerName: string,
    private readonly credential: StorageSharedKeyCredential,
    private readonly protocol: "https" | "http",
    options: KeySasOptions = {},
  ) {
    this.now = options.now ?? Date.now;
    this.lifetimeMs = options.lifetimeMs ?? 3600_000;
    this.refreshMarginMs = Math.min(options.refreshMarginMs ?? 900_000, this.lifetimeMs / 2);
  }

  token(access: SasAccess): string {
    const now = this.now();
    const held = this.tokens[access];
    if (held && now < held.expiresAt - this.refreshMarginMs) return held.token;
    // The service reads the expiry to the second; rounding down keeps it within the lifetime.
    const expiresAt = Math.floor((now + this.lifetimeMs) / 1000) * 1000;
    const token = generateBlobSASQueryParameters(
      {
        containerName: this.containerName,
        permissions: ContainerSASPermissions.parse(access === "read" ? "r" : "cw"),
        expiresOn: new Date(expiresAt),
        protocol: this.protocol === "https" ? SASProtocol.Https : SASProtocol.HttpsAndHttp,
      },
      this.credential,
    ).toString();
    this.tokens[access] = { token, expiresAt };
    return token;
  }
}

export interface AzureBlobHttpOptions {
  /** `http(s)://host[:port]/[<account>/]<container>`, without a query. */
  containerUrl: string;
  sas: SasSource;
  agents: { http: HttpAgent; https: HttpsAgent };
  /** Socket idle time that fails a request. Default 120 s. */
  requestTimeoutMs?: number;
}

/**
 * A failed request, with the fields of the SDK's RestError that `classifyAzureError` reads —
 * the status and the service's error code (its `x-ms-error-code` header, else the XML body's
 * `<Code>`, where the SDK takes it from too) — so both routes map alike.
 */
export interface AzureHttpError extends Error {
  name: "RestError";
  statusCode: number;
  code: string;
}

/** The SDK's escaping of a blob name in a URL (its `EscapePath`): each segment encoded. */
function escapeBlobPath(name: string): string {
  return name.split("/").map(encodeURIComponent).join("/");
}

export class AzureBlobHttp {
  private readonly secure: boolean;
  private readonly hostname: string;
  private readonly port: number | undefined;
  private readonly base: string;

  constructor(private readonly options: AzureBlobHttpOptions) {
    const url = new URL(options.containerUrl);
    this.secure = url.protocol === "https:";
    // `[::1]` in a URL is `::1` for the socket.
    this.hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
    this.port = url.port ? Number(url.port) : undefined;
    this.base = `${url.pathname.replace(/\/+$/, "")}/`;
  }

  /**
   * Get Blob: the response, unread, once its headers arrived (200, or 206 for a range), or an
   * `AzureHttpError`. `range.end` is exclusive; `ifMatch` is sent as given (quoted etag).
   */
  async getBlob(
    name: string,
    options: { range?: { start: number; end?: number }; ifMatch?: string; signal?: AbortSignal } = {},
  ): Promise<IncomingMessage> {
    const r = options.range;
    const headers: OutgoingHttpHeaders = {
      "x-ms-version": AZURE_API_VERSION,
      ...(r ? { "x-ms-range": `bytes=${r.start}-${r.end !== undefined ? r.end - 1 : ""}` } : {}),
      ...(options.ifMatch ? { "If-Match": options.ifMatch } : {}),
    };
    const response = await this.send("GET", name, "read", headers, undefined, options.signal);
    const status = response.statusCode ?? 0;
    if (status === 200 || status === 206) return response;
    throw await errorOf("Get Blob", response, status, options.signal);
  }

  /**
   * Put Blob (a block blob in one request): `body` as given (bytes, or a stream of exactly
   * `size` bytes), with `headers` (the caller's Content-MD5, `x-ms-blob-content-md5`,
   * `x-ms-meta-*`, `x-ms-blob-content-type`, If-Match/If-None-Match). Resolves with the
   * response's ETag and Content-MD5 (base64). A stream body that fails mid-way aborts the
   * request and rejects with the stream's error (`sendingStream`): the service discards a
   * short body, so nothing becomes visible.
   */
  async putBlob(
    name: string,
    body: Uint8Array | Readable,
    size: number,
    headers: Record<string, string>,
    signal?: AbortSignal,
  ): Promise<{ etag: string; contentMD5: string | undefined }> {
    const all: OutgoingHttpHeaders = {
      "x-ms-version": AZURE_API_VERSION,
      "x-ms-blob-type": "BlockBlob",
      // The request's own type, as the SDK sends it; the blob's is x-ms-blob-content-type.
      "Content-Type": "application/octet-stream",
      "Content-Length": String(size),
      ...headers,
    };
    const response =
      body instanceof Uint8Array
        ? await this.send("PUT", name, "write", all, body, signal)
        : await sendingStream(body, signal, (s) => this.send("PUT", name, "write", all, body, s));
    const status = response.statusCode ?? 0;
    if (status !== 201) throw await errorOf("Put Blob", response, status, signal);
    response.resume();
    const etag = response.headers.etag;
    const md5 = response.headers["content-md5"];
    return {
      etag: typeof etag === "string" ? etag : "",
      contentMD5: typeof md5 === "string" ? md5 : undefined,
    };
  }

  /** One request; resolves with the response once its headers arrived, whatever its status. */
  private send(
    method: "GET" | "PUT",
    name: string,
    access: SasAccess,
    headers: OutgoingHttpHeaders,
    body: Uint8Array | Readable | undefined,
    signal: AbortSignal | undefined,
  ): Promise<IncomingMessage> {
    return new Promise<IncomingMessage>((resolve, reject) => {
      signal?.throwIfAborted();
      const req = (this.secure ? httpsRequest : httpRequest)({
        method,
        hostname: this.hostname,
        ...(this.port !== undefined ? { port: this.port } : {}),
        // The only place the SAS goes: the request line, never an error.
        path: `${this.base}${escapeBlobPath(name)}?${this.options.sas.token(access)}`,
        headers,
        agent: this.secure ? this.options.agents.https : this.options.agents.http,
        ...(signal ? { signal } : {}),
      });
      req.setTimeout(this.options.requestTimeoutMs ?? 120_000, () =>
        // ETIMEDOUT: `classifyAzureError` maps it Transient, as a socket timeout.
        req.destroy(Object.assign(new Error(`${method} timed out`), { code: "ETIMEDOUT" })),
      );
      req.once("response", resolve);
      // `on`, not `once`: a stream body may still fail the request after the response arrived
      // (an early error answer), and a second 'error' without a listener would be thrown.
      req.on("error", reject);
      if (body === undefined) req.end();
      else if (body instanceof Uint8Array) req.end(body);
      else body.pipe(req);
    });
  }
}

/**
 * Runs `send` with a signal that aborts when `body` fails (or `signal` does); a failed body
 * rejects with the body's own error. An HTTP client piping a stream body into a request does
 * not end the request when the stream fails: aborting sends a short body the service discards,
 * and the put fails at once instead of waiting for bytes that never come. (No AbortSignal.any:
 * one dependent signal per object of a long sync, tied to the sync's signal.)
 */
export async function sendingStream<T>(
  body: Readable,
  signal: AbortSignal | undefined,
  send: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const controller = new AbortController();
  let error: unknown;
  // Left attached: a body failing after the request ended has a listener, as it had here.
  body.once("error", (e) => {
    error ??= e;
    controller.abort();
  });
  const onAbort = () => controller.abort(signal?.reason);
  if (signal?.aborted) onAbort();
  else signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const result = await send(controller.signal);
    if (error !== undefined) throw error;
    return result;
  } catch (e) {
    throw error ?? e;
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
}

/** The error a failed response describes: the operation, the status and the service's code. */
async function errorOf(
  what: string,
  response: IncomingMessage,
  status: number,
  signal: AbortSignal | undefined,
): Promise<AzureHttpError> {
  let text = "";
  try {
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of response as AsyncIterable<Buffer>) {
      // Error documents are small; a huge one is not read whole.
      if (n < 64 * 1024) chunks.push(c);
      n += c.length;
    }
    text = Buffer.concat(chunks).toString("utf8");
  } catch {
    if (signal?.aborted) throw Object.assign(new Error(`${what}: aborted`), { name: "AbortError" });
  }
  const header = response.headers["x-ms-error-code"];
  const code =
    (typeof header === "string" ? header : undefined) ?? /<Code>([^<]*)<\/Code>/.exec(text)?.[1] ?? "";
  return Object.assign(new Error(`${what}: HTTP ${status} ${code}`), {
    name: "RestError" as const,
    statusCode: status,
    code,
  });
}
