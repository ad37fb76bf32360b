/**
 * The Azure Blob requests of a sync — Get Blob (whole, ranged, conditional) and Put Blob (one
 * request, bytes or a stream), one of each per small object, List Blobs pages, the container
 * check and Delete Blob — sent over `node:http(s)` on the store's own keep-alive agent, authorised
 * by a SAS in the query: the user's, or container SASes this module signs from the account key
 * (`KeySas`, `containerSas`). Nothing here loads `@azure/storage-blob`: a sync whose Azure store has a key
 * or a SAS starts, lists, reads, writes small objects and deletes without it (block uploads,
 * Get Blob Properties and metadata updates stay on the SDK, loaded lazily by azure.ts).
 *
 * Why: these requests went "raw" through the container client's own pipeline before (no
 * operation-spec serialization, no typed header parse), but still through its policies — request
 * id, user agent, a shared-key signature computed per request (canonicalised headers and
 * resource, one HMAC), the pipeline's logging and tracing hooks — and core-rest-pipeline's
 * NodeHttpClient. With a SAS the request is authorised by its query string alone: nothing to
 * compute per request. And the SDK itself (a 1.3 MB bundle chunk, ≈ 0.1 CPU s to compile and
 * evaluate) was loaded before a sync's first request could go out. The measured gains are in
 * the comment where the store chooses this route (`AzureBlobStore.objectHttp`).
 *
 * The SAS is a secret: it is only ever the query of the request path handed to node, never part
 * of an error. Node's own errors (ECONNRESET, ECONNREFUSED, invalid header characters, aborts)
 * do not carry the path, and the errors made here carry the operation, the status and the
 * service's error code only.
 */
import { createHmac, createSecretKey, type KeyObject, randomUUID } from "node:crypto";
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders } from "node:http";
import type { Readable } from "node:stream";
import { onAbort } from "./abort.ts";
import { LentChunks } from "./reads.ts";
import { errorText, send, type Transport, transport } from "./transport.ts";
import type { PageBuffer } from "./xml.ts";

/** A service version every Azure Blob endpoint and Azurite answer (List Blobs has what we read). */
export const AZURE_API_VERSION = "2021-12-02";

/**
 * What a request needs the SAS for: reading (Get Blob, and List Blobs, which a source does with
 * its reads), creating/overwriting a blob, or deleting one.
 */
export type SasAccess = "read" | "write" | "delete";

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

/**
 * The service version the SASes signed here declare (`sv`), and the layout of their string to
 * sign: the version @azure/storage-blob 12.34 signs container SASes with (its SERVICE_VERSION).
 * test/dataplane/azure-sas.test.ts compares the query strings with the SDK's
 * `generateBlobSASQueryParameters(...).toString()` byte for byte, so an SDK upgrade that signs
 * differently shows there.
 */
export const SAS_VERSION = "2026-10-06";

/** The container SAS permissions in the order the service expects them (the SDK's order). */
const CONTAINER_PERMISSIONS = "racwdxltmeiyf";

export interface ContainerSasValues {
  accountName: string;
  containerName: string;
  /** Container permission letters, any order (`rl`, `cw`, `racwdl`, …). */
  permissions: string;
  expiresOn: Date;
  startsOn?: Date;
  /** `https` only, or both (the SDK's SASProtocol values). None: the field is left out. */
  protocol?: "https" | "https,http";
}

/** A date as a SAS carries it: ISO 8601 to the second, UTC (`2026-11-22T10:00:00Z`). */
const sasDate = (d: Date) => `${d.toISOString().slice(0, 19)}Z`;

/**
 * A container service SAS signed with the account key: the query string (no leading `?`), the
 * same bytes as the SDK's `generateBlobSASQueryParameters({ containerName, permissions,
 * expiresOn, startsOn, protocol }, sharedKeyCredential).toString()`.
 *
 * The string to sign is the one documented for service SASes of version 2020-12-06 on
 * ("Create a service SAS", signature fields in this order, one per line): permissions, start,
 * expiry, canonicalised resource `/blob/<account>/<container>`, identifier, IP range, protocol,
 * version, resource (`c`), snapshot time, encryption scope, then the five response-header
 * overrides (rscc, rscd, rsce, rscl, rsct) — empty where not set. Its HMAC-SHA256 under the
 * decoded account key, base64, is `sig`. The query's fields come in the SDK's order, each value
 * percent-encoded (`encodeURIComponent`). Unknown permission letters are refused, as the SDK's
 * `ContainerSASPermissions.parse` refuses them.
 */
