/**
 * S3-compatible ObjectStore (AWS S3, OCI Object Storage through its S3 compatibility API,
 * s3rver): path-style URLs, checksums only when required (newer SDK defaults add CRC headers
 * that S3-compatible stores reject), Content-MD5 on every part and single put, multipart
 * uploads that become visible only at CompleteMultipartUpload.
 */
import { createHash } from "node:crypto";
import type { IncomingMessage } from "node:http";
import type { Agent as HttpsAgent } from "node:https";
import { Readable } from "node:stream";
import type {
  ListMultipartUploadsCommandOutput,
  ListObjectsCommandOutput,
  ListPartsCommandOutput,
  S3Client,
  S3ClientConfig,
} from "@aws-sdk/client-s3";
import type { MiddlewareStack } from "@smithy/types";
import { withOwnSignal } from "./abort.ts";
import { S3ObjectHttp } from "./http-s3.ts";
import { displayLocation } from "./open.ts";
import { PageAhead } from "./pages.ts";
import { LentChunks, type StreamBody } from "./reads.ts";
import { isTransient, withRetry } from "./retry.ts";
import {
  type AbandonedUploadOptions,
  type AbandonedUploadResult,
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
import { transport } from "./transport.ts";
import { EntryPage, element, PageBuffer } from "./xml.ts";

type S3Location = Extract<StoreLocation, { kind: "s3" }>;

/**
 * `@aws-sdk/client-s3`, loaded on first use. A cold copy into S3 needs none of it (the bucket
 * check, the object reads and writes and the manifest go through S3ObjectHttp); loading it
 * and building a client cost ≈ 0.1 CPU s per process start, a sixth of a no-op resync's CPU.
 */
type Sdk = typeof import("@aws-sdk/client-s3");
let sdkModule: Promise<Sdk> | undefined;
const loadSdk = (): Promise<Sdk> => {
  sdkModule ??= import("@aws-sdk/client-s3");
  return sdkModule;
};

/** One MD5 pass gives both forms: Content-MD5 (base64) and the single-part ETag (hex). */
const md5 = (data: Uint8Array) => {
  const d = createHash("md5").update(data).digest();
  return { b64: d.toString("base64"), hex: d.toString("hex") };
};

/**
 * The SigV4 payload hash, given instead of letting the SDK hash every body once more (hashing
 * dominates the client's CPU on small objects): for a put, Spillway's own sha256 of the body,
 * which S3 checks against the payload (a second end-to-end check); for a part, whose sha256
 * nobody computes, `UNSIGNED-PAYLOAD` — the part's Content-MD5 still guards its bytes.
 */
function withPayloadHash<C extends { middlewareStack: { add: (...a: never[]) => unknown } }>(
  command: C,
  hash: string,
): C {
  (command.middlewareStack as unknown as MiddlewareStack<object, object>).add(
    (next) => (args) => {
      const req = args.request as { headers?: Record<string, string> };
      if (req.headers) req.headers["x-amz-content-sha256"] = hash;
      return next(args);
    },
    { step: "build", name: "spillwayPayloadHash" },
  );
  return command;
}
const unquote = (etag: string | undefined) => (etag ?? "").replace(/^W\//, "").replace(/"/g, "");

/** Maps an SDK error to a StoreError: the engine retries on `retryable` only. */
export function classifyS3Error(e: unknown, what: string): StoreError {
  if (e instanceof StoreError) return e;
  const err = e as {
    name?: string;
    Code?: string;
    code?: string;
    message?: string;
    $metadata?: { httpStatusCode?: number; requestId?: string };
    $retryable?: unknown;
    retryAfterMs?: number;
  };
  const status = err.$metadata?.httpStatusCode;
  const name = err.name ?? err.Code ?? "";
  // The service's request id (x-amz-request-id), which a provider's support asks for.
  const id = err.$metadata?.requestId;
  const request = id ? `, request id ${id}` : "";
  const msg = `${what}: ${name || "error"}${status ? ` (HTTP ${status}${request})` : ""}`;
  if (name === "AbortError") return new StoreError("Aborted", `${what}: aborted`, { cause: e });
  if (name === "NoSuchBucket") return new StoreError("ContainerNotFound", msg, { cause: e });
  if (name === "NoSuchKey" || name === "NotFound" || status === 404)
    return new StoreError("NotFound", msg, { cause: e });
  if (status === 412 || name === "PreconditionFailed" || name === "ConditionalRequestConflict")
    return new StoreError("PreconditionFailed", msg, { cause: e });
  if (name === "BadDigest" || name === "InvalidDigest") return new StoreError("Integrity", msg, { cause: e });
  if (status === 401 || status === 403 || name === "InvalidAccessKeyId" || name === "SignatureDoesNotMatch")
    return new StoreError("Auth", msg, { cause: e });
  if (status === 429 || status === 503 || name === "SlowDown" || name === "ThrottlingException")
    return new StoreError("Throttled", msg, {
      cause: e,
      ...(err.retryAfterMs !== undefined ? { retryAfterMs: err.retryAfterMs } : {}),
    });
  if ((status !== undefined && status >= 500) || name === "RequestTimeout" || name === "TimeoutError")
    return new StoreError("Transient", msg, { cause: e });
  const code = err.code ?? "";
  if (/^(ECONNRESET|ECONNREFUSED|EPIPE|ETIMEDOUT|EAI_AGAIN|ENOTFOUND|UND_ERR)/.test(code) || err.$retryable)
    return new StoreError("Transient", `${what}: ${code || err.message}`, { cause: e });
  return new StoreError("Other", `${what}: ${err.message ?? name}`, { cause: e });
}

export class S3Store implements ObjectStore {
  readonly capabilities: StoreCapabilities = {
    conditionalWrites: "sent",
    partChecksum: "md5",
    listsSha256: false,
    minPartSize: 5 * 1024 * 1024,
    maxParts: 10_000,
    maxPutSize: 5 * 1024 * 1024 * 1024,
  };
  readonly displayUri: string;

  private sdkClient: Promise<{ c: S3Client; m: Sdk }> | undefined;

  private constructor(
    private readonly clientConfig: S3ClientConfig,
    private readonly bucket: string,
    private readonly prefix: string,
    displayUri: string,
    /** GetObject/PutObject without the SDK's middleware; undefined: everything through the SDK. */
    private readonly objects: S3ObjectHttp | undefined,
  ) {
    this.displayUri = displayUri;
  }

  static open(loc: S3Location, creds: NonNullable<StoreCredentials["s3"]>): S3Store {
    if (!creds.accessKeyId || !creds.secretAccessKey)
      throw new StoreError(
        "MissingCredentials",
        `no S3 credentials for ${displayLocation(loc)} (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)`,
      );
    const endpoint = loc.endpoint ?? `https://s3.${loc.region}.amazonaws.com`;
    // node:http(s) for the endpoint's protocol only, taken without an ESM import (transport.ts).
    const t = transport(new URL(endpoint), 128);
    const requestTimeoutMs = 120_000;
    const clientConfig: S3ClientConfig = {
      region: loc.region,
      ...(loc.endpoint ? { endpoint: loc.endpoint } : {}),
      forcePathStyle: true,
      credentials: {
        accessKeyId: creds.accessKeyId,
        secretAccessKey: creds.secretAccessKey,
        ...(creds.sessionToken ? { sessionToken: creds.sessionToken } : {}),
      },
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      // The sync engine retries with its own backoff; SDK retries would multiply attempts.
      maxAttempts: 1,
      requestHandler: {
        ...(t.secure ? { httpsAgent: t.agent as HttpsAgent } : { httpAgent: t.agent }),
        connectionTimeout: 10_000,
        requestTimeout: requestTimeoutMs,
      },
    };
    // Decision: GetObject, PutObject (buffered and streamed), the bucket check, HeadObject,
    // DeleteObject, ListObjects and ListMultipartUploads go through S3ObjectHttp — the SDK's
    // signer over node:http on the same keep-alive agent, without the SDK's middleware stack
    // (see http-s3.ts); multipart uploads and the rest of the upload clean-up stay on the SDK.
    // Measured (2026-11-22, 2 shared cores): client CPU per 4 KiB PutObject against s3rver,
    // 16 at a time, 1.4–1.9 ms through the SDK, 0.25–0.35 ms this way (with the KeyObject
    // HMAC key). `npm run bench -- sync` (b) cold 5,000 × 4 KiB Azurite → s3rver, one run
    // (SYNC_BENCH_SDK=1, load 6–10): 14.4 s / 4.6 CPU s this way (with Azure's raw Get Blob)
    // against 32.0 s / 11.0 CPU s through the SDKs and rclone's 37.7 s / 7.2 CPU s; (a) best
    // of 3 at load 18: 3.0 against 4.0 CPU s. SPILLWAY_STORE_SDK_ONLY=1 sends everything
    // through the SDK as before (the benchmark's comparison switch, and a way out should a
    // store need the SDK's handling of a response this path does not know).
    const objects =
      process.env.SPILLWAY_STORE_SDK_ONLY === "1"
        ? undefined
        : new S3ObjectHttp({
            endpoint,
            region: loc.region,
            bucket: loc.bucket,
            credentials: {
              accessKeyId: creds.accessKeyId,
              secretAccessKey: creds.secretAccessKey,
              ...(creds.sessionToken ? { sessionToken: creds.sessionToken } : {}),
            },
            transport: t,
            requestTimeoutMs,
          });
    return new S3Store(clientConfig, loc.bucket, loc.prefix, displayLocation(loc), objects);
  }

  /** The SDK module and a client built from the store's config, on first use. */
  private sdk(): Promise<{ c: S3Client; m: Sdk }> {
    this.sdkClient ??= loadSdk().then((m) => ({ c: new m.S3Client(this.clientConfig), m }));
    return this.sdkClient;
  }

  private full(key: string): string {
    return this.prefix + normaliseKey(key);
  }

  /**
   * The bucket is checked by listing at most one key under this store's prefix (ListObjects,
   * `max-keys=1`), not with HeadBucket. Decision (2026-12-07):
   * - Least privilege: both need s3:ListBucket, but HeadBucket is authorised as a listing of
   *   the whole bucket, so a policy that grants ListBucket only under a prefix (the
   *   `s3:prefix` condition, the usual way to share a bucket between teams) refuses it while
   *   it allows this listing — the prefix is all a sync ever lists.
   * - Cost: a store's HeadBucket may do more than its name says. s3rver serves HEAD /bucket
   *   with its GET handler — a ListObjects of up to 1,000 keys of the whole bucket, with every
   *   listed object's metadata read from disk: 125–250 ms and 160–280 ms of its CPU once the
   *   bucket held ~1,000 objects, against 11 ms and no measurable CPU for this listing
   *   (2026-12-07, 2 cores). Every cold copy in the benchmark paid it, on the emulator that
   *   sets the pace of the copy.
   * A missing bucket answers NoSuchBucket (404) to both; wrong credentials 403 to both.
   */
  async check(signal?: AbortSignal): Promise<void> {
    try {
      const query = { prefix: this.prefix, "max-keys": "1" };
      if (this.objects)
        (await this.objects.send({ method: "GET", key: "", query, ...(signal ? { signal } : {}) })).resume();
      else {
        const { c, m } = await this.sdk();
        await c.send(new m.ListObjectsCommand({ Bucket: this.bucket, Prefix: this.prefix, MaxKeys: 1 }), {
          abortSignal: signal,
        });
      }
    } catch (e) {
      const se = classifyS3Error(e, this.displayUri);
      if (se.code === "NotFound" || se.code === "ContainerNotFound")
        throw new StoreError("ContainerNotFound", `bucket not found: ${this.displayUri}`);
      throw se;
    }
  }

  /**
   * ListObjects (v1, paged by Marker = the last key seen) rather than ListObjectsV2: every
   * S3-compatible store answers v1 the same way, while v2's continuation tokens are where they
   * differ — s3rver's fail on Node ≥ 17 (a cipher OpenSSL 3 dropped), so any listing longer
   * than one page broke. rclone uses v1 for the same reason.
   *
   * Pages go through S3ObjectHttp and are read from their bytes (`EntryPage`: one reused
   * buffer, each entry decoded when yielded) — a sync lists its journal at its start, so the
   * SDK is not loaded for it. A page that is not the ListBucketResult expected switches this
   * store's listings to the SDK (its parser) from that page on.
   */
  async *list(options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    let marker: string | undefined;
    const prefix = this.prefix + (options.prefix ?? "");
    const maxKeys = options.pageSize ?? 1000;
    const buffer = new PageBuffer();
    // The next page is requested while this one is taken, and read when it is needed
    // (pages.ts); on the raw route only (the SDK reads its responses whole).
    const ahead = new PageAhead<IncomingMessage>(options.signal);
    const open = (from: string) => (signal: AbortSignal) =>
      this.objects!.send({ method: "GET", key: "", query: listQuery(prefix, maxKeys, from), signal });
    try {
      for (;;) {
        const from = marker;
        // A failed page (throttling, a 500) is fetched again from the same marker.
        const page = await withRetry(
          async () => {
            try {
              return await this.listPage(prefix, maxKeys, from, buffer, ahead.signal, (o) =>
                ahead.response(o),
              );
            } catch (e) {
              throw classifyS3Error(e, `list ${this.displayUri}`);
            }
          },
          options.signal ? { signal: options.signal } : {},
        );
        // ListObjects v1 gives NextMarker only with a delimiter: the next page starts after the
        // last key of this one (decoded ahead of its turn to request that page early; one that
        // cannot be decoded fails the listing when its turn comes, below).
        let last: string | undefined;
        try {
          last = page.count > 0 ? page.item(page.count - 1).key : undefined;
        } catch {
          last = undefined;
        }
        const after = page.nextMarker || last;
        const next = page.truncated && after && after !== marker ? after : undefined;
        ahead.page(
          page.count,
          next !== undefined && this.objects && this.rawListing ? open(next) : undefined,
        );
        for (let i = 0; i < page.count; i++) {
          let o: ListedObject;
          try {
            o = page.item(i);
          } catch (e) {
            throw new StoreError("Other", `list ${this.displayUri}: ${(e as Error).message}`);
          }
          if (o.key.startsWith(this.prefix))
            yield {
              key: o.key.slice(this.prefix.length),
              size: o.size,
              etag: unquote(o.etag),
              ...(o.lastModified ? { lastModified: o.lastModified } : {}),
            };
          const sent = ahead.taken(i);
          if (sent) await sent;
        }
        if (next === undefined) return;
        marker = next;
      }
    } finally {
      ahead.close();
    }
  }

  /** Whether listings go through S3ObjectHttp (see `list`). */
  private rawListing = true;

  /**
   * One bucket listing page (`query`) through S3ObjectHttp, read into `buffer` and parsed;
   * undefined when listings do not go that way, or this page could not be parsed — from then
   * on this store lists through the SDK.
   */
  private async rawPage<T>(
    query: Record<string, string>,
    buffer: PageBuffer,
    signal: AbortSignal | undefined,
    parse: (bytes: Buffer) => T,
    response?: (open: (signal: AbortSignal) => Promise<IncomingMessage>) => Promise<IncomingMessage>,
  ): Promise<T | undefined> {
    const objects = this.objects;
    if (!objects || !this.rawListing) return undefined;
    const open = (s: AbortSignal | undefined) =>
      objects.send({ method: "GET", key: "", query, ...(s ? { signal: s } : {}) });
    const res = await (response ? response(open) : open(signal));
    const bytes = await buffer.fill(res as AsyncIterable<Uint8Array>);
    try {
      return parse(bytes);
    } catch {
      this.rawListing = false;
      return undefined;
    }
  }

  private async listPage(
    prefix: string,
    maxKeys: number,
    marker: string | undefined,
    buffer: PageBuffer,
    signal: AbortSignal | undefined,
    response?: (open: (signal: AbortSignal) => Promise<IncomingMessage>) => Promise<IncomingMessage>,
  ): Promise<ListedPage<ListedObject>> {
    const raw = await this.rawPage(
      listQuery(prefix, maxKeys, marker),
      buffer,
      signal,
      parseObjectList,
      response,
    );
    if (raw) return raw;
    const { c, m } = await this.sdk();
    const out: ListObjectsCommandOutput = await c.send(
      new m.ListObjectsCommand({
        Bucket: this.bucket,
        Prefix: prefix,
        MaxKeys: maxKeys,
        ...(marker !== undefined ? { Marker: marker } : {}),
      }),
      { abortSignal: signal },
    );
    const contents = out.Contents ?? [];
    return {
      count: contents.length,
      item: (i) => {
        const o = contents[i];
        return {
          key: o?.Key ?? "",
          size: o?.Size ?? 0,
          etag: o?.ETag ?? "",
          ...(o?.LastModified ? { lastModified: o.LastModified } : {}),
        };
      },
      truncated: out.IsTruncated === true,
      nextMarker: out.NextMarker ?? "",
    };
  }

  async head(key: string, signal?: AbortSignal): Promise<ObjectHead | undefined> {
    try {
      let r: {
        size: number;
        etag: string | undefined;
        lastModified: Date | undefined;
        contentType: string | undefined;
        metadata: Record<string, string>;
      };
      if (this.objects) {
        const res = await this.objects.send({
          method: "HEAD",
          key: this.full(key),
          ...(signal ? { signal } : {}),
        });
        res.resume();
        const h = res.headers;
        // What HeadObjectCommand reads: x-amz-meta-* as the metadata, names lower-cased.
        const metadata: Record<string, string> = {};
        for (const [name, value] of Object.entries(h))
          if (name.startsWith("x-amz-meta-") && typeof value === "string")
            metadata[name.slice("x-amz-meta-".length)] = value;
        const modified = h["last-modified"] ? new Date(h["last-modified"]) : undefined;
        r = {
          size: Number(h["content-length"] ?? 0),
          etag: h.etag,
          lastModified: modified && !Number.isNaN(modified.getTime()) ? modified : undefined,
          contentType: h["content-type"],
          metadata,
        };
      } else {
        const { c, m } = await this.sdk();
        const out = await c.send(new m.HeadObjectCommand({ Bucket: this.bucket, Key: this.full(key) }), {
          abortSignal: signal,
        });
        r = {
          size: out.ContentLength ?? 0,
          etag: out.ETag,
          lastModified: out.LastModified,
          contentType: out.ContentType,
          metadata: { ...(out.Metadata ?? {}) },
        };
      }
      const { metadata } = r;
      const sha256 = metadata[SHA256_METADATA.s3];
      delete metadata[SHA256_METADATA.s3];
      return {
        key,
        size: r.size,
        etag: unquote(r.etag),
        ...(r.lastModified ? { lastModified: r.lastModified } : {}),
        ...(sha256 ? { sha256 } : {}),
        ...(r.contentType ? { contentType: r.contentType } : {}),
        metadata,
      };
    } catch (e) {
      const se = classifyS3Error(e, `head ${key}`);
      if (se.code === "NotFound") return undefined;
      throw se;
    }
  }

  async read(key: string, options: ReadOptions = {}): Promise<Readable> {
    const r = options.range;
    if (r && r.end !== undefined && r.end <= r.start) return Readable.from([]);
    try {
      if (this.objects) {
        const headers: Record<string, string> = {
          ...(r ? { range: `bytes=${r.start}-${r.end !== undefined ? r.end - 1 : ""}` } : {}),
          ...(options.ifMatch ? { "if-match": `"${unquote(options.ifMatch)}"` } : {}),
        };
        return await this.objects.send({
          method: "GET",
          key: this.full(key),
          headers,
          ...(options.signal ? { signal: options.signal } : {}),
        });
      }
      const { c, m } = await this.sdk();
      const out = await c.send(
        new m.GetObjectCommand({
          Bucket: this.bucket,
          Key: this.full(key),
          ...(r ? { Range: `bytes=${r.start}-${r.end !== undefined ? r.end - 1 : ""}` } : {}),
          ...(options.ifMatch ? { IfMatch: `"${unquote(options.ifMatch)}"` } : {}),
        }),
        { abortSignal: options.signal },
      );
      const body = out.Body;
      if (body instanceof Readable) return body;
      if (!body) return Readable.from([]);
      return Readable.fromWeb(
        (body as { transformToWebStream(): ReadableStream }).transformToWebStream() as never,
      );
    } catch (e) {
      throw classifyS3Error(e, `read ${key}`);
    }
  }

  private metadataOf(options: WriteOptions, sha256?: string): Record<string, string> {
    const sha = sha256 ?? options.sha256;
    return { ...(options.metadata ?? {}), ...(sha ? { [SHA256_METADATA.s3]: sha } : {}) };
  }

  /** Headers of a PutObject sent by S3ObjectHttp (what PutObjectCommand would send). */
  private putHeaders(
    options: WriteOptions,
    size: number,
    md5b64: string | undefined,
  ): Record<string, string> {
    const headers: Record<string, string> = {
      "content-length": String(size),
      ...(md5b64 ? { "content-md5": md5b64 } : {}),
      ...(options.contentType ? { "content-type": options.contentType } : {}),
      ...(options.ifNoneMatch ? { "if-none-match": options.ifNoneMatch } : {}),
      ...(options.ifMatch ? { "if-match": options.ifMatch } : {}),
    };
    for (const [k, v] of Object.entries(this.metadataOf(options))) headers[`x-amz-meta-${k}`] = v;
    return headers;
  }

  async put(key: string, body: Uint8Array, options: WriteOptions = {}): Promise<PutResult> {
    const Key = this.full(key);
    try {
      const digest = options.md5
        ? { hex: options.md5, b64: Buffer.from(options.md5, "hex").toString("base64") }
        : md5(body);
      if (this.objects) {
        // Without the caller's sha256 the payload is hashed here, as the SDK's signer would.
        const payloadHash = options.sha256 ?? createHash("sha256").update(body).digest("hex");
        const res = await this.objects.send({
          method: "PUT",
          key: Key,
          headers: this.putHeaders(options, body.length, digest.b64),
          payloadHash,
          body,
          ...(options.signal ? { signal: options.signal } : {}),
        });
        res.resume();
        const etag = unquote(res.headers.etag);
        if (/^[0-9a-f]{32}$/.test(etag) && etag !== digest.hex)
          throw new StoreError("Integrity", `put ${key}: stored MD5 ${etag} differs from the data sent`);
        return { etag };
      }
      const { c, m } = await this.sdk();
      const command = new m.PutObjectCommand({
        Bucket: this.bucket,
        Key,
        Body: body,
        ContentLength: body.length,
        ContentMD5: digest.b64,
        Metadata: this.metadataOf(options),
        ...(options.contentType ? { ContentType: options.contentType } : {}),
        ...(options.ifNoneMatch ? { IfNoneMatch: options.ifNoneMatch } : {}),
        ...(options.ifMatch ? { IfMatch: options.ifMatch } : {}),
      });
      const r = await withOwnSignal(options.signal, (abortSignal) =>
        c.send(options.sha256 ? withPayloadHash(command, options.sha256) : command, { abortSignal }),
      );
      const etag = unquote(r.ETag);
      // A single-part S3 ETag is the content MD5: an end-to-end check of what the store holds.
      if (/^[0-9a-f]{32}$/.test(etag) && etag !== digest.hex)
        throw new StoreError("Integrity", `put ${key}: stored MD5 ${etag} differs from the data sent`);
      return { etag };
    } catch (e) {
      throw classifyS3Error(e, `put ${key}`);
    }
  }

  /**
   * One streamed PUT (what rclone does below its 200 MiB upload cutoff): no part files for the
   * store to reassemble — s3rver re-reads and rewrites every part at CompleteMultipartUpload.
   * Integrity: Content-MD5 when the source said its MD5, the sha256 as the SigV4 payload hash
   * when the source carried it (S3 rejects a body that differs), and the returned single-part
   * ETag (the MD5 of what was stored) for the caller to compare with what it sent.
   */
  async putStream(
    key: string,
    given: StreamBody,
    size: number,
    options: StreamWriteOptions = {},
  ): Promise<StreamPutResult> {
    const Key = this.full(key);
    // The SDK keeps what it is given: lent chunks go to it as a stream of copies.
    let body = given;
    try {
      if (this.objects) {
        const md5b64 = options.md5 ? Buffer.from(options.md5, "hex").toString("base64") : undefined;
        const res = await this.objects.send({
          method: "PUT",
          key: Key,
          headers: this.putHeaders(options, size, md5b64),
          payloadHash: options.sha256 ?? "UNSIGNED-PAYLOAD",
          body,
          ...(options.signal ? { signal: options.signal } : {}),
        });
        res.resume();
        const etag = unquote(res.headers.etag);
        return { etag, ...(/^[0-9a-f]{32}$/.test(etag) ? { md5: etag } : {}) };
      }
      const { c, m } = await this.sdk();
      body = given instanceof LentChunks ? given.toReadable() : given;
      const command = new m.PutObjectCommand({
        Bucket: this.bucket,
        Key,
        Body: body,
        ContentLength: size,
        ...(options.md5 ? { ContentMD5: Buffer.from(options.md5, "hex").toString("base64") } : {}),
        Metadata: this.metadataOf(options),
        ...(options.contentType ? { ContentType: options.contentType } : {}),
        ...(options.ifNoneMatch ? { IfNoneMatch: options.ifNoneMatch } : {}),
        ...(options.ifMatch ? { IfMatch: options.ifMatch } : {}),
      });
      const r = await withOwnSignal(options.signal, (abortSignal) =>
        c.send(withPayloadHash(command, options.sha256 ?? "UNSIGNED-PAYLOAD"), { abortSignal }),
      );
      const etag = unquote(r.ETag);
      return { etag, ...(/^[0-9a-f]{32}$/.test(etag) ? { md5: etag } : {}) };
    } catch (e) {
      if (body instanceof Readable) body.destroy();
      throw classifyS3Error(e, `put ${key}`);
    }
  }

  async startUpload(key: string, options: WriteOptions = {}): Promise<MultipartUpload> {
    const Key = this.full(key);
    const { bucket } = this;
    const { c: client, m } = await this.sdk();
    let uploadId: string;
    try {
      const r = await client.send(
        new m.CreateMultipartUploadCommand({
          Bucket: bucket,
          Key,
          Metadata: this.metadataOf(options),
          ...(options.contentType ? { ContentType: options.contentType } : {}),
        }),
        { abortSignal: options.signal },
      );
      uploadId = r.UploadId!;
    } catch (e) {
      throw classifyS3Error(e, `start upload ${key}`);
    }
    return {
      key,
      async uploadPart(partNumber: number, data: Uint8Array, signal?: AbortSignal): Promise<PartReceipt> {
        try {
          const digest = md5(data);
          const r = await withOwnSignal(signal, (abortSignal) =>
            client.send(
              withPayloadHash(
                new m.UploadPartCommand({
                  Bucket: bucket,
                  Key,
                  UploadId: uploadId,
                  PartNumber: partNumber,
                  Body: data,
                  ContentLength: data.length,
                  ContentMD5: digest.b64,
                }),
                "UNSIGNED-PAYLOAD",
              ),
              { abortSignal },
            ),
          );
          const etag = unquote(r.ETag);
          if (/^[0-9a-f]{32}$/.test(etag) && etag !== digest.hex)
            throw new StoreError(
              "Integrity",
              `${key} part ${partNumber}: stored MD5 differs from the data sent`,
            );
          return { partNumber, size: data.length, id: r.ETag ?? "" };
        } catch (e) {
          throw classifyS3Error(e, `upload ${key} part ${partNumber}`);
        }
      },
      async commit(parts: PartReceipt[], commitOptions: CommitOptions = {}): Promise<PutResult> {
        const sorted = [...parts].sort((a, b) => a.partNumber - b.partNumber);
        let etag: string;
        try {
          const r = await withOwnSignal(commitOptions.signal, (abortSignal) =>
            client.send(
              new m.CompleteMultipartUploadCommand({
                Bucket: bucket,
                Key,
                UploadId: uploadId,
                MultipartUpload: { Parts: sorted.map((p) => ({ PartNumber: p.partNumber, ETag: p.id })) },
                ...(options.ifNoneMatch ? { IfNoneMatch: options.ifNoneMatch } : {}),
                ...(options.ifMatch ? { IfMatch: options.ifMatch } : {}),
              }),
              { abortSignal },
            ),
          );
          etag = unquote(r.ETag);
        } catch (e) {
          throw classifyS3Error(e, `complete upload ${key}`);
        }
        // S3 fixes metadata when the upload starts. A hash known only now is NOT set by an
        // in-place server-side copy: that would make the store rewrite the whole object once
        // more (and above 5 GiB it needs a multipart copy). The sync manifest records it; the
        // metadata carries it whenever the source did (then it was given at start).
        return { etag };
      },
      async abort(): Promise<void> {
        await client
          .send(new m.AbortMultipartUploadCommand({ Bucket: bucket, Key, UploadId: uploadId }))
          .catch(() => {});
      },
    };
  }

  async delete(key: string, signal?: AbortSignal): Promise<void> {
    try {
      if (this.objects)
        (
          await this.objects.send({ method: "DELETE", key: this.full(key), ...(signal ? { signal } : {}) })
        ).resume();
      else {
        const { c, m } = await this.sdk();
        await c.send(new m.DeleteObjectCommand({ Bucket: this.bucket, Key: this.full(key) }), {
          abortSignal: signal,
        });
      }
    } catch (e) {
      const se = classifyS3Error(e, `delete ${key}`);
      if (se.code !== "NotFound") throw se;
    }
  }

  /**
   * Aborts the incomplete multipart uploads a killed writer left under the prefix (what
   * `rclone cleanup` and `aws s3api list-multipart-uploads` + `abort-multipart-upload` do):
   * S3 keeps and bills their parts until a lifecycle rule or an abort removes them.
   *
   * ListMultipartUploads is paged by key-marker + upload-id-marker (one page of at most 1,000
   * held at a time). An upload is aborted only when it is the caller's (`owns`), was initiated
   * before `before` and has no part uploaded since — ListParts, read only for those, so an
   * upload a live writer started long ago (a large object still being copied) is left alone,
   * as the temp-file clean-up leaves a file that is still being written. Both times are the
   * store's clock, compared with ours: the grace period the caller subtracts covers the skew.
   */
  async abortAbandonedUploads(options: AbandonedUploadOptions): Promise<AbandonedUploadResult> {
    const result: AbandonedUploadResult = { aborted: 0, failed: 0 };
    const { before, signal } = options;
    const failed = (what: string, e: unknown) => {
      result.failed++;
      options.onError?.(what, classifyS3Error(e, what));
    };
    const call: Call = async <T>(what: string, fn: () => Promise<T>): Promise<T> =>
      withRetry(
        async () => {
          try {
            return await fn();
          } catch (e) {
            throw classifyS3Error(e, what);
          }
        },
        {
          policy: CLEANUP_RETRY,
          retryable: (e) => isTransient(e) && !notImplemented(e),
          ...(signal ? { signal } : {}),
        },
      );
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    const buffer = new PageBuffer();
    try {
      for (;;) {
        const page = await call(`list multipart uploads of ${this.displayUri}`, () =>
          this.uploadsPage(keyMarker, uploadIdMarker, buffer, signal),
        );
        let last: ListedUpload | undefined;
        for (let i = 0; i < page.count; i++) {
          const u = page.item(i);
          last = u;
          const { key: Key, uploadId: UploadId, initiated: Initiated } = u;
          if (!Key.startsWith(this.prefix) || !UploadId || !Initiated || !(Initiated < before)) continue;
          const key = Key.slice(this.prefix.length);
          if (options.owns && !options.owns(key)) continue;
          try {
            if (await this.partUploadedSince(Key, UploadId, before, call, signal)) continue;
            await call(`abort upload of ${key}`, async () => {
              const { c, m } = await this.sdk();
              return c.send(new m.AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId }), {
                abortSignal: signal,
              });
            });
            result.aborted++;
          } catch (e) {
            signal?.throwIfAborted();
            // Gone meanwhile (completed, or aborted by another clean-up): nothing left to do.
            if (!(e instanceof StoreError && e.code === "NotFound")) failed(`abort upload of ${key}`, e);
          }
        }
        const nextKey = page.nextKeyMarker || last?.key;
        const nextId = page.nextUploadIdMarker || last?.uploadId;
        if (!page.truncated || !nextKey || (nextKey === keyMarker && nextId === uploadIdMarker)) break;
        keyMarker = nextKey;
        uploadIdMarker = nextId;
      }
    } catch (e) {
      // A store without the multipart listing (s3rver answers NotImplemented) has nothing this
      // clean-up can do: not a failure to report on every sync.
      if (!signal?.aborted && !notImplemented(e)) failed(`list multipart uploads of ${this.displayUri}`, e);
    }
    return result;
  }

  /**
   * One ListMultipartUploads page: through S3ObjectHttp, read from its bytes, as `listPage`
   * (every sync asks at its start, and on most stores the answer is an empty page or
   * NotImplemented: no reason to load the SDK for it); through the SDK otherwise.
   */
  private async uploadsPage(
    keyMarker: string | undefined,
    uploadIdMarker: string | undefined,
    buffer: PageBuffer,
    signal: AbortSignal | undefined,
  ): Promise<UploadsPage> {
    const raw = await this.rawPage(
      {
        uploads: "",
        "max-uploads": "1000",
        ...(this.prefix ? { prefix: this.prefix } : {}),
        ...(keyMarker !== undefined ? { "key-marker": keyMarker } : {}),
        ...(uploadIdMarker !== undefined ? { "upload-id-marker": uploadIdMarker } : {}),
      },
      buffer,
      signal,
      parseUploadList,
    );
    if (raw) return raw;
    const { c, m } = await this.sdk();
    const out: ListMultipartUploadsCommandOutput = await c.send(
      new m.ListMultipartUploadsCommand({
        Bucket: this.bucket,
        ...(this.prefix ? { Prefix: this.prefix } : {}),
        MaxUploads: 1000,
        ...(keyMarker !== undefined ? { KeyMarker: keyMarker } : {}),
        ...(uploadIdMarker !== undefined ? { UploadIdMarker: uploadIdMarker } : {}),
      }),
      { abortSignal: signal },
    );
    const uploads = out.Uploads ?? [];
    return {
      count: uploads.length,
      item: (i) => {
        const u = uploads[i];
        return {
          key: u?.Key ?? "",
          uploadId: u?.UploadId ?? "",
          ...(u?.Initiated ? { initiated: u.Initiated } : {}),
        };
      },
      truncated: out.IsTruncated === true,
      nextKeyMarker: out.NextKeyMarker ?? "",
      nextUploadIdMarker: out.NextUploadIdMarker ?? "",
    };
  }

  /** Whether any part of the upload was uploaded at or after `since` (ListParts, paged). */
  private async partUploadedSince(
    Key: string,
    UploadId: string,
    since: Date,
    call: Call,
    signal: AbortSignal | undefined,
  ): Promise<boolean> {
    let marker: string | undefined;
    for (;;) {
      const page: ListPartsCommandOutput = await call(
        `list parts of ${Key.slice(this.prefix.length)}`,
        async () => {
          const { c, m } = await this.sdk();
          return c.send(
            new m.ListPartsCommand({
              Bucket: this.bucket,
              Key,
              UploadId,
              ...(marker !== undefined ? { PartNumberMarker: marker } : {}),
            }),
            { abortSignal: signal },
          );
        },
      );
      if (page.Parts?.some((p) => p.LastModified !== undefined && !(p.LastModified < since))) return true;
      const next = page.NextPartNumberMarker ?? page.Parts?.at(-1)?.PartNumber?.toString();
      if (!page.IsTruncated || !next || next === marker) return false;
      marker = next;
    }
  }
}

