/**
 * Azure Blob ObjectStore: block blobs. Multipart uploads are staged blocks (each with a
 * transactional MD5 the service checks) made visible by one commitBlockList; uncommitted
 * blocks of an abandoned upload are never visible and expire on their own.
 */
import { createHash, createSecretKey, randomBytes } from "node:crypto";
import { Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import { Readable } from "node:stream";
// A dependency of @azure/storage-blob (its own pipeline's), imported for the raw listing.
import { createHttpHeaders, createPipelineRequest } from "@azure/core-rest-pipeline";
import {
  AnonymousCredential,
  type BlobRequestConditions,
  ContainerClient,
  type StoragePipelineOptions,
  StorageSharedKeyCredential,
} from "@azure/storage-blob";
import {
  AZURE_API_VERSION,
  AzureBlobHttp,
  GivenSas,
  KeySas,
  type KeySasOptions,
  sendingStream,
} from "./http-azure.ts";
import { displayLocation } from "./open.ts";
import { withRetry } from "./retry.ts";
import {
  type CommitOptions,
  type ListOptions,
  type MultipartUpload,
  normaliseKey,
  type ObjectHead,
  type ObjectInfo,
  type ObjectStore,
  type PartReceipt,
  type PutResult,
  type ReadOptions,
  SHA256_METADATA,
  type StoreCapabilities,
  type StoreCredentials,
  StoreError,
  type StoreLocation,
  type StreamPutResult,
  type StreamWriteOptions,
  type WriteOptions,
} from "./store.ts";

type AzLocation = Extract<StoreLocation, { kind: "azblob" }>;

const md5 = (data: Uint8Array) => createHash("md5").update(data).digest();
const sameBytes = (a: Uint8Array | undefined, b: Uint8Array) =>
  a === undefined || a.length === 0 || Buffer.from(a).equals(Buffer.from(b));
const unquote = (etag: string | undefined) => (etag ?? "").replace(/"/g, "");

export function classifyAzureError(e: unknown, what: string): StoreError {
  if (e instanceof StoreError) return e;
  const err = e as { name?: string; code?: string; statusCode?: number; message?: string };
  const status = err.statusCode;
  const code = err.code ?? "";
  const msg = `${what}: ${code || err.name || "error"}${status ? ` (HTTP ${status})` : ""}`;
  if (err.name === "AbortError") return new StoreError("Aborted", `${what}: aborted`, { cause: e });
  if (code === "ContainerNotFound") return new StoreError("ContainerNotFound", msg, { cause: e });
  if (status === 404 || code === "BlobNotFound") return new StoreError("NotFound", msg, { cause: e });
  if (status === 412 || code === "ConditionNotMet" || code === "BlobAlreadyExists")
    return new StoreError("PreconditionFailed", msg, { cause: e });
  if (code === "Md5Mismatch" || code === "InvalidMd5" || code === "Crc64Mismatch")
    return new StoreError("Integrity", msg, { cause: e });
  if (status === 401 || status === 403) return new StoreError("Auth", msg, { cause: e });
  if (status === 429 || status === 503 || code === "ServerBusy")
    return new StoreError("Throttled", msg, { cause: e });
  if ((status !== undefined && status >= 500) || status === 408 || code === "OperationTimedOut")
    return new StoreError("Transient", msg, { cause: e });
  if (
    /^(ECONNRESET|ECONNREFUSED|EPIPE|ETIMEDOUT|EAI_AGAIN|ENOTFOUND|REQUEST_SEND_ERROR)/.test(code) ||
    err.name === "RestError"
  )
    return new StoreError("Transient", `${what}: ${code || err.message}`, { cause: e });
  return new StoreError("Other", `${what}: ${err.message ?? code}`, { cause: e });
}

/** A 403 of a credential that authenticated but lacks a permission (a SAS's, typically). */
function isPermissionMismatch(e: unknown): boolean {
  const err = e as { statusCode?: number; code?: string };
  return (
    err.statusCode === 403 &&
    (err.code === "AuthorizationPermissionMismatch" || err.code === "AuthorizationResourceTypeMismatch")
  );
}

/**
 * The SDK's shared-key credential, its key held as a node KeyObject. The SDK's signing policy
 * (and the credential's own computeHMACSHA256) call `createHmac("sha256", accountKey)` once per
 * request; with the key as a raw Buffer, node prepares the key on every call — about 30–40 µs
 * here against 3 µs with a KeyObject, a tenth of the client CPU of a 4 KiB Get Blob. Signing
 * itself stays the SDK's (same string to sign, same HMAC); a KeyObject is accepted wherever
 * `createHmac` takes a key, and the key is only ever used that way.
 */
class KeyObjectSharedKeyCredential extends StorageSharedKeyCredential {
  constructor(accountName: string, accountKey: string) {
    super(accountName, accountKey);
    const raw = (this as unknown as { accountKey?: unknown }).accountKey;
    if (Buffer.isBuffer(raw)) Object.defineProperty(this, "accountKey", { value: createSecretKey(raw) });
  }
}

/** Parses `Key=Value;…` connection strings (values may contain `=`). */
function parseConnectionString(cs: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of cs.split(";")) {
    const i = part.indexOf("=");
    if (i > 0) out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}

/**
 * A ContainerClient that can also send List Blobs raw through its own pipeline (so with its
 * credential: shared key or SAS), the XML returned unparsed. The SDK's listing turns the XML
 * into a generic tree and then maps it through its serializer: on a 5,000-blob page that is
 * most of a no-op sync's CPU. Returns undefined if the SDK's internals moved, and the store
 * then lists through the SDK. (Get Blob and Put Blob go over node:http with a SAS:
 * `http-azure.ts`.)
 */
class ListingContainerClient extends ContainerClient {
  /**
   * One List Blobs page, read into `into` (reused from page to page: see `PageBuffer`); the
   * page's bytes, valid until the next read into the same buffer. `undefined` if the SDK's
   * internals moved (the caller then lists through the SDK).
   */
  async listPage(
    query: Record<string, string>,
    into: PageBuffer,
    signal?: AbortSignal,
  ): Promise<Buffer | undefined> {
    const ctx = (this as unknown as { storageClientContext?: { sendRequest?: SendRequest } })
      .storageClientContext;
    if (typeof ctx?.sendRequest !== "function") return undefined;
    // Percent-encoded by hand: URLSearchParams writes a space as '+', which the shared-key
    // signature and the service read differently.
    const url = new URL(this.url);
    const extra = Object.entries(query)
      .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
      .join("&");
    url.search = url.search ? `${url.search}&${extra}` : `?${extra}`;
    const request = createPipelineRequest({
      url: url.toString(),
      method: "GET",
      headers: createHttpHeaders({ "x-ms-version": LIST_API_VERSION }),
      // Plain http only where the store's URI said so (the emulator); the SDK does the same.
      allowInsecureConnection: url.protocol === "http:",
      // Streamed, so the pipeline's deserialization policy leaves a 200's body alone (it would
      // parse any XML text body into a tree, which is the cost this route avoids).
      streamResponseStatusCodes: new Set([200]),
      ...(signal ? { abortSignal: signal } : {}),
    });
    const response = await ctx.sendRequest.call(ctx, request);
    if (response.status === 200 && response.readableStreamBody)
      return into.fill(response.readableStreamBody as AsyncIterable<Uint8Array>);
    const body = response.bodyAsText ?? "";
    if (response.status !== 200) {
      const code = /<Code>([^<]*)<\/Code>/.exec(body)?.[1] ?? response.headers.get("x-ms-error-code") ?? "";
      throw Object.assign(new Error(`List Blobs: HTTP ${response.status} ${code}`), {
        name: "RestError",
        statusCode: response.status,
        code,
      });
    }
    return Buffer.from(body, "utf8");
  }
}

type SendRequest = (request: ReturnType<typeof createPipelineRequest>) => Promise<{
  status: number;
  bodyAsText?: string | null;
  readableStreamBody?: NodeJS.ReadableStream;
  headers: { get(name: string): string | undefined };
}>;

const LIST_API_VERSION = AZURE_API_VERSION;

const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };
function unescapeXml(text: string): string {
  if (!text.includes("&")) return text;
  return text.replace(/&(#x[0-9a-fA-F]+|#\d+|[a-z]+);/g, (m, e: string) =>
    e[0] === "#"
      ? String.fromCodePoint(e[1] === "x" ? Number.parseInt(e.slice(2), 16) : Number(e.slice(1)))
      : (ENTITIES[e] ?? m),
  );
}

/** The text of the first `<tag>` element of `xml` (a short segment), unescaped; undefined if absent. */
function element(xml: string, tag: string): string | undefined {
  let i = xml.indexOf(`<${tag}`);
  while (i !== -1) {
    const after = xml.charCodeAt(i + tag.length + 1);
    if (after === 62 /* > */ || after === 32 /* space */ || after === 47 /* / */) break;
    i = xml.indexOf(`<${tag}`, i + 1);
  }
  if (i === -1) return undefined;
  const open = xml.indexOf(">", i);
  if (open === -1) return undefined;
  if (xml.charCodeAt(open - 1) === 47) return ""; // <Tag />
  const close = xml.indexOf(`</${tag}>`, open);
  if (close === -1) return undefined;
  const raw = unescapeXml(xml.slice(open + 1, close));
  // Names with characters XML cannot carry come percent-encoded, marked Encoded="true".
  return xml.slice(i, open).includes('Encoded="true"') ? decodeURIComponent(raw) : raw;
}

export interface ListedBlob {
  name: string;
  size: number;
  etag: string;
  lastModified?: Date;
  md5?: string;
  sha256?: string;
}

/**
 * A List Blobs page's bytes, in one buffer a listing reuses for every page (grown to the
 * largest page, ~3 MiB per 5,000 blobs).
 *
 * Why: a page used to become one JS string (3 MiB, in V8's large-object space) and 5,000
 * parsed entries whose strings were slices of it. All of it outlived a few scavenges while the
 * page was worked through, so each page was promoted to the old generation and stayed there as
 * garbage until the next full GC: a no-op resync of 50,000 objects peaked with 19.5 MiB of
 * large objects against 4.3 at 5,000. Now the bytes stay in this one buffer and each entry is
 * decoded only when the listing yields it, into strings of its own (`BlobListPage`).
 */
export class PageBuffer {
  private buf = Buffer.allocUnsafeSlow(0);

  /** Reads `stream` to its end into the buffer; the bytes, valid until the next `fill`. */
  async fill(stream: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<Buffer> {
    let len = 0;
    for await (const c of stream) {
      if (len + c.length > this.buf.length) {
        const grown = Buffer.allocUnsafeSlow(Math.max(len + c.length, 2 * this.buf.length, 256 * 1024));
        this.buf.copy(grown, 0, 0, len);
        this.buf = grown;
      }
      this.buf.set(c, len);
      len += c.length;
    }
    return this.buf.subarray(0, len);
  }
}

const BLOB_OPEN = Buffer.from("<Blob>");
const BLOB_CLOSE = Buffer.from("</Blob>");
const BLOBS_CLOSE = Buffer.from("</Blobs>");
const ENUMERATION = Buffer.from("<EnumerationResults");

/**
 * A List Blobs response page, read from its bytes: `open` checks its structure (it is a List
 * Blobs response, every `<Blob>` is closed) and finds the next marker without decoding the
 * entries; `blob(i)` decodes entry `i` on its own (its name before `<Properties>`, the
 * properties within them, Spillway's sha256 within `<Metadata>`), so a missing field costs a
 * search of one entry, never of the rest of the page, and what it returns holds nothing of the
 * page. Throws on what it does not expect (the SDK's listing then takes over).
 */
export class BlobListPage {
  private constructor(
    private readonly bytes: Buffer,
    /** Start and end offsets of each entry (`<Blob>` to `</Blob>`), in pairs. */
    private readonly bounds: Uint32Array,
    readonly count: number,
    readonly nextMarker: string,
  ) {}

  static open(bytes: Buffer): BlobListPage {
    let at = bytes.indexOf(BLOB_OPEN);
    const head = at === -1 ? bytes.length : at;
    if (bytes.subarray(0, head).indexOf(ENUMERATION) === -1) throw new Error("not a List Blobs response");
    let bounds = new Uint32Array(2 * 1024);
    let count = 0;
    let end = head;
    while (at !== -1) {
      const stop = bytes.indexOf(BLOB_CLOSE, at);
      if (stop === -1) throw new Error("truncated List Blobs response");
      if (2 * count + 2 > bounds.length) {
        const grown = new Uint32Array(2 * bounds.length);
        grown.set(bounds);
        bounds = grown;
      }
      bounds[2 * count] = at;
      bounds[2 * count + 1] = stop;
      count++;
      end = stop + BLOB_CLOSE.length;
      at = bytes.indexOf(BLOB_OPEN, end);
    }
    const close = bytes.indexOf(BLOBS_CLOSE, end);
    const tail = bytes.toString("utf8", close === -1 ? end : close);
    return new BlobListPage(bytes, bounds, count, element(tail, "NextMarker") ?? "");
  }

  blob(i: number): ListedBlob {
    const entry = this.bytes.toString("utf8", this.bounds[2 * i], this.bounds[2 * i + 1]);
    const p0 = entry.indexOf("<Properties>");
    const p1 = entry.indexOf("</Properties>");
    const name = p0 === -1 ? undefined : element(entry.slice(0, p0), "Name");
    if (name === undefined || p1 === -1) throw new Error("unexpected List Blobs entry");
    const props = entry.slice(p0, p1);
    const md5b64 = element(props, "Content-MD5");
    const md5 = md5b64 ? Buffer.from(md5b64, "base64") : undefined;
    const modified = element(props, "Last-Modified");
    const m0 = entry.indexOf("<Metadata>", p1);
    const sha256 = m0 === -1 ? undefined : element(entry.slice(m0), SHA256_METADATA.azure);
    return {
      name,
      size: Number(element(props, "Content-Length") ?? 0),
      etag: unquote(element(props, "Etag")),
      ...(modified ? { lastModified: new Date(modified) } : {}),
      ...(md5 && md5.length === 16 ? { md5: md5.toString("hex") } : {}),
      ...(sha256 ? { sha256 } : {}),
    };
  }
}

/** Parses a whole List Blobs page: its blobs and the next marker ("" when it was the last). */
export function parseBlobList(xml: string): { blobs: ListedBlob[]; nextMarker: string } {
  const page = BlobListPage.open(Buffer.from(xml, "utf8"));
  const blobs: ListedBlob[] = [];
  for (let i = 0; i < page.count; i++) blobs.push(page.blob(i));
  return { blobs, nextMarker: page.nextMarker };
}

export class AzureBlobStore implements ObjectStore {
  readonly capabilities: StoreCapabilities = {
    conditionalWrites: "enforced",
    partChecksum: "md5",
    listsSha256: true,
    minPartSize: 1,
    maxParts: 50_000,
    maxPutSize: 256 * 1024 * 1024,
  };
  readonly displayUri: string;
  private constructor(
    private readonly container: ListingContainerClient,
    private readonly prefix: string,
    displayUri: string,
    /**
     * Get Blob and Put Blob over node:http with a SAS (`http-azure.ts`); undefined: through the
     * SDK's `download` and `upload` (SPILLWAY_STORE_SDK_ONLY=1, or no SAS could be had).
     */
    private readonly objects: AzureBlobHttp | undefined,
  ) {
    this.displayUri = displayUri;
  }

  /**
   * Credentials, first match wins: `sas` in the URI or credentials, a connection string
   * (its AccountKey or SharedAccessSignature; the URI's endpoint wins over its BlobEndpoint),
   * an account key for the URI's account. `options.sas` sets the clock and lifetime of the
   * SASes generated from an account key (tests).
   */
  static open(
    loc: AzLocation,
    creds: NonNullable<StoreCredentials["azure"]>,
    options: { sas?: KeySasOptions } = {},
  ): AzureBlobStore {
    const shown = displayLocation(loc);
    let endpoint = loc.endpoint ?? `https://${loc.account}.blob.core.windows.net`;
    const pipeline: StoragePipelineOptions = {
      // The sync engine retries with its own backoff and jitter.
      retryOptions: { maxTries: 1 },
      keepAliveOptions: { enable: true },
    };
    const url = () => `${endpoint.replace(/\/+$/, "")}/${loc.container}`;
    // What authenticates: a SAS the user gave, or the account key (shared-key signing on the
    // SDK's route, SASes generated from it on the raw route).
    let given = loc.sas ?? creds.sas;
    let key: StorageSharedKeyCredential | undefined;
    if (!given && creds.connectionString) {
      const cs = parseConnectionString(creds.connectionString);
      if (cs.AccountName && cs.AccountName !== loc.account)
        throw new StoreError(
          "MissingCredentials",
          `AZURE_STORAGE_CONNECTION_STRING is for account '${cs.AccountName}', not '${loc.account}' (${shown})`,
        );
      if (!loc.endpoint && cs.BlobEndpoint) endpoint = cs.BlobEndpoint;
      if (cs.AccountKey) key = new KeyObjectSharedKeyCredential(cs.AccountName ?? loc.account, cs.AccountKey);
      else if (cs.SharedAccessSignature) given = cs.SharedAccessSignature;
      else
        throw new StoreError(
          "MissingCredentials",
          `connection string has no AccountKey or SharedAccessSignature`,
        );
    } else if (!given && creds.accountKey) {
      key = new KeyObjectSharedKeyCredential(loc.account, creds.accountKey);
    } else if (!given) {
      throw new StoreError(
        "MissingCredentials",
        `no Azure credentials for ${shown} (set AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_KEY, or add sas=…)`,
      );
    }
    const container = key
      ? new ListingContainerClient(url(), key, pipeline)
      : new ListingContainerClient(
          `${url()}?${given!.replace(/^\?/, "")}`,
          new AnonymousCredential(),
          pipeline,
        );
    return new AzureBlobStore(
      container,
      loc.prefix,
      shown,
      AzureBlobStore.objectHttp(url(), loc.container, given, key, options),
    );
  }

  /**
   * Decision: Get Blob and Put Blob go over node:http(s) on a keep-alive agent of this store,
   * authorised by a SAS — the user's as given, or container SASes generated from the account
   * key (`KeySas`: `r` for reads, `cw` for writes, no start time, 1 h, replaced 15 min before
   * expiry) — instead of through the container client's pipeline (its policies and a
   * shared-key signature per request, core-rest-pipeline's HTTP client). Everything else
   * stays on the SDK with the store's credential.
   * Measured (2026-11-22, Azurite, 4 KiB objects, 16 requests at a time, 2,000 per run, medians
   * of 5 runs, the routes alternating in one process, load 3–6 on 2 cores): client CPU per Put
   * Blob 0.41 → 0.30 ms with an account key (0.39 → 0.26 with a user's SAS), per Get Blob
   * 0.37 → 0.26 ms (0.32 → 0.23); the SDK's `download`/`upload` cost 0.44 / 0.52 ms. A profile
   * of this route shows Node's HTTP client and nothing of ours worth a mention.
   * SPILLWAY_STORE_SDK_ONLY=1 sends them through the SDK's `download` and `upload` (the
   * benchmark's comparison switch, and a way back should a service refuse this form); so do a
   * proxy in the environment (below) and a key from which no SAS can be generated (not
   * expected: the SDK's own function).
   */
  private static objectHttp(
    containerUrl: string,
    containerName: string,
    given: string | undefined,
    key: StorageSharedKeyCredential | undefined,
    options: { sas?: KeySasOptions },
  ): AzureBlobHttp | undefined {
    if (process.env.SPILLWAY_STORE_SDK_ONLY === "1") return undefined;
    // The SDK's pipeline sends through the proxy HTTPS_PROXY / HTTP_PROXY name (NO_PROXY
    // honoured); node:http on our own agent would go around it. With a proxy configured every
    // request stays on the SDK, so all of them take the same way out.
    if (["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"].some((v) => process.env[v]))
      return undefined;
    let sas: GivenSas | KeySas;
    if (given) sas = new GivenSas(given);
    else if (key) {
      const protocol = new URL(containerUrl).protocol === "https:" ? "https" : "http";
      sas = new KeySas(containerName, key, protocol, options.sas);
      try {
        sas.token("read");
      } catch {
        return undefined;
      }
    } else return undefined;
    const agentOptions = { keepAlive: true, maxSockets: 128 };
    return new AzureBlobHttp({
      containerUrl,
      sas,
      agents: { http: new HttpAgent(agentOptions), https: new HttpsAgent(agentOptions) },
    });
  }

  private blob(key: string) {
    return this.container.getBlockBlobClient(this.prefix + normaliseKey(key));
  }

  async check(signal?: AbortSignal): Promise<void> {
    let exists: boolean;
    try {
      exists = await this.container.exists({ abortSignal: signal });
    } catch (e) {
      // A container SAS that authenticates but may not read the container's properties (a
      // service SAS with `rl`, `racwdl`: Azurite refuses Get Container Properties to all of
      // them, and rclone never asks) is checked by listing one blob instead; a SAS that may not
      // list either (a write-only destination) is let through — its first write says whether
      // the container is there. A SAS that does not authenticate stays an Auth error.
      if (!isPermissionMismatch(e)) throw classifyAzureError(e, this.displayUri);
      exists = await this.checkByListing(signal);
    }
    if (!exists) throw new StoreError("ContainerNotFound", `container not found: ${this.displayUri}`);
  }

  private async checkByListing(signal?: AbortSignal): Promise<boolean> {
    try {
      const query = { restype: "container", comp: "list", maxresults: "1" };
      const page = await this.container.listPage(query, new PageBuffer(), signal);
      if (page === undefined) await this.container.listBlobsFlat().byPage({ maxPageSize: 1 }).next();
      return true;
    } catch (e) {
      if (isPermissionMismatch(e)) return true;
      const err = classifyAzureError(e, this.displayUri);
      if (err.code === "ContainerNotFound") return false;
      throw err;
    }
  }

  async *list(options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    const raw = this.listRaw(options);
    for (;;) {
      const next = await raw.next();
      if (!next.done) {
        yield next.value;
        continue;
      }
      // The raw route cannot be sent or its XML is not what it expects: the SDK's listing
      // takes over from the same marker (past the entries of that page already yielded).
      if (next.value !== undefined)
        yield* this.listWithSdk(options, next.value.fallbackFrom, next.value.skip);
      return;
    }
  }

  /**
   * The listing through raw List Blobs pages (see ListingContainerClient), each read into one
   * reused buffer and decoded entry by entry as it is yielded (see `PageBuffer`). Returns
   * `{ fallbackFrom: marker, skip }` when the SDK's listing must take over from that marker,
   * `skip` entries of its first page having been yielded already.
   */
  private async *listRaw(
    options: ListOptions,
  ): AsyncGenerator<ObjectInfo, { fallbackFrom: string; skip: number } | undefined> {
    let marker = "";
    const prefix = this.prefix + (options.prefix ?? "");
    const buffer = new PageBuffer();
    for (;;) {
      const query: Record<string, string> = {
        restype: "container",
        comp: "list",
        include: "metadata",
        maxresults: String(options.pageSize ?? 5000),
        ...(prefix ? { prefix } : {}),
        ...(marker ? { marker } : {}),
      };
      const bytes = await withRetry(
        async () => {
          try {
            return await this.container.listPage(query, buffer, options.signal);
          } catch (e) {
            throw classifyAzureError(e, `list ${this.displayUri}`);
          }
        },
        options.signal ? { signal: options.signal } : {},
      );
      if (bytes === undefined) return { fallbackFrom: marker, skip: 0 };
      let page: BlobListPage;
      try {
        page = BlobListPage.open(bytes);
      } catch {
        return { fallbackFrom: marker, skip: 0 };
      }
      for (let i = 0; i < page.count; i++) {
        let b: ListedBlob;
        try {
          b = page.blob(i);
        } catch {
          return { fallbackFrom: marker, skip: i };
        }
        if (!b.name.startsWith(this.prefix)) continue;
        yield {
          key: b.name.slice(this.prefix.length),
          size: b.size,
          etag: b.etag,
          ...(b.lastModified ? { lastModified: b.lastModified } : {}),
          ...(b.sha256 ? { sha256: b.sha256 } : {}),
          ...(b.md5 ? { md5: b.md5 } : {}),
        };
      }
      if (!page.nextMarker || page.nextMarker === marker) return undefined;
      marker = page.nextMarker;
    }
  }

  private async *listWithSdk(options: ListOptions, from = "", skip = 0): AsyncIterable<ObjectInfo> {
    // Pages of 5,000 (the service's maximum): each listing request costs a round trip and, on
    // Azurite, a scan of the container, so fewer, larger pages list much faster. Memory stays
    // bounded by one page. A failed page is fetched again from its continuation token.
    let token: string | undefined = from || undefined;
    do {
      const fetchPage = async () => {
        const it = this.container
          .listBlobsFlat({
            prefix: this.prefix + (options.prefix ?? ""),
            includeMetadata: true,
            abortSignal: options.signal,
          })
          .byPage({ maxPageSize: options.pageSize ?? 5000, ...(token ? { continuationToken: token } : {}) });
        try {
          return await it.next();
        } catch (e) {
          throw classifyAzureError(e, `list ${this.displayUri}`);
        }
      };
      const page = await withRetry(fetchPage, options.signal ? { signal: options.signal } : {});
      if (page.done) return;
      token = page.value.continuationToken || undefined;
      const items = page.value.segment.blobItems;
      for (const b of skip > 0 ? items.slice(skip) : items) {
        if (!b.name.startsWith(this.prefix)) continue;
        const sha256 = b.metadata?.[SHA256_METADATA.azure];
        const md5 = b.properties.contentMD5;
        yield {
          key: b.name.slice(this.prefix.length),
          size: b.properties.contentLength ?? 0,
          etag: unquote(b.properties.etag),
          lastModified: b.properties.lastModified,
          ...(sha256 ? { sha256 } : {}),
          ...(md5 && md5.length === 16 ? { md5: Buffer.from(md5).toString("hex") } : {}),
        };
      }
      skip = 0; // only the first page's entries were yielded already
    } while (token);
  }

  async head(key: string, signal?: AbortSignal): Promise<ObjectHead | undefined> {
    try {
      const p = await this.blob(key).getProperties({ abortSignal: signal });
      const metadata = { ...(p.metadata ?? {}) };
      const sha256 = metadata[SHA256_METADATA.azure];
      delete metadata[SHA256_METADATA.azure];
      return {
        key,
        size: p.contentLength ?? 0,
        etag: unquote(p.etag),
        ...(p.lastModified ? { lastModified: p.lastModified } : {}),
        ...(sha256 ? { sha256 } : {}),
        ...(p.contentType ? { contentType: p.contentType } : {}),
        metadata,
      };
    } catch (e) {
      const se = classifyAzureError(e, `head ${key}`);
      if (se.code === "NotFound") return undefined;
      throw se;
    }
  }

  async read(key: string, options: ReadOptions = {}): Promise<Readable> {
    const r = options.range;
    if (r && r.end !== undefined && r.end <= r.start) return Readable.from([]);
    try {
      if (this.objects)
        return await this.objects.getBlob(this.prefix + normaliseKey(key), {
          ...(r ? { range: r } : {}),
          ...(options.ifMatch ? { ifMatch: `"${unquote(options.ifMatch)}"` } : {}),
          ...(options.signal ? { signal: options.signal } : {}),
        });
      const res = await this.blob(key).download(
        r?.start ?? 0,
        r?.end !== undefined ? r.end - (r.start ?? 0) : undefined,
        {
          abortSignal: options.signal,
          maxRetryRequests: 0,
          ...(options.ifMatch ? { conditions: { ifMatch: `"${unquote(options.ifMatch)}"` } } : {}),
        },
      );
      const body = res.readableStreamBody;
      if (!body) return Readable.from([]);
      return body instanceof Readable ? body : Readable.from(body as AsyncIterable<Uint8Array>);
    } catch (e) {
      throw classifyAzureError(e, `read ${key}`);
    }
  }

  private metadataOf(options: WriteOptions, sha256?: string): Record<string, string> {
    const sha = sha256 ?? options.sha256;
    return { ...(options.metadata ?? {}), ...(sha ? { [SHA256_METADATA.azure]: sha } : {}) };
  }

  private conditionsOf(options: WriteOptions): BlobRequestConditions {
    return {
      ...(options.ifNoneMatch ? { ifNoneMatch: options.ifNoneMatch } : {}),
      ...(options.ifMatch ? { ifMatch: `"${unquote(options.ifMatch)}"` } : {}),
    };
  }

  /**
   * The headers of a raw Put Blob: what `upload` sends for the same options (checked on the
   * wire against the SDK's request): the MD5 both as Content-MD5 (checked against the body)
   * and as the blob's property, metadata as `x-ms-meta-*` (Spillway's sha256 among them), the
   * blob's content type, the conditions.
   */
  private putHeaders(options: WriteOptions, digest: Buffer | undefined): Record<string, string> {
    const headers: Record<string, string> = {};
    if (digest) {
      const b64 = digest.toString("base64");
      headers["Content-MD5"] = b64;
      headers["x-ms-blob-content-md5"] = b64;
    }
    if (options.contentType) headers["x-ms-blob-content-type"] = options.contentType;
    for (const [name, value] of Object.entries(this.metadataOf(options)))
      headers[`x-ms-meta-${name}`] = value;
    if (options.ifNoneMatch) headers["If-None-Match"] = options.ifNoneMatch;
    if (options.ifMatch) headers["If-Match"] = `"${unquote(options.ifMatch)}"`;
    return headers;
  }

  /**
   * One Put Blob over node:http with a SAS (`AzureBlobHttp.putBlob`, see `objectHttp` for the
   * figures), through the SDK's `upload` when SPILLWAY_STORE_SDK_ONLY=1.
   */
  async put(key: string, body: Uint8Array, options: WriteOptions = {}): Promise<PutResult> {
    const digest = options.md5 ? Buffer.from(options.md5, "hex") : md5(body);
    try {
      if (this.objects) {
        const r = await this.objects.putBlob(
          this.prefix + normaliseKey(key),
          body,
          body.length,
          this.putHeaders(options, digest),
          options.signal,
        );
        if (!sameBytes(r.contentMD5 ? Buffer.from(r.contentMD5, "base64") : undefined, digest))
          throw new StoreError("Integrity", `put ${key}: stored MD5 differs from the data sent`);
        return { etag: unquote(r.etag) };
      }
      const r = await this.blob(key).upload(body, body.length, {
        metadata: this.metadataOf(options),
        conditions: this.conditionsOf(options),
        blobHTTPHeaders: {
          blobContentMD5: digest,
          ...(options.contentType ? { blobContentType: options.contentType } : {}),
        },
        transactionalContentMD5: digest,
        ...(options.signal ? { abortSignal: options.signal } : {}),
      });
      if (!sameBytes(r.contentMD5, digest))
        throw new StoreError("Integrity", `put ${key}: stored MD5 differs from the data sent`);
      return { etag: unquote(r.etag) };
    } catch (e) {
      throw classifyAzureError(e, `put ${key}`);
    }
  }

  /**
   * One streamed Put Blob up to `maxPutSize`: no staged blocks to commit. The service checks
   * a Content-MD5 given in advance and returns the MD5 it computed otherwise. A sha256 known
   * only after the body was sent is added as metadata (no data rewrite; the etag changes, and
   * the update is conditional on the etag just written). Raw like `put`, the SDK's `upload`
   * when SPILLWAY_STORE_SDK_ONLY=1; the late metadata stays on the SDK (one request per
   * object of at least a part size, where the request's CPU is noise beside the data's).
   */
  async putStream(
    key: string,
    body: Readable,
    size: number,
    options: StreamWriteOptions = {},
  ): Promise<StreamPutResult> {
    const given = options.md5 ? Buffer.from(options.md5, "hex") : undefined;
    try {
      const sent = this.objects
        ? await this.objects.putBlob(
            this.prefix + normaliseKey(key),
            body,
            size,
            this.putHeaders(options, given),
            options.signal,
          )
        : undefined;
      let etag: string;
      let md5: string | undefined;
      if (sent) {
        etag = unquote(sent.etag);
        const got = sent.contentMD5 ? Buffer.from(sent.contentMD5, "base64") : undefined;
        md5 = got && got.length === 16 ? got.toString("hex") : undefined;
      } else {
        const r = await sendingStream(body, options.signal, (abortSignal) =>
          this.blob(key).upload(() => body, size, {
            metadata: this.metadataOf(options),
            conditions: this.conditionsOf(options),
            blobHTTPHeaders: {
              ...(given ? { blobContentMD5: given } : {}),
              ...(options.contentType ? { blobContentType: options.contentType } : {}),
            },
            ...(given ? { transactionalContentMD5: given } : {}),
            abortSignal,
          }),
        );
        etag = unquote(r.etag);
        md5 =
          r.contentMD5 && r.contentMD5.length === 16 ? Buffer.from(r.contentMD5).toString("hex") : undefined;
      }
      const late = options.sha256 ? undefined : options.sha256After?.();
      if (late) {
        const m = await this.blob(key).setMetadata(this.metadataOf(options, late), {
          conditions: { ifMatch: `"${etag}"` },
          ...(options.signal ? { abortSignal: options.signal } : {}),
        });
        etag = unquote(m.etag);
      }
      return { etag, ...(md5 ? { md5 } : {}) };
    } catch (e) {
      body.destroy();
      throw classifyAzureError(e, `put ${key}`);
    }
  }

  /**
   * Blocks stay on the SDK (stageBlock, commitBlockList): an 8 MiB Put Block costs 13–21 ms of
   * client CPU (its MD5, the socket writes), so the raw route's ~0.2 ms per request would be
   * 1–2 % of it; Put Block List is one request per object above the upload cutoff.
   */
  async startUpload(key: string, options: WriteOptions = {}): Promise<MultipartUpload> {
    const blob = this.blob(key);
    // Block ids must have one length within a blob; a per-upload nonce keeps a crashed
    // upload's leftover blocks from ever being committed by a later one.
    const nonce = randomBytes(6).toString("hex");
    const blockId = (n: number) => Buffer.from(`${nonce}-${String(n).padStart(6, "0")}`).toString("base64");
    const store = this;
    return {
      key,
      async uploadPart(partNumber: number, data: Uint8Array, signal?: AbortSignal): Promise<PartReceipt> {
        const id = blockId(partNumber);
        const digest = md5(data);
        try {
          const r = await blob.stageBlock(id, data, data.length, {
            transactionalContentMD5: digest,
            ...(signal ? { abortSignal: signal } : {}),
          });
          if (!sameBytes(r.contentMD5, digest))
            throw new StoreError("Integrity", `${key} block ${partNumber}: MD5 differs from the data sent`);
        } catch (e) {
          throw classifyAzureError(e, `stage ${key} block ${partNumber}`);
        }
        return { partNumber, size: data.length, id };
      },
      async commit(parts: PartReceipt[], commitOptions: CommitOptions = {}): Promise<PutResult> {
        const ids = [...parts].sort((a, b) => a.partNumber - b.partNumber).map((p) => p.id);
        try {
          const r = await blob.commitBlockList(ids, {
            metadata: store.metadataOf(options, commitOptions.sha256),
            conditions: store.conditionsOf(options),
            ...(options.contentType ? { blobHTTPHeaders: { blobContentType: options.contentType } } : {}),
            ...(commitOptions.signal ? { abortSignal: commitOptions.signal } : {}),
          });
          return { etag: unquote(r.etag) };
        } catch (e) {
          throw classifyAzureError(e, `commit ${key}`);
        }
      },
      async abort(): Promise<void> {
        // Uncommitted blocks are invisible and garbage-collected by the service.
      },
    };
  }

  async delete(key: string, signal?: AbortSignal): Promise<void> {
    try {
      await this.blob(key).deleteIfExists({ abortSignal: signal });
    } catch (e) {
      throw classifyAzureError(e, `delete ${key}`);
    }
  }
}