export function containerSas(values: ContainerSasValues, key: KeyObject): string {
  for (const p of values.permissions)
    if (!CONTAINER_PERMISSIONS.includes(p)) throw new RangeError(`invalid SAS permission '${p}'`);
  const permissions = [...CONTAINER_PERMISSIONS].filter((p) => values.permissions.includes(p)).join("");
  const start = values.startsOn ? sasDate(values.startsOn) : "";
  const expiry = sasDate(values.expiresOn);
  const protocol = values.protocol ?? "";
  const stringToSign = [
    permissions,
    start,
    expiry,
    `/blob/${values.accountName}/${values.containerName}`,
    "", // signed identifier (a stored access policy): none
    "", // signed IP range: none
    protocol,
    SAS_VERSION,
    "c", // signed resource: the container
    "", // snapshot time
    "", // encryption scope
    "", // rscc
    "", // rscd
    "", // rsce
    "", // rscl
    "", // rsct
  ].join("\n");
  const sig = createHmac("sha256", key).update(stringToSign, "utf8").digest("base64");
  const query: [string, string][] = [
    ["sv", SAS_VERSION],
    ["spr", protocol],
    ["st", start],
    ["se", expiry],
    ["sr", "c"],
    ["sp", permissions],
    ["sig", sig],
  ];
  return query
    .filter(([, v]) => v !== "")
    .map(([k, v]) => `${k}=${encodeURIComponent(v)}`)
    .join("&");
}

/** An account key (base64, as the portal and connection strings give it) as an HMAC key. */
export function accountKeyObject(accountKey: string): KeyObject {
  return createSecretKey(Buffer.from(accountKey, "base64"));
}

/** The permissions of the SAS `KeySas` signs for each access kind (least privilege). */
const KEY_SAS_PERMISSIONS: Record<SasAccess, string> = { read: "rl", write: "cw", delete: "d" };

export interface KeySasOptions {
  /** The clock (ms since the epoch); injectable so tests can move it. */
  now?: () => number;
  /** How long a generated SAS is valid. Default 1 h. */
  lifetimeMs?: number;
  /** A SAS with less than this left is replaced before a request uses it. Default 15 min. */
  refreshMarginMs?: number;
}

/**
 * Service SASes for one container, signed from the account key (`containerSas`), one per
 * access kind and reused until near expiry.
 *
 * Decisions:
 * - Least privilege: reads get `rl` (read blobs and list the container: a source does both,
 *   and listing one blob is how the container is checked — a service SAS may not read the
 *   container's properties), writes `cw` (create a blob, or overwrite one — what Put Blob
 *   needs, conditions included), deletes `d` (a destination's journal segments after a sync,
 *   `--delete`). Nothing here changes the container itself; a leaked token reads, lists,
 *   writes or deletes blobs of this one container, as its kind allows, for at most its
 *   lifetime.
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
    private readonly accountName: string,
    private readonly key: KeyObject,
    private readonly containerName: string,
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
    const token = containerSas(
      {
        accountName: this.accountName,
        containerName: this.containerName,
        permissions: KEY_SAS_PERMISSIONS[access],
        expiresOn: new Date(expiresAt),
        protocol: this.protocol === "https" ? "https" : "https,http",
      },
      this.key,
    );
    this.tokens[access] = { token, expiresAt };
    return token;
  }
}

export interface AzureBlobHttpOptions {
  /** `http(s)://host[:port]/[<account>/]<container>`, without a query. */
  containerUrl: string;
  sas: SasSource;
  /** Concurrent connections of the store's keep-alive agent. Default 128. */
  maxSockets?: number;
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

/** What a request is sent to: the path (container or blob), its query (the SAS is added), the SAS's access. */
interface Target {
  method: "GET" | "HEAD" | "PUT" | "DELETE";
  path: string;
  query?: Record<string, string>;
  access: SasAccess;
}

/** The SDK's escaping of a blob name in a URL (its `EscapePath`): each segment encoded. */
function escapeBlobPath(name: string): string {
  return name.split("/").map(encodeURIComponent).join("/");
}

