/**
 * The hot S3 object requests — GetObject and PutObject, one per small object in a sync — sent
 * with the SDK's own SigV4 signer (`@smithy/signature-v4`, the one `@aws-sdk/client-s3` signs
 * with) over `node:http` on the store's keep-alive agent; so are the bucket check, HeadObject,
 * DeleteObject and the listings (ListObjects, ListMultipartUploads), which a sync sends at its
 * start and end. Multipart uploads (objects above the upload cutoff) and the clean-up of
 * abandoned uploads stay on `S3Client`, loaded only then.
 *
 * Why: a profile of a cold copy of 1,000 × 4 KiB objects (Azurite → s3rver) put ≈ 1 CPU ms per
 * object in the SDK's request path — its middleware stack (endpoint rules, flexible-checksum
 * checks, retry bookkeeping, schema serde, logger filters) around a request that is, on the wire,
 * a signed PUT with five headers. That was as much client CPU per object as rclone spends on
 * the whole copy. What this path keeps: the signer (credentials, session token, the canonical
 * request, the cached signing key), the payload hash given by the caller (Spillway's sha256 of
 * the body, which S3 checks; `UNSIGNED-PAYLOAD` where it is not known), Content-MD5, the error
 * codes S3 returns (parsed from the error body, mapped by the adapter's `classifyS3Error`), no
 * retries here (the sync engine retries with backoff, as with the SDK at `maxAttempts: 1`).
 * The measured gain is in the adapter's comment where the path is chosen (`s3.ts`).
 */

import { createHash, createHmac, createSecretKey, type Hash, type Hmac, type KeyObject } from "node:crypto";
import type { IncomingMessage, OutgoingHttpHeaders } from "node:http";
import type { Readable } from "node:stream";
// A dependency of @aws-sdk/client-s3 (the signer it signs with), not a new package.
import { SignatureV4 } from "@smithy/signature-v4";
import type { Checksum, SourceData } from "@smithy/types";
import type { LentChunks } from "./reads.ts";
import { errorText, send, type Transport } from "./transport.ts";

/** Node KeyObjects of the HMAC keys the signer hands in, by the key's identity. */
const keyObjects = new WeakMap<object, KeyObject>();

/**
 * The sha256 the signer is constructed with (its `sha256` option; the SDK passes its own
 * node:crypto one). Same algorithm, one difference: an HMAC key given as bytes becomes a
 * KeyObject once. `createHmac` with a raw Buffer key prepares the key on every call — about
 * 30–40 µs here against 3 µs with a KeyObject — and the signer HMACs the string to sign with its
 * cached signing key (the same Uint8Array every request of a day), once per request.
 */
export class KeyedSha256 implements Checksum {
  private hash: Hash | Hmac;
  constructor(private readonly secret?: SourceData) {
    this.hash = this.start();
  }
  private start(): Hash | Hmac {
    const secret = this.secret;
    if (secret === undefined) return createHash("sha256");
    if (typeof secret === "string") return createHmac("sha256", secret);
    let key = keyObjects.get(secret);
    if (!key) {
      const bytes = ArrayBuffer.isView(secret)
        ? Buffer.from(secret.buffer, secret.byteOffset, secret.byteLength)
        : Buffer.from(secret);
      key = createSecretKey(Buffer.from(bytes));
      keyObjects.set(secret, key);
    }
    return createHmac("sha256", key);
  }
  update(chunk: Uint8Array): void {
    this.hash.update(chunk);
  }
  async digest(): Promise<Uint8Array> {
    const b = this.hash.digest();
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  }
  reset(): void {
    this.hash = this.start();
  }
}

export interface S3HttpOptions {
  /** `http(s)://host[:port][/base]`; path-style requests go to `<base>/<bucket>/<key>`. */
  endpoint: string;
  region: string;
  bucket: string;
  credentials: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** node:http(s) for the endpoint's protocol and the store's keep-alive agent. */
  transport: Transport;
  /** Socket idle time that fails a request (the SDK client's `requestTimeout`). */
  requestTimeoutMs?: number;
}

/** A failed request, shaped like the SDK's service exceptions so one classifier maps both. */
export interface S3HttpError extends Error {
  $metadata: { httpStatusCode: number };
  /** The `Retry-After` header, when the store sent one, in ms. */
  retryAfterMs?: number;
}

/**
 * S3's URI encoding of one path segment (RFC 3986 unreserved characters kept), the encoding
 * the SDK applies to an object key: encodeURIComponent leaves `!'()*` alone, S3 does not.
 */
export function encodeKeyPath(key: string): string {
  return key.split("/").map(encodeComponent).join("/");
}

