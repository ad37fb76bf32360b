/**
 * Azure Blob ObjectStore: block blobs. Multipart uploads are staged blocks (each with a
 * transactional MD5 the service checks) made visible by one commitBlockList; uncommitted
 * blocks of an abandoned upload are never visible and expire on their own.
 *
 * With an account key or a SAS (every credential a store can be opened with), the container
 * check, List Blobs, Get Blob, Put Blob and Delete Blob go over node:http with a SAS
 * (`http-azure.ts`), and `@azure/storage-blob` is not loaded at all: a sync reading an Azure
 * source, or writing small objects and its manifest to an Azure destination, never compiles
 * the SDK (a 1.3 MB bundle chunk, ≈ 0.1 CPU s on the path to the first request). The SDK is
 * `import()`ed on first use by what still needs it: block uploads,
 * metadata updates, the listing's fallback, and every request when the route is off
 * (SPILLWAY_STORE_SDK_ONLY=1). A proxy in the environment is used by both routes.
 */
import { createHash, type KeyObject, randomBytes } from "node:crypto";
import type { IncomingHttpHeaders, IncomingMessage } from "node:http";
import { Readable } from "node:stream";
import type {
  BlobRequestConditions,
  BlockBlobClient,
  ContainerClient,
  StoragePipelineOptions,
  StorageSharedKeyCredential,
} from "@azure/storage-blob";
import { withOwnSignal } from "./abort.ts";
import {
  AZURE_API_VERSION,
  AzureBlobHttp,
  accountKeyObject,
  GivenSas,
  KeySas,
  type KeySasOptions,
  sendingStream,
} from "./http-azure.ts";
import { displayLocation } from "./open.ts";
import { PageAhead } from "./pages.ts";
import { LentChunks, type StreamBody } from "./reads.ts";
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
import { EntryPage, element, PageBuffer } from "./xml.ts";

type AzLocation = Extract<StoreLocation, { kind: "azblob" }>;

/** `@azure/storage-blob`, loaded on first use (see the module comment). */
type Sdk = typeof import("@azure/storage-blob");
let sdkModule: Promise<Sdk> | undefined;
const loadSdk = (): Promise<Sdk> => {
  sdkModule ??= import("@azure/storage-blob");
  return sdkModule;
};

const md5 = (data: Uint8Array) => createHash("md5").update(data).digest();
const sameBytes = (a: Uint8Array | undefined, b: Uint8Array) =>
  a === undefined || a.length === 0 || Buffer.from(a).equals(Buffer.from(b));
const unquote = (etag: string | undefined) => (etag ?? "").replace(/"/g, "");

export function classifyAzureError(e: unknown, what: string): StoreError {
  if (e instanceof StoreError) return e;
  const err = e as {
    name?: string;
    code?: string;
    statusCode?: number;
    message?: string;
    details?: { "x-ms-request-id"?: unknown };
  };
  const status = err.statusCode;
  const code = err.code ?? "";
  // The service's request id, which Azure support asks for (never a secret).
  const id = err.details?.["x-ms-request-id"];
  const request = typeof id === "string" && id ? `, request id ${id}` : "";
  const msg = `${what}: ${code || err.name || "error"}${status ? ` (HTTP ${status}${request})` : ""}`;
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
 * The SDK's shared-key credential, its key held as a node KeyObject (the one the store's SASes
 * are signed with). The SDK's signing policy (and the credential's own computeHMACSHA256) call
 * `createHmac("sha256", accountKey)` once per request; with the key as a raw Buffer, node
 * prepares the key on every call — about 30–40 µs here against 3 µs with a KeyObject, a tenth
 * of the client CPU of a 4 KiB Get Blob. Signing itself stays the SDK's (same string to sign,
 * same HMAC); a KeyObject is accepted wherever `createHmac` takes a key, and the key is only
 * ever used that way.
 */