export class AzureBlobHttp {
  /** node:http(s) for the endpoint's protocol, without an ESM import of it (transport.ts). */
  private readonly transport: Transport;
  private readonly hostname: string;
  private readonly port: number | undefined;
  /** The container's path (`/<account>/<container>` on the emulator, `/<container>` on Azure). */
  private readonly container: string;

  constructor(private readonly options: AzureBlobHttpOptions) {
    const url = new URL(options.containerUrl);
    this.transport = transport(url, options.maxSockets ?? 128);
    // `[::1]` in a URL is `::1` for the socket.
    this.hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
    this.port = url.port ? Number(url.port) : undefined;
    this.container = url.pathname.replace(/\/+$/, "");
  }

  /** Whether the SAS is signed here from the account key (it may list: `KeySas`) or the user's. */
  get keySas(): boolean {
    return this.options.sas instanceof KeySas;
  }

  /**
   * One List Blobs page (`query`: restype, comp, include, maxresults, prefix, marker), its body
   * read into `into` (the listing's reused buffer); the bytes, valid until the next fill. A
   * status other than 200 is an `AzureHttpError` (ContainerNotFound, AuthorizationPermission-
   * Mismatch, …). The page is not interpreted here (`BlobListPage` in azure.ts).
   */
  async listBlobs(query: Record<string, string>, into: PageBuffer, signal?: AbortSignal): Promise<Buffer> {
    return into.fill(await this.openListBlobs(query, signal));
  }

  /**
   * One List Blobs page's response, unread, once its headers arrived with status 200 (an
   * `AzureHttpError` otherwise): a listing reading ahead holds it until it needs the page
   * (`PageAhead`, pages.ts) and reads it into its buffer then.
   */
  async openListBlobs(query: Record<string, string>, signal?: AbortSignal): Promise<IncomingMessage> {
    const response = await this.send(
      { method: "GET", path: this.container, query, access: "read" },
      { "x-ms-version": AZURE_API_VERSION },
      undefined,
      signal,
    );
    const status = response.statusCode ?? 0;
    if (status !== 200) throw await errorOf("List Blobs", response, status, signal);
    return response;
  }

  /**
   * Get Container Properties: resolves if the container is there and the SAS may read its
   * properties (an account SAS; a service SAS never may: 403 AuthorizationPermissionMismatch or
   * AuthorizationResourceTypeMismatch), an `AzureHttpError` otherwise.
   */
  async containerProperties(signal?: AbortSignal): Promise<void> {
    const response = await this.send(
      { method: "GET", path: this.container, query: { restype: "container" }, access: "read" },
      { "x-ms-version": AZURE_API_VERSION },
      undefined,
      signal,
    );
    const status = response.statusCode ?? 0;
    if (status !== 200) throw await errorOf("Get Container Properties", response, status, signal);
    response.resume();
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
    const response = await this.send(
      this.blobTarget("GET", name, "read"),
      headers,
      undefined,
      options.signal,
    );
    const status = response.statusCode ?? 0;
    if (status === 200 || status === 206) return response;
    throw await errorOf("Get Blob", response, status, options.signal);
  }

  /**
   * Get Blob Properties (HEAD): the response's headers — Content-Length, ETag, Last-Modified,
   * Content-Type, one `x-ms-meta-<name>` per metadata entry (names lower-cased, as the SDK
   * returns them) — or an `AzureHttpError` (a HEAD's error has no body: its code is
   * x-ms-error-code's, e.g. BlobNotFound).
   */
  async blobProperties(name: string, signal?: AbortSignal): Promise<IncomingHttpHeaders> {
    const response = await this.send(
      this.blobTarget("HEAD", name, "read"),
      { "x-ms-version": AZURE_API_VERSION },
      undefined,
      signal,
    );
    const status = response.statusCode ?? 0;
    if (status !== 200) throw await errorOf("Get Blob Properties", response, status, signal);
    response.resume();
    return response.headers;
  }