/** RFC 3986 encoding (unreserved characters kept), as SigV4 encodes path segments and queries. */
function encodeComponent(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

export class S3ObjectHttp {
  private readonly signer: SignatureV4;
  private readonly secure: boolean;
  private readonly hostname: string;
  private readonly port: number | undefined;
  private readonly hostHeader: string;
  private readonly base: string;

  constructor(private readonly options: S3HttpOptions) {
    const url = new URL(options.endpoint);
    this.secure = url.protocol === "https:";
    // `[::1]` in a URL is `::1` for the socket.
    this.hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
    this.port = url.port ? Number(url.port) : undefined;
    this.hostHeader = url.host;
    this.base = `${url.pathname.replace(/\/+$/, "")}/${options.bucket}/`;
    this.signer = new SignatureV4({
      service: "s3",
      region: options.region,
      credentials: options.credentials,
      sha256: KeyedSha256,
      // S3 signs the path as sent (encoded once), not encoded a second time.
      uriEscapePath: false,
      applyChecksum: false,
    });
  }

  /**
   * Sends one signed request and resolves with the response once its headers arrived: a 2xx
   * response is returned unread (the caller reads or drains it); any other status is read
   * (bounded) and thrown as an `S3HttpError` named after S3's `<Code>`.
   */
  async send(r: S3Request): Promise<IncomingMessage> {
    const { method, key, signal } = r;
    // "" is the bucket itself (`/<bucket>`, path-style, as the SDK sends ListObjects).
    const path = key === "" ? this.base.slice(0, -1) : this.base + encodeKeyPath(key);
    const query = r.query ?? {};
    // The query as sent is the one signed: each name and value encoded as SigV4's canonical
    // query encodes them (RFC 3986 unreserved kept), names sorted.
    const search = Object.keys(query)
      .sort()
      .map((k) => `${encodeComponent(k)}=${encodeComponent(query[k] ?? "")}`)
      .join("&");
    const signed = await this.signer.sign({
      method,
      protocol: this.secure ? "https:" : "http:",
      hostname: this.hostname,
      ...(this.port !== undefined ? { port: this.port } : {}),
      path,
      query,
      headers: {
        ...r.headers,
        host: this.hostHeader,
        "x-amz-content-sha256": r.payloadHash ?? EMPTY_SHA256,
      },
    });
    const response = await send(this.options.transport, {
      method,
      hostname: this.hostname,
      port: this.port,
      path: search ? `${path}?${search}` : path,
      headers: signed.headers as OutgoingHttpHeaders,
      ...(r.body !== undefined ? { body: r.body } : {}),
      ...(signal ? { signal } : {}),
      timeoutMs: this.options.requestTimeoutMs ?? 120_000,
      timeoutError: () => Object.assign(new Error(`${method} timed out`), { name: "TimeoutError" }),
    });
    const status = response.statusCode ?? 0;
    if (status >= 200 && status < 300) return response;
    throw await errorOf(response, status, signal);
  }
}

export interface S3Request {
  method: "GET" | "PUT" | "HEAD" | "DELETE";
  /** The full key, prefix included; "" is the bucket itself (listings, the bucket check). */
  key: string;
  /** Query parameters (a flag such as `uploads` has the value ""). */
  query?: Record<string, string>;
  headers?: Record<string, string>;
  /** The x-amz-content-sha256 value; default the empty body's hash. */
  payloadHash?: string;
  /** Sent as is (see transport.ts `SendOptions`). */
  body?: Uint8Array | Readable | LentChunks;
  signal?: AbortSignal;
}

/** The SigV4 payload hash of an empty body. */
export const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/** The error a failed response describes: S3's `<Code>` from its XML body, else the status. */
async function errorOf(
  response: IncomingMessage,
  status: number,
  signal?: AbortSignal,
): Promise<S3HttpError> {
  const text = await errorText(response, signal);
  const code = /<Code>([^<]*)<\/Code>/.exec(text)?.[1] ?? defaultCode(status);
  const retryAfter = Number(response.headers["retry-after"]);
  const id = response.headers["x-amz-request-id"];
  return Object.assign(new Error(`${code} (HTTP ${status})`), {
    name: code,
    // As the SDK's errors carry them; `classifyS3Error` puts the request id in the message.
    $metadata: { httpStatusCode: status, ...(typeof id === "string" && id ? { requestId: id } : {}) },
    ...(Number.isFinite(retryAfter) && retryAfter >= 0 ? { retryAfterMs: retryAfter * 1000 } : {}),
  });
}

/** The code the SDK names a body-less error by (HEAD-like responses, proxies). */
function defaultCode(status: number): string {
  if (status === 404) return "NotFound";
  if (status === 412) return "PreconditionFailed";
  if (status === 403) return "Forbidden";
  if (status === 503) return "ServiceUnavailable";
  return `HTTP${status}`;
}