/** A clean-up request, retried briefly and classified (see `abortAbandonedUploads`). */
type Call = <T>(what: string, fn: () => Promise<T>) => Promise<T>;

interface ListedObject {
  key: string;
  size: number;
  etag: string;
  lastModified?: Date;
}
interface ListedUpload {
  key: string;
  uploadId: string;
  initiated?: Date;
}
/** A listing page, whichever route read it: its entries by index, decoded on demand. */
interface ListedPage<T> {
  count: number;
  item(i: number): T;
  truncated: boolean;
  /** "" when the page does not say (ListObjects v1 gives NextMarker only with a delimiter). */
  nextMarker?: string;
}
interface UploadsPage extends ListedPage<ListedUpload> {
  nextKeyMarker: string;
  nextUploadIdMarker: string;
}

const dateOf = (text: string | undefined): Date | undefined => {
  if (!text) return undefined;
  const d = new Date(text);
  return Number.isNaN(d.getTime()) ? undefined : d;
};

/**
 * A ListObjects (v1) response from its bytes. Keys are as S3 sends them without
 * `encoding-type` (not requested, as the SDK's ListObjects does not: XML-escaped text). Throws
 * on anything else: an entry without a key or a size, a truncated document.
 */
export function parseObjectList(bytes: Buffer): ListedPage<ListedObject> {
  const page = EntryPage.open(bytes, "ListBucketResult", "Contents");
  checkTruncation(page);
  return {
    count: page.count,
    item: (i) => {
      const entry = page.entry(i);
      const key = element(entry, "Key");
      const size = Number(element(entry, "Size"));
      if (key === undefined || !Number.isSafeInteger(size)) throw new Error("unexpected ListObjects entry");
      const lastModified = dateOf(element(entry, "LastModified"));
      return { key, size, etag: element(entry, "ETag") ?? "", ...(lastModified ? { lastModified } : {}) };
    },
    truncated: element(page.outside, "IsTruncated") === "true",
    nextMarker: element(page.outside, "NextMarker") ?? "",
  };
}