  /**
   * Put Blob (a block blob in one request): `body` as given (bytes, or a stream or lent chunks
   * of exactly `size` bytes), with `headers` (the caller's Content-MD5, `x-ms-blob-content-md5`,
   * `x-ms-meta-*`, `x-ms-blob-content-type`, If-Match/If-None-Match). Resolves with the
   * response's ETag and Content-MD5 (base64). A stream body that fails mid-way aborts the
   * request and rejects with the stream's error (`sendingStream`; lent chunks: the transport's
   * `writeLent`): the service discards a
   * short body, so nothing becomes visible.
   */
  async putBlob(
    name: string,
    body: Uint8Array | Readable | LentChunks,
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
    const target = this.blobTarget("PUT", name, "write");
    const response =
      body instanceof Uint8Array || body instanceof LentChunks
        ? await this.send(target, all, body, signal)
        : await sendingStream(body, signal, (s) => this.send(target, all, body, s));
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

  /**
   * Delete Blob, as the SDK's `deleteIfExists`: resolves when the blob was deleted (202) or was
   * not there (404 BlobNotFound); any other answer (ContainerNotFound, 403, a blob with
   * snapshots: 409) is an `AzureHttpError`.
   */
  async deleteBlob(name: string, signal?: AbortSignal): Promise<void> {
    const response = await this.send(
      this.blobTarget("DELETE", name, "delete"),
      { "x-ms-version": AZURE_API_VERSION },
      undefined,
      signal,
    );
    const status = response.statusCode ?? 0;
    if (status === 202) {
      response.resume();
      return;
    }
    const error = await errorOf("Delete Blob", response, status, signal);
    if (status !== 404 || error.code !== "BlobNotFound") throw error;
  }

  private blobTarget(method: Target["method"], name: string, access: SasAccess): Target {
    return { method, path: `${this.container}/${escapeBlobPath(name)}`, access };
  }

  /** One request; resolves with the response once its headers arrived, whatever its status. */
  private send(
    target: Target,
    headers: OutgoingHttpHeaders,
    body: Uint8Array | Readable | LentChunks | undefined,
    signal: AbortSignal | undefined,
  ): Promise<IncomingMessage> {
    const { method, path, query, access } = target;
    // Percent-encoded by hand: URLSearchParams writes a space as '+' (a prefix with spaces).
    let search = "";
    if (query)
      for (const [k, v] of Object.entries(query))
        search += `${encodeURIComponent(k)}=${encodeURIComponent(v)}&`;
    return send(this.transport, {
      method,
      hostname: this.hostname,
      port: this.port,
      // The only place the SAS goes: the request line, never an error.
      path: `${path}?${search}${this.options.sas.token(access)}`,
      // A client request id per request, as the SDK sends: Azure logs it beside its own
      // request id (x-ms-request-id, which a failure's message carries), for support cases.
      headers: { ...headers, "x-ms-client-request-id": randomUUID() },
      ...(body !== undefined ? { body } : {}),
      ...(signal ? { signal } : {}),
      timeoutMs: this.options.requestTimeoutMs ?? 120_000,
      // ETIMEDOUT: `classifyAzureError` maps it Transient, as a socket timeout.
      timeoutError: () => Object.assign(new Error(`${method} timed out`), { code: "ETIMEDOUT" }),
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
  const abort = () => controller.abort(signal?.reason);
  let off: (() => void) | undefined;
  if (signal?.aborted) abort();
  else if (signal) off = onAbort(signal, abort); // not a listener per put: see `onAbort`
  try {
    const result = await send(controller.signal);
    if (error !== undefined) throw error;
    return result;
  } catch (e) {
    throw error ?? e;
  } finally {
    off?.();
  }
}

/** The error a failed response describes: the operation, the status and the service's code. */
async function errorOf(
  what: string,
  response: IncomingMessage,
  status: number,
  signal: AbortSignal | undefined,
): Promise<AzureHttpError> {
  const text = await errorText(response, signal).catch((e: Error) => {
    throw e.name === "AbortError" ? Object.assign(new Error(`${what}: aborted`), { name: "AbortError" }) : e;
  });
  const header = response.headers["x-ms-error-code"];
  const code =
    (typeof header === "string" ? header : undefined) ?? /<Code>([^<]*)<\/Code>/.exec(text)?.[1] ?? "";
  const id = response.headers["x-ms-request-id"];
  return Object.assign(new Error(`${what}: HTTP ${status} ${code}`), {
    // Where the SDK's RestError has it, for `classifyAzureError` to put in the message.
    ...(typeof id === "string" && id ? { details: { "x-ms-request-id": id } } : {}),
    name: "RestError" as const,
    statusCode: status,
    code,
  });
}