function keyObjectCredential(sdk: Sdk, account: AccountKey): StorageSharedKeyCredential {
  const credential = new sdk.StorageSharedKeyCredential(account.name, account.base64);
  const raw = (credential as unknown as { accountKey?: unknown }).accountKey;
  if (Buffer.isBuffer(raw)) Object.defineProperty(credential, "accountKey", { value: account.key });
  return credential;
}

/** An account key: the account's name, the key as given (base64) and as an HMAC key. */
interface AccountKey {
  name: string;
  base64: string;
  key: KeyObject;
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
 * One List Blobs page sent raw through the container client's own pipeline (so with its
 * credential: shared key or SAS), the XML returned unparsed into `into` — the listing of a
 * store whose requests all go through the SDK (SPILLWAY_STORE_SDK_ONLY=1). The SDK's own listing turns the XML into a generic tree and then maps it
 * through its serializer: on a 5,000-blob page that is most of a no-op sync's CPU. Returns
 * undefined if the SDK's internals moved, and the store then lists through the SDK.
 */
async function listPageThroughPipeline(
  container: ContainerClient,
  query: Record<string, string>,
  into: PageBuffer,
  signal?: AbortSignal,
): Promise<Buffer | undefined> {
  const ctx = (container as unknown as { storageClientContext?: { sendRequest?: SendRequest } })
    .storageClientContext;
  if (typeof ctx?.sendRequest !== "function") return undefined;
  // A dependency of @azure/storage-blob (its own pipeline's), loaded with it.
  const { createHttpHeaders, createPipelineRequest } = await import("@azure/core-rest-pipeline");
  // Percent-encoded by hand: URLSearchParams writes a space as '+', which the shared-key
  // signature and the service read differently.
  const url = new URL(container.url);
  const extra = Object.entries(query)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
    .join("&");
  url.search = url.search ? `${url.search}&${extra}` : `?${extra}`;
  const request = createPipelineRequest({
    url: url.toString(),
    method: "GET",
    headers: createHttpHeaders({ "x-ms-version": AZURE_API_VERSION }),
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

type SendRequest = (request: unknown) => Promise<{
  status: number;
  bodyAsText?: string | null;
  readableStreamBody?: NodeJS.ReadableStream;
  headers: { get(name: string): string | undefined };
}>;

export interface ListedBlob {
  name: string;
  size: number;
  etag: string;
  lastModified?: Date;
  md5?: string;
  sha256?: string;
}

/**
 * A List Blobs response page, read from its bytes (an `EntryPage` of `<Blob>` entries in an
 * `<EnumerationResults>` document, in the listing's reused `PageBuffer`): `open` checks its
 * structure (it is a List Blobs response, every `<Blob>` is closed, the document ends) and
 * finds the next marker without decoding the entries; `blob(i)` decodes entry `i` on its own
 * (its name before `<Properties>`, the properties within them, Spillway's sha256 within
 * `<Metadata>`), so a missing field costs a search of one entry, never of the rest of the page,
 * and what it returns holds nothing of the page. Throws on what it does not expect (the SDK's
 * listing then takes over).
 */
export class BlobListPage {
  private constructor(
    private readonly page: EntryPage,
    readonly nextMarker: string,
  ) {}

  get count(): number {
    return this.page.count;
  }

  static open(bytes: Buffer): BlobListPage {
    const page = EntryPage.open(bytes, "EnumerationResults", "Blob");
    return new BlobListPage(page, element(page.outside, "NextMarker") ?? "");
  }

  blob(i: number): ListedBlob {
    const entry = this.page.entry(i);
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
  /** The SDK's container client, built on first use (see `sdk`). */
  private client: Promise<ContainerClient> | undefined;

  private constructor(
    /** Loads the SDK and builds the container client with the store's credential. */
    private readonly connect: () => Promise<ContainerClient>,
    private readonly prefix: string,
    displayUri: string,
    /**
     * The check, List Blobs, Get Blob and Put Blob over node:http with a SAS
     * (`http-azure.ts`); undefined: through the SDK (SPILLWAY_STORE_SDK_ONLY=1, or no SAS
     * could be had).
     */
    private readonly objects: AzureBlobHttp | undefined,
  ) {
    this.displayUri = displayUri;
  }

  /**
   * Credentials, first match wins: `sas` in the URI or credentials, a connection string
   * (its AccountKey or SharedAccessSignature; the URI's endpoint wins over its BlobEndpoint),
   * an account key for the URI's account. `options.sas` sets the clock and lifetime of the
   * SASes generated from an account key (tests). Loads nothing: the SDK comes when first
   * needed (`sdk`).
   */
  static open(
    loc: AzLocation,
    creds: NonNullable<StoreCredentials["azure"]>,
    options: { sas?: KeySasOptions } = {},
  ): AzureBlobStore {
    const shown = displayLocation(loc);
    let endpoint = loc.endpoint ?? `https://${loc.account}.blob.core.windows.net`;
    const url = () => `${endpoint.replace(/\/+$/, "")}/${loc.container}`;
    // What authenticates: a SAS the user gave, or the account key (SASes signed from it on the
    // raw route, shared-key signing on the SDK's).
    let given = loc.sas ?? creds.sas;
    let key: AccountKey | undefined;
    const accountKey = (name: string, base64: string): AccountKey => ({
      name,
      base64,
      key: accountKeyObject(base64),
    });
    if (!given && creds.connectionString) {
      const cs = parseConnectionString(creds.connectionString);
      if (cs.AccountName && cs.AccountName !== loc.account)
        throw new StoreError(
          "MissingCredentials",
          `AZURE_STORAGE_CONNECTION_STRING is for account '${cs.AccountName}', not '${loc.account}' (${shown})`,
        );
      if (!loc.endpoint && cs.BlobEndpoint) endpoint = cs.BlobEndpoint;
      if (cs.AccountKey) key = accountKey(cs.AccountName ?? loc.account, cs.AccountKey);
      else if (cs.SharedAccessSignature) given = cs.SharedAccessSignature;
      else
        throw new StoreError(
          "MissingCredentials",
          `connection string has no AccountKey or SharedAccessSignature`,
        );
    } else if (!given && creds.accountKey) {
      key = accountKey(loc.account, creds.accountKey);
    } else if (!given) {
      throw new StoreError(
        "MissingCredentials",
        `no Azure credentials for ${shown} (set AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_KEY, or add sas=…)`,
      );
    }
    const sas = given;
    const containerUrl = url();
    const connect = async (): Promise<ContainerClient> => {
      const sdk = await loadSdk();
      const pipeline: StoragePipelineOptions = {
        // The sync engine retries with its own backoff and jitter.
        retryOptions: { maxTries: 1 },
        keepAliveOptions: { enable: true },
      };
      return key
        ? new sdk.ContainerClient(containerUrl, keyObjectCredential(sdk, key), pipeline)
        : new sdk.ContainerClient(
            `${containerUrl}?${(sas ?? "").replace(/^\?/, "")}`,
            new sdk.AnonymousCredential(),
            pipeline,
          );
    };
    return new AzureBlobStore(
      connect,
      loc.prefix,
      shown,
      AzureBlobStore.objectHttp(containerUrl, loc.container, given, key, options),
    );
  }

  /**
   * Decision: the container check, List Blobs, Get Blob and Put Blob go over node:http(s) on a
   * keep-alive agent of this store, authorised by a SAS — the user's as given, or container
   * SASes signed here from the account key (`KeySas`: `rl` for reads and listings, `cw` for
   * writes, no start time, 1 h, replaced 15 min before expiry) — instead of through the SDK
   * (its pipeline's policies and a shared-key signature per request, core-rest-pipeline's HTTP
   * client — and, before any of it, loading the SDK). Everything else stays on the SDK with the
   * store's credential, loaded when first needed.
   * Measured (2026-11-22, Azurite, 4 KiB objects, 16 requests at a time, 2,000 per run, medians
   * of 5 runs, the routes alternating in one process, load 3–6 on 2 cores): client CPU per Put
   * Blob 0.41 → 0.30 ms with an account key (0.39 → 0.26 with a user's SAS), per Get Blob
   * 0.37 → 0.26 ms (0.32 → 0.23); the SDK's `download`/`upload` cost 0.44 / 0.52 ms. A profile
   * of this route shows Node's HTTP client and nothing of ours worth a mention.
   * SPILLWAY_STORE_SDK_ONLY=1 sends them through the SDK (the benchmark's comparison switch,
   * and a way back should a service refuse this form); so does a key from which no SAS can
   * be signed (not expected). A proxy in the environment is used by this route's agent.
   */
  private static objectHttp(
    containerUrl: string,
    containerName: string,
    given: string | undefined,
    key: AccountKey | undefined,
    options: { sas?: KeySasOptions },
  ): AzureBlobHttp | undefined {
    if (process.env.SPILLWAY_STORE_SDK_ONLY === "1") return undefined;
    // A proxy in the environment: this route's agent uses it as the SDK's pipeline does
    // (`transport`, NO_PROXY honoured), so every request takes the same way out.
    let sas: GivenSas | KeySas;
    if (given) sas = new GivenSas(given);
    else if (key) {
      const protocol = new URL(containerUrl).protocol === "https:" ? "https" : "http";
      sas = new KeySas(key.name, key.key, containerName, protocol, options.sas);
      try {
        sas.token("read");
      } catch {
        return undefined;
      }
    } else return undefined;
    return new AzureBlobHttp({ containerUrl, sas });
  }

  /** The SDK's container client, the SDK loaded on first use. */
  private sdk(): Promise<ContainerClient> {
    this.client ??= this.connect();
    return this.client;
  }

  private async blob(key: string): Promise<BlockBlobClient> {
    return (await this.sdk()).getBlockBlobClient(this.prefix + normaliseKey(key));
  }

  /**
   * The container is there and the credential is good: ContainerNotFound, or the error, if
   * not. A container SAS that authenticates but may not read the container's properties (a
   * service SAS with `rl`, `racwdl`: Azure and Azurite refuse Get Container Properties to all
   * of them, and rclone never asks) is checked by listing one blob; a SAS that may not list
   * either (a write-only destination) is let through — its first write says whether the
   * container is there. A SAS that does not authenticate stays an Auth error.
   * On the raw route the listing comes first (one round trip for a SAS that may list: every
   * key-signed one, a source's), Get Container Properties only when it may not (an account
   * SAS without `l`); the outcomes are those of the SDK's route, which asks in the other
   * order (shared key reads the properties).
   */
  async check(signal?: AbortSignal): Promise<void> {
    if (!(await this.containerExists(signal)))
      throw new StoreError("ContainerNotFound", `container not found: ${this.displayUri}`);
  }

  private async containerExists(signal?: AbortSignal): Promise<boolean> {
    const found = (e: unknown): boolean => {
      const err = classifyAzureError(e, this.displayUri);
      if (err.code === "ContainerNotFound") return false;
      throw err;
    };
    if (this.objects) {
      const objects = this.objects;
      try {
        await objects.listBlobs(
          { restype: "container", comp: "list", maxresults: "1" },
          new PageBuffer(),
          signal,
        );
        return true;
      } catch (e) {
        if (!isPermissionMismatch(e) || objects.keySas) return found(e);
      }
      try {
        await objects.containerProperties(signal);
        return true;
      } catch (e) {
        return isPermissionMismatch(e) ? true : found(e);
      }
    }
    const container = await this.sdk();
    try {
      return await container.exists({ abortSignal: signal });
    } catch (e) {
      if (!isPermissionMismatch(e)) throw classifyAzureError(e, this.displayUri);
    }
    try {
      const query = { restype: "container", comp: "list", maxresults: "1" };
      const page = await listPageThroughPipeline(container, query, new PageBuffer(), signal);
      if (page === undefined) await container.listBlobsFlat().byPage({ maxPageSize: 1 }).next();
      return true;
    } catch (e) {
      return isPermissionMismatch(e) ? true : found(e);
    }
  }

  async *list(options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    const raw = this.listRaw(options);
    try {
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
    } finally {
      // A listing stopped early ends the raw one too (its early request for the next page).
      await raw.return(undefined);
    }
  }

  /**
   * The listing through raw List Blobs pages (over node:http with the store's SAS, or through
   * the SDK's pipeline when every request goes through the SDK), each read into one
   * reused buffer and decoded entry by entry as it is yielded (see `PageBuffer`), the next
   * page requested while this one is taken (`PageAhead`). Returns
   * `{ fallbackFrom: marker, skip }` when the SDK's listing must take over from that marker,
   * `skip` entries of its first page having been yielded already.
   */
  private async *listRaw(
    options: ListOptions,
  ): AsyncGenerator<ObjectInfo, { fallbackFrom: string; skip: number } | undefined> {
    let marker = "";
    const prefix = this.prefix + (options.prefix ?? "");
    const buffer = new PageBuffer();
    const query = (from: string): Record<string, string> => ({
      restype: "container",
      comp: "list",
      include: "metadata",
      maxresults: String(options.pageSize ?? 5000),
      ...(prefix ? { prefix } : {}),
      ...(from ? { marker: from } : {}),
    });
    // The next page is requested while this one is taken, and read when it is needed
    // (pages.ts); over node:http only (the SDK's pipeline reads its responses whole).
    const ahead = new PageAhead<IncomingMessage>(options.signal);
    const objects = this.objects;
    const open = (from: string) => (signal: AbortSignal) => objects!.openListBlobs(query(from), signal);
    try {
      for (;;) {
        const from = marker;
        const bytes = await withRetry(
          async () => {
            try {
              if (objects) return await buffer.fill(await ahead.response(open(from)));
              return await listPageThroughPipeline(await this.sdk(), query(from), buffer, ahead.signal);
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
        const next = page.nextMarker && page.nextMarker !== marker ? page.nextMarker : undefined;
        ahead.page(page.count, next !== undefined && objects ? open(next) : undefined);
        for (let i = 0; i < page.count; i++) {
          let b: ListedBlob;
          try {
            b = page.blob(i);
          } catch {
            return { fallbackFrom: marker, skip: i };
          }
          if (b.name.startsWith(this.prefix))
            yield {
              key: b.name.slice(this.prefix.length),
              size: b.size,
              etag: b.etag,
              ...(b.lastModified ? { lastModified: b.lastModified } : {}),
              ...(b.sha256 ? { sha256: b.sha256 } : {}),
              ...(b.md5 ? { md5: b.md5 } : {}),
            };
          const sent = ahead.taken(i);
          if (sent) await sent;
        }
        if (next === undefined) return undefined;
        marker = next;
      }
    } finally {
      ahead.close();
    }
  }

  private async *listWithSdk(options: ListOptions, from = "", skip = 0): AsyncIterable<ObjectInfo> {
    // Pages of 5,000 (the service's maximum): each listing request costs a round trip and, on
    // Azurite, a scan of the container, so fewer, larger pages list much faster. Memory stays
    // bounded by one page. A failed page is fetched again from its continuation token.
    let token: string | undefined = from || undefined;
    do {
      const fetchPage = async () => {
        const it = (await this.sdk())
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
      if (this.objects)
        return headFromHeaders(
          key,
          await this.objects.blobProperties(this.prefix + normaliseKey(key), signal),
        );
      const p = await (await this.blob(key)).getProperties({ abortSignal: signal });
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
      const res = await (await this.blob(key)).download(
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
      const blob = await this.blob(key);
      const r = await withOwnSignal(options.signal, (abortSignal) =>
        blob.upload(body, body.length, {
          metadata: this.metadataOf(options),
          conditions: this.conditionsOf(options),
          blobHTTPHeaders: {
            blobContentMD5: digest,
            ...(options.contentType ? { blobContentType: options.contentType } : {}),
          },
          transactionalContentMD5: digest,
          ...(abortSignal ? { abortSignal } : {}),
        }),
      );
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
    source: StreamBody,
    size: number,
    options: StreamWriteOptions = {},
  ): Promise<StreamPutResult> {
    const given = options.md5 ? Buffer.from(options.md5, "hex") : undefined;
    // The SDK keeps what it is given: lent chunks go to it as a stream of copies.
    let body = source;
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
        const blob = await this.blob(key);
        const stream = source instanceof LentChunks ? source.toReadable() : source;
        body = stream;
        const r = await sendingStream(stream, options.signal, (abortSignal) =>
          blob.upload(() => stream, size, {
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
        const blob = await this.blob(key);
        const m = await withOwnSignal(options.signal, (abortSignal) =>
          blob.setMetadata(this.metadataOf(options, late), {
            conditions: { ifMatch: `"${etag}"` },
            ...(abortSignal ? { abortSignal } : {}),
          }),
        );
        etag = unquote(m.etag);
      }
      return { etag, ...(md5 ? { md5 } : {}) };
    } catch (e) {
      if (body instanceof Readable) body.destroy();
      throw classifyAzureError(e, `put ${key}`);
    }
  }

  /**
   * Blocks stay on the SDK (stageBlock, commitBlockList): an 8 MiB Put Block costs 13–21 ms of
   * client CPU (its MD5, the socket writes), so the raw route's ~0.2 ms per request would be
   * 1–2 % of it; Put Block List is one request per object above the upload cutoff.
   */
  async startUpload(key: string, options: WriteOptions = {}): Promise<MultipartUpload> {
    const blob = await this.blob(key);
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
          const r = await withOwnSignal(signal, (abortSignal) =>
            blob.stageBlock(id, data, data.length, {
              transactionalContentMD5: digest,
              ...(abortSignal ? { abortSignal } : {}),
            }),
          );
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
          const r = await withOwnSignal(commitOptions.signal, (abortSignal) =>
            blob.commitBlockList(ids, {
              metadata: store.metadataOf(options, commitOptions.sha256),
              conditions: store.conditionsOf(options),
              ...(options.contentType ? { blobHTTPHeaders: { blobContentType: options.contentType } } : {}),
              ...(abortSignal ? { abortSignal } : {}),
            }),
          );
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

  /**
   * Delete Blob if it exists: over node:http with the SAS (a sync that wrote journal segments
   * deletes them at its end, so a cold copy into Azure would otherwise load the SDK for that
   * alone), the SDK's `deleteIfExists` on the SDK route.
   */
  async delete(key: string, signal?: AbortSignal): Promise<void> {
    try {
      if (this.objects) await this.objects.deleteBlob(this.prefix + normaliseKey(key), signal);
      else await (await this.blob(key)).deleteIfExists({ abortSignal: signal });
    } catch (e) {
      throw classifyAzureError(e, `delete ${key}`);
    }
  }
}

const META = "x-ms-meta-";

/** An `ObjectHead` from Get Blob Properties' response headers (the raw route). */
function headFromHeaders(key: string, h: IncomingHttpHeaders): ObjectHead {
  const metadata: Record<string, string> = {};
  let sha256: string | undefined;
  for (const [name, value] of Object.entries(h)) {
    if (!name.startsWith(META) || typeof value !== "string") continue;
    const k = name.slice(META.length);
    if (k === SHA256_METADATA.azure) sha256 = value;
    else metadata[k] = value;
  }
  const lastModified = h["last-modified"] ? new Date(h["last-modified"]) : undefined;
  return {
    key,
    size: Number(h["content-length"] ?? 0),
    etag: unquote(h.etag),
    ...(lastModified && !Number.isNaN(lastModified.getTime()) ? { lastModified } : {}),
    ...(sha256 ? { sha256 } : {}),
    ...(h["content-type"] ? { contentType: h["content-type"] } : {}),
    metadata,
  };
}
