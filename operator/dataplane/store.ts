/**
 * The object-store port of the data plane. Every store Spillway moves data between (Azure
 * Blob, S3-compatible incl. OCI's compatibility endpoint, the local filesystem) is reached
 * through `ObjectStore`; the sync engine and the checkpoint agent never see an SDK.
 *
 * Contract (stable; other parts of Spillway build on it):
 * - Keys are relative to the store's root/prefix, `/`-separated, and go through
 *   `normaliseKey`: a key that would escape the prefix (`..`, absolute, backslash, NUL, empty
 *   segment) is rejected with `StoreError("InvalidKey")` before any request is made.
 * - `list` is an async iterable over pages fetched on demand: memory stays constant whatever
 *   the object count. Order is the store's: UTF-8 byte order for S3 and Azure and, by its
 *   walk, for files (`compareKeys`); an emulator or foreign store may differ for unusual
 *   keys, so callers merging a listing with a sorted stream must cope with keys out of order
 *   (the sync engine does: manifest-stream.ts).
 * - `read` streams; a range is `[start, end)` (end exclusive, clamped to the size).
 * - Nothing written is visible under its key until complete: `put` is one atomic request (or
 *   temp file + fsync + rename), `startUpload` stages parts that become visible only at
 *   `commit`; `abort` discards them.
 * - `sha256` (hex) is Spillway's content hash, carried as server-side metadata by S3 and Azure
 *   under their own metadata name (`SHA256_METADATA`) — on S3 multipart uploads only when it
 *   was known at `startUpload` (S3 fixes metadata then; the sync manifest always records it) — returned by `head` and — where the
 *   store's listing includes metadata (Azure) — by `list`. The file store keeps no metadata
 *   (plain files); the sync manifest carries the hash for it.
 * - `list` returns keys as stored, relative to the prefix; a foreign store may hold keys that
 *   fail `normaliseKey` (e.g. `a/../b`): callers check before using them as destination keys.
 * - Conditional writes: `ifNoneMatch: "*"` (create only) and `ifMatch: etag` (replace only
 *   that version). `capabilities.conditionalWrites` says whether the store enforces them;
 *   a failed condition throws `StoreError("PreconditionFailed")`.
 * - Errors are `StoreError` with a `code`; `retryable` is true for throttling (429/503) and
 *   transient network/server errors, which callers retry with backoff (see `retry.ts`).
 */
import type { Readable } from "node:stream";
import type { StreamBody } from "./reads.ts";

/** Metadata names the adapters use for Spillway's content sha256 (Azure names must be identifiers). */
export const SHA256_METADATA = { azure: "spillwaysha256", s3: "spillway-sha256", file: "sha256" } as const;

export interface ObjectInfo {
  /** Key relative to the store's prefix, normalised. */
  key: string;
  size: number;
  /** Opaque version tag; changes whenever the content changes (S3/Azure ETag; files: mtime+size+inode). */
  etag: string;
  lastModified?: Date;
  /** Spillway's content sha256 (hex), when the store returned it. */
  sha256?: string;
  /**
   * The content MD5 (hex), when the listing says it for certain: Azure's Content-MD5 property,
   * an S3 ETag of a single-part upload. Sent as Content-MD5 on a streamed copy, so the
   * destination checks the bytes it receives.
   */
  md5?: string;
}

export interface ObjectHead extends ObjectInfo {
  /** User metadata (without Spillway's sha256 entry, which is `sha256`). */
  metadata: Record<string, string>;
  contentType?: string;
}

export interface ListOptions {
  /** Only keys starting with this (relative) prefix; not normalised as a key, may end with `/`. */
  prefix?: string;
  /** Request page size hint (default 1000 for S3/Azure). */
  pageSize?: number;
  signal?: AbortSignal;
}

export interface ReadOptions {
  /** Byte range `[start, end)`; `end` omitted means to the end of the object. */
  range?: { start: number; end?: number };
  /**
   * Read only this version (the etag `list`/`head` returned): PreconditionFailed when the
   * object was replaced. Ranged reads of one object use it so their parts are of one version.
   */
  ifMatch?: string;
  signal?: AbortSignal;
}

export interface WriteOptions {
  /**
   * Spillway's content sha256 (hex) of the whole object, stored as metadata. For `put` it must
   * be the body's: S3 receives it as the SigV4 payload hash and rejects a body that differs.
   */
  sha256?: string;
  /**
   * The body's MD5 (hex) when the source said it (its listing): sent as Content-MD5 instead of
   * hashing the body once more, and compared with the MD5 the store reports. A source whose
   * bytes differ from its own MD5 fails with Integrity.
   */
  md5?: string;
  /** Extra user metadata; names lowercase `[a-z0-9]+` so every store accepts them. */
  metadata?: Record<string, string>;
  contentType?: string;
  /** `"*"`: fail with PreconditionFailed when the key exists. */
  ifNoneMatch?: "*";
  /** Fail with PreconditionFailed unless the current object has this etag. */
  ifMatch?: string;
  /** Multipart only: every part but the last has this size (lets the file store write in place). */
  partSize?: number;
  signal?: AbortSignal;
}

