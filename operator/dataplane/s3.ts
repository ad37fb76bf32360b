/**
 * S3-compatible ObjectStore (AWS S3, OCI Object Storage through its S3 compatibility API,
 * s3rver): path-style URLs, checksums only when required (newer SDK defaults add CRC headers
 * that S3-compatible stores reject), Content-MD5 on every part and single put, multipart
 * uploads that become visible only at CompleteMultipartUpload.
 */
import { createHash } from "node:crypto";
import { Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import { Readable } from "node:stream";
import type {
  ListMultipartUploadsCommandOutput,
  ListObjectsCommandOutput,
  ListPartsCommandOutput,
  S3Client,
  S3ClientConfig,
} from "@aws-sdk/client-s3";
import type { MiddlewareStack } from "@smithy/types";
import { EMPTY_SHA256, S3ObjectHttp } from "./http-s3.ts";
import { displayLocation } from "./open.ts";
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
    $metadata?: { httpStatusCode?: number };
    $retryable?: unknown;
    retryAfterMs?: number;
  };
  const status = err.$metadata?.httpStatusCode;
  const name = err.name ?? err.Code ?? "";
  const msg = `${what}: ${name || "error"}${status ? ` (HTTP ${status})` : ""}`;
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
    const agentOptions = { keepAlive: true, maxSockets: 128 };
    const agents = { http: new HttpAgent(agentOptions), https: new HttpsAgent(agentOptions) };
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
        httpAgent: agents.http,
        httpsAgent: agents.https,
        connectionTimeout: 10_000,
        requestTimeout: requestTimeoutMs,
      },
    };
    // Decision: GetObject, PutObject (buffered and streamed) and HeadBucket go through
    // S3ObjectHttp — the SDK's signer over node:http on the same keep-alive agents, without
    // the SDK's middleware stack (see http-s3.ts); the rest stays on the SDK.
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
            endpoint: loc.endpoint ?? `https://s3.${loc.region}.amazonaws.com`,
            region: loc.region,
            bucket: loc.bucket,
            credentials: {
              accessKeyId: creds.accessKeyId,
              secretAccessKey: creds.secretAccessKey,
              ...(creds.sessionToken ? { sessionToken: creds.sessionToken } : {}),
            },
            agents,
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

  async check(signal?: AbortSignal): Promise<void> {
    try {
      if (this.objects) (await this.objects.headBucket(signal)).resume();
      else {
        const { c, m } = await this.sdk();
        await c.send(new m.HeadBucketCommand({ Bucket: this.bucket }), { abortSignal: signal });
      }
    } catch (e) {
      const se = classifyS3Error(e, this.displayUri);
      if (se.code === "NotFound")
        throw new StoreError("ContainerNotFound", `bucket not found: ${this.displayUri}`);
      throw se;
    }
  }

  /**
   * ListObjects (v1, paged by Marker = the last key seen) rather than ListObjectsV2: every
   * S3-compatible store answers v1 the same way, while v2's continuation tokens are where they
   * differ — s3rver's fail on Node ≥ 17 (a cipher OpenSSL 3 dropped), so any listing longer
   * than one page broke. rclone uses v1 for the same reason.
   */
  async *list(options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    let marker: string | undefined;
    const prefix = this.prefix + (options.prefix ?? "");
    for (;;) {
      // A failed page (throttling, a 500) is fetched again from the same marker.
      const page: ListObjectsCommandOutput = await withRetry(
        async () => {
          try {
            const { c, m } = await this.sdk();
            return await c.send(
              new m.ListObjectsCommand({
                Bucket: this.bucket,
                Prefix: prefix,
                MaxKeys: options.pageSize ?? 1000,
                ...(marker !== undefined ? { Marker: marker } : {}),
              }),
              { abortSignal: options.signal },
            );
          } catch (e) {
            throw classifyS3Error(e, `list ${this.displayUri}`);
          }
        },
        options.signal ? { signal: options.signal } : {},
      );
      const contents = page.Contents ?? [];
      for (const o of contents) {
        if (!o.Key?.startsWith(this.prefix)) continue;
        yield {
          key: o.Key.slice(this.prefix.length),
          size: o.Size ?? 0,
          etag: unquote(o.ETag),
          ...(o.LastModified ? { lastModified: o.LastModified } : {}),
        };
      }
      const last = page.NextMarker ?? contents[contents.length - 1]?.Key;
      if (!page.IsTruncated || !last || last === marker) return;
      marker = last;
    }
  }

  async head(key: string, signal?: AbortSignal): Promise<ObjectHead | undefined> {
    try {
      const { c, m } = await this.sdk();
      const r = await c.send(new m.HeadObjectCommand({ Bucket: this.bucket, Key: this.full(key) }), {
        abortSignal: signal,
      });
      const metadata = { ...(r.Metadata ?? {}) };
      const sha256 = metadata[SHA256_METADATA.s3];
      delete metadata[SHA256_METADATA.s3];
      return {
        key,
        size: r.ContentLength ?? 0,
        etag: unquote(r.ETag),
        ...(r.LastModified ? { lastModified: r.LastModified } : {}),
        ...(sha256 ? { sha256 } : {}),
        ...(r.ContentType ? { contentType: r.ContentType } : {}),
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
        return await this.objects.send(
          "GET",
          this.full(key),
          headers,
          EMPTY_SHA256,
          undefined,
          options.signal,
        );
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
        const res = await this.objects.send(
          "PUT",
          Key,
          this.putHeaders(options, body.length, digest.b64),
          payloadHash,
          body,
          options.signal,
        );
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
      const r = await c.send(options.sha256 ? withPayloadHash(command, options.sha256) : command, {
        abortSignal: options.signal,
      });
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
    body: Readable,
    size: number,
    options: StreamWriteOptions = {},
  ): Promise<StreamPutResult> {
    const Key = this.full(key);
    try {
      if (this.objects) {
        const md5b64 = options.md5 ? Buffer.from(options.md5, "hex").toString("base64") : undefined;
        const res = await this.objects.send(
          "PUT",
          Key,
          this.putHeaders(options, size, md5b64),
          options.sha256 ?? "UNSIGNED-PAYLOAD",
          body,
          options.signal,
        );
        res.resume();
        const etag = unquote(res.headers.etag);
        return { etag, ...(/^[0-9a-f]{32}$/.test(etag) ? { md5: etag } : {}) };
      }
      const { c, m } = await this.sdk();
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
      const r = await c.send(withPayloadHash(command, options.sha256 ?? "UNSIGNED-PAYLOAD"), {
        abortSignal: options.signal,
      });
      const etag = unquote(r.ETag);
      return { etag, ...(/^[0-9a-f]{32}$/.test(etag) ? { md5: etag } : {}) };
    } catch (e) {
      body.destroy();
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
          const r = await client.send(
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
            { abortSignal: signal },
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
          const r = await client.send(
            new m.CompleteMultipartUploadCommand({
              Bucket: bucket,
              Key,
              UploadId: uploadId,
              MultipartUpload: { Parts: sorted.map((p) => ({ PartNumber: p.partNumber, ETag: p.id })) },
              ...(options.ifNoneMatch ? { IfNoneMatch: options.ifNoneMatch } : {}),
              ...(options.ifMatch ? { IfMatch: options.ifMatch } : {}),
            }),
            { abortSignal: commitOptions.signal },
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
      const { c, m } = await this.sdk();
      await c.send(new m.DeleteObjectCommand({ Bucket: this.bucket, Key: this.full(key) }), {
        abortSignal: signal,
      });
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
    const call = async <T>(what: string, fn: (c: S3Client, m: Sdk) => Promise<T>): Promise<T> =>
      withRetry(
        async () => {
          try {
            const { c, m } = await this.sdk();
            return await fn(c, m);
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
    try {
      for (;;) {
        const page: ListMultipartUploadsCommandOutput = await call(
          `list multipart uploads of ${this.displayUri}`,
          (c, m) =>
            c.send(
              new m.ListMultipartUploadsCommand({
                Bucket: this.bucket,
                ...(this.prefix ? { Prefix: this.prefix } : {}),
                MaxUploads: 1000,
                ...(keyMarker !== undefined ? { KeyMarker: keyMarker } : {}),
                ...(uploadIdMarker !== undefined ? { UploadIdMarker: uploadIdMarker } : {}),
              }),
              { abortSignal: signal },
            ),
        );
        for (const u of page.Uploads ?? []) {
          const { Key, UploadId, Initiated } = u;
          if (!Key?.startsWith(this.prefix) || !UploadId || !Initiated || !(Initiated < before)) continue;
          const key = Key.slice(this.prefix.length);
          if (options.owns && !options.owns(key)) continue;
          try {
            if (await this.partUploadedSince(Key, UploadId, before, call, signal)) continue;
            await call(`abort upload of ${key}`, (c, m) =>
              c.send(new m.AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId }), {
                abortSignal: signal,
              }),
            );
            result.aborted++;
          } catch (e) {
            signal?.throwIfAborted();
            // Gone meanwhile (completed, or aborted by another clean-up): nothing left to do.
            if (!(e instanceof StoreError && e.code === "NotFound")) failed(`abort upload of ${key}`, e);
          }
        }
        const nextKey = page.NextKeyMarker ?? page.Uploads?.at(-1)?.Key;
        const nextId = page.NextUploadIdMarker ?? page.Uploads?.at(-1)?.UploadId;
        if (!page.IsTruncated || !nextKey || (nextKey === keyMarker && nextId === uploadIdMarker)) break;
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

  /** Whether any part of the upload was uploaded at or after `since` (ListParts, paged). */
  private async partUploadedSince(
    Key: string,
    UploadId: string,
    since: Date,
    call: <T>(what: string, fn: (c: S3Client, m: Sdk) => Promise<T>) => Promise<T>,
    signal: AbortSignal | undefined,
  ): Promise<boolean> {
    let marker: string | undefined;
    for (;;) {
      const page: ListPartsCommandOutput = await call(
        `list parts of ${Key.slice(this.prefix.length)}`,
        (c, m) =>
          c.send(
            new m.ListPartsCommand({
              Bucket: this.bucket,
              Key,
              UploadId,
              ...(marker !== undefined ? { PartNumberMarker: marker } : {}),
            }),
            { abortSignal: signal },
          ),
      );
      if (page.Parts?.some((p) => p.LastModified !== undefined && !(p.LastModified < since))) return true;
      const next = page.NextPartNumberMarker ?? page.Parts?.at(-1)?.PartNumber?.toString();
      if (!page.IsTruncated || !next || next === marker) return false;
      marker = next;
    }
  }
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