/** Every page says whether it is the last; one that does not is not what this reader knows. */
function checkTruncation(page: EntryPage): void {
  const truncated = element(page.outside, "IsTruncated");
  if (truncated !== "true" && truncated !== "false") throw new Error("no IsTruncated");
}

/** A ListMultipartUploads response from its bytes; throws as `parseObjectList`. */
export function parseUploadList(bytes: Buffer): UploadsPage {
  const page = EntryPage.open(bytes, "ListMultipartUploadsResult", "Upload");
  checkTruncation(page);
  return {
    count: page.count,
    item: (i) => {
      const entry = page.entry(i);
      const key = element(entry, "Key");
      const uploadId = element(entry, "UploadId");
      if (key === undefined || uploadId === undefined)
        throw new Error("unexpected ListMultipartUploads entry");
      const initiated = dateOf(element(entry, "Initiated"));
      return { key, uploadId, ...(initiated ? { initiated } : {}) };
    },
    truncated: element(page.outside, "IsTruncated") === "true",
    nextKeyMarker: element(page.outside, "NextKeyMarker") ?? "",
    nextUploadIdMarker: element(page.outside, "NextUploadIdMarker") ?? "",
  };
}

/** S3's answer to an operation the store does not implement (501 NotImplemented). */
function notImplemented(e: unknown): boolean {
  const c = (e instanceof StoreError ? e.cause : e) as
    | { name?: string; $metadata?: { httpStatusCode?: number } }
    | undefined;
  return c?.name === "NotImplemented" || c?.$metadata?.httpStatusCode === 501;
}

/** The clean-up is best effort beside a sync: a few quick retries, then it reports and moves on. */
const CLEANUP_RETRY = { attempts: 3, baseDelayMs: 200, maxDelayMs: 2_000 };

/** A ListObjects (v1) page's query: `marker` is the last key of the page before. */
function listQuery(prefix: string, maxKeys: number, marker: string | undefined): Record<string, string> {
  return { prefix, "max-keys": String(maxKeys), ...(marker !== undefined ? { marker } : {}) };
}