export interface PutResult {
  etag: string;
}

export interface StreamWriteOptions extends WriteOptions {
  /**
   * When `sha256` was not known before sending: called once the body was sent, for the hash to
   * store as metadata where the store can add it without rewriting the data (Azure).
   */
  sha256After?: () => string | undefined;
}

export interface StreamPutResult extends PutResult {
  /** The MD5 (hex) the store computed over what it received, when it reports one. */
  md5?: string;
}

/** One uploaded part, as returned by `uploadPart`; pass them all, in any order, to `commit`. */
export interface PartReceipt {
  /** 1-based part number; parts are assembled in this order. */
  partNumber: number;
  size: number;
  /** Store-specific id (S3 part ETag, Azure block id, file part path). */
  id: string;
}

export interface CommitOptions {
  /** Content sha256 known only after all parts were hashed; stored as metadata. */
  sha256?: string;
  signal?: AbortSignal;
}

/**
 * A multipart (S3) / block (Azure) / staged-file upload. Parts may be uploaded concurrently;
 * each part (except the last) must be at least `capabilities.minPartSize`. The per-part MD5
 * is sent and checked by the store when `capabilities.partChecksum` is not "none".
 */
export interface MultipartUpload {
  readonly key: string;
  uploadPart(partNumber: number, data: Uint8Array, signal?: AbortSignal): Promise<PartReceipt>;
  /** Makes the object visible atomically with the parts in partNumber order. */
  commit(parts: PartReceipt[], options?: CommitOptions): Promise<PutResult>;
  /** Discards staged parts (best effort; never throws for an already-gone upload). */
  abort(): Promise<void>;
}

export interface AbandonedUploadOptions {
  /**
   * Only uploads left alone since before this instant: S3, initiated before it and no part
   * uploaded since; files, temp files untouched since. A live writer's upload is never older.
   */
  before: Date;
  /**
   * Whether an upload's key (relative to the store's prefix) is the caller's to clean — the
   * sync's key space (its shard). Default: every key. A store that cannot tell an upload's key
   * (the file store's temp files) relies on `before` alone.
   */
  owns?: (key: string) => boolean;
  signal?: AbortSignal;
  /** Each failure (one line, no secrets); the clean-up goes on with the next upload. */
  onError?: (what: string, error: unknown) => void;
}

export interface AbandonedUploadResult {
  /** Uploads discarded (S3 multipart uploads aborted, temp files removed). */
  aborted: number;
  /** Listings and aborts that failed (reported to `onError`). */
  failed: number;
}

export interface StoreCapabilities {
  /** "enforced": the store evaluates If-Match/If-None-Match; "sent": sent, enforcement depends on the server. */
  conditionalWrites: "enforced" | "sent" | "none";
  /** Checksum the store verifies for each uploaded part. */
  partChecksum: "md5" | "none";
  /** Whether `list` returns `sha256` (metadata in listings). */
  listsSha256: boolean;
  minPartSize: number;
  maxParts: number;
  /** Largest object `put` accepts in one request. */
  maxPutSize: number;
}

export interface ObjectStore {
  /** The store's URI with credentials redacted: safe to log. */
  readonly displayUri: string;
  readonly capabilities: StoreCapabilities;
  /**
   * Every object under the store's prefix, in the store's listing order, paged. A listing
   * may have its next page's request out before the current page is used up (`PageAhead`,
   * pages.ts): a consumer that stops early ends the iteration (`break`, `return()`), which
   * aborts it.
   */
  list(options?: ListOptions): AsyncIterable<ObjectInfo>;
  /** undefined when the object does not exist. */
  head(key: string, signal?: AbortSignal): Promise<ObjectHead | undefined>;
  /** Throws StoreError("NotFound") when the object does not exist. */
  read(key: string, options?: ReadOptions): Promise<Readable>;
  /** Writes a whole object in one atomic request. */
  put(key: string, body: Uint8Array, options?: WriteOptions): Promise<PutResult>;
  /**
   * Writes a whole object from a stream (or lent chunks, `LentChunks`: each valid until the
   * next is asked for) of exactly `size` bytes in one atomic request, without holding it in
   * memory (one S3 PUT, one Azure Put Blob): an incomplete body leaves nothing visible. Optional; limited to `capabilities.maxPutSize`. The result's `md5` lets the caller
   * compare what the store received with what it sent.
   */
  putStream?(
    key: string,
    body: StreamBody,
    size: number,
    options?: StreamWriteOptions,
  ): Promise<StreamPutResult>;
  /** Starts a multipart upload; `sha256` may be given here or at commit. */
  startUpload(key: string, options?: WriteOptions): Promise<MultipartUpload>;
  /** Deletes; a missing object is not an error. */
  delete(key: string, signal?: AbortSignal): Promise<void>;
  /**
   * Optional: discards what killed writers left staged under the prefix — invisible, but kept
   * (and, on S3, billed) by the store. S3: incomplete multipart uploads (ListMultipartUploads,
   * paged; AbortMultipartUpload). Files: temp files under `.spillway/tmp/`. Azure needs none:
   * the service discards uncommitted blocks after 7 days by itself. Never throws: failures are
   * counted and passed to `onError`.
   */
  abortAbandonedUploads?(options: AbandonedUploadOptions): Promise<AbandonedUploadResult>;
  /**
   * Checks that the container/bucket/directory exists and is reachable; throws
   * StoreError("ContainerNotFound") otherwise. `purpose: "write"` lets the file store accept a
   * directory that does not exist yet but whose parent does (it is created on first write).
   */
  check(signal?: AbortSignal, purpose?: "read" | "write"): Promise<void>;
}

export type StoreErrorCode =
  | "InvalidKey"
  | "InvalidUri"
  | "MissingCredentials"
  | "NotFound"
  | "ContainerNotFound"
  | "PreconditionFailed"
  | "Auth"
  | "Throttled"
  | "Transient"
  | "Integrity"
  | "Aborted"
  | "Other";

export class StoreError extends Error {
  constructor(
    readonly code: StoreErrorCode,
    message: string,
    options?: { cause?: unknown; retryAfterMs?: number },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "StoreError";
    this.retryAfterMs = options?.retryAfterMs;
  }
  readonly retryAfterMs: number | undefined;
  get retryable(): boolean {
    return this.code === "Throttled" || this.code === "Transient";
  }
}

/**
 * Confines a key to the store's prefix: returns the canonical `a/b/c` form or throws
 * InvalidKey. Rejected: empty, leading `/`, `\`, NUL, and `.`/`..`/empty segments. A key is
 * rejected rather than "fixed" so two source keys can never land on one destination key.
 */
export function normaliseKey(key: string): string {
  if (typeof key !== "string" || key.length === 0) throw new StoreError("InvalidKey", "empty key");
  if (key.length > 1024) throw new StoreError("InvalidKey", "key longer than 1024 characters");
  if (key.includes("\0")) throw new StoreError("InvalidKey", "key contains NUL");
  if (key.includes("\\"))
    throw new StoreError("InvalidKey", `key contains a backslash: ${JSON.stringify(key)}`);
  if (key.startsWith("/")) throw new StoreError("InvalidKey", `absolute key: ${JSON.stringify(key)}`);
  for (const seg of key.split("/")) {
    if (seg === "" || seg === "." || seg === "..")
      throw new StoreError("InvalidKey", `key has a '${seg || "empty"}' segment: ${JSON.stringify(key)}`);
  }
  return key;
}

/** Normalises a store prefix: "" or "a/b/" (always ending in `/`), with the same confinement as keys. */
export function normalisePrefix(prefix: string): string {
  const p = prefix.replace(/^\/+/, "").replace(/\/+$/, "");
  if (p === "") return "";
  return `${normaliseKey(p)}/`;
}

/** Credentials for `openStore`; each field may come from the environment or a Secret. */
export interface StoreCredentials {
  azure?: { connectionString?: string; accountKey?: string; sas?: string };
  s3?: { accessKeyId?: string; secretAccessKey?: string; sessionToken?: string };
}

/** A parsed store URI. `secretParams` (e.g. `sas`) are kept apart so they never reach a log. */
export type StoreLocation =
  | { kind: "azblob"; account: string; container: string; prefix: string; endpoint?: string; sas?: string }
  | { kind: "s3"; bucket: string; prefix: string; endpoint?: string; region: string }
  | { kind: "file"; root: string; prefix: string };

/**
 * Opens the store a URI names: `azblob://<account>/<container>/<prefix>?endpoint=…&sas=…`,
 * `s3://<bucket>/<prefix>?endpoint=…&region=…`, `file:///<path>`. Adapters load lazily so a
 * command touching one cloud does not load every SDK. Throws StoreError InvalidUri or
 * MissingCredentials on bad input (nothing is contacted before that check).
 */
export async function openStore(
  uri: string | StoreLocation,
  credentials: StoreCredentials,
): Promise<ObjectStore> {
  const { openLocation } = await import("./open.ts");
  return openLocation(uri, credentials);
}
