/**
 * A sync cleans up after a killed predecessor: the incomplete S3 multipart uploads (invisible,
 * but kept and billed) and the file store's temp files it left in this sync's key space are
 * discarded at the next sync's start — never a live writer's, never another shard's — and the
 * summary says how many.
 *
 * s3rver 3.7 does not implement ListMultipartUploads (GET /bucket?uploads answers
 * NotImplemented), AbortMultipartUpload (DELETE ?uploadId: MethodNotAllowed) or ListParts.
 * So the test stands at the protocol boundary: a proxy in front of the real s3rver forwards
 * every request and answers those three itself, as S3 does (XML, key-marker/upload-id-marker
 * paging, NoSuchUpload), from the uploads it saw initiated, given parts and completed through
 * it. It checks each such request's SigV4 signature, and its clock can be set back, so an
 * upload can be initiated "an hour ago".
 */
import { randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FileStore } from "../../operator/dataplane/file.ts";
import { type ObjectStore, openStore, shardOf, syncStores } from "../../operator/dataplane/index.ts";
import { readAll } from "../../operator/dataplane/manifest.ts";
import { S3rverEmulator } from "../../operator/sandbox/emulators/index.ts";
import { sigV4Holds } from "./sigv4.ts";

const MiB = 1024 * 1024;
const HOUR = 3_600_000;
const FAST_RETRY = { attempts: 3, baseDelayMs: 1, maxDelayMs: 5 };
const BUCKET = "uploads";

let dir: string;
let s3: S3rverEmulator;
let proxy: UploadsProxy;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "spillway-uploads-"));
  s3 = await S3rverEmulator.start({ dir: join(dir, "s3rver"), buckets: [BUCKET] });
  proxy = await UploadsProxy.start(s3.endpoint, s3.secretAccessKey);
});
afterAll(async () => {
  await proxy?.close();
  await s3?.stop();
  rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => proxy.reset());

/** The S3 store at `prefix`, reached through the proxy. */
const s3Store = (prefix: string) =>
  openStore(`s3://${BUCKET}/${prefix}?endpoint=${encodeURIComponent(proxy.url)}&region=${s3.region}`, {
    s3: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
  });

/** A source directory holding these objects. */
function fileSource(objects: Record<string, Buffer | string>): FileStore {
  const root = mkdtempSync(join(dir, "src-"));
  for (const [k, v] of Object.entries(objects)) writeFileSync(join(root, k), v);
  return new FileStore(root);
}

/** What a killed writer leaves: an upload started, one part given, never completed. */
async function leaveUpload(
  store: ObjectStore,
  key: string,
  initiatedAgoMs: number,
  partAgoMs = initiatedAgoMs,
) {
  proxy.clockOffsetMs = -initiatedAgoMs;
  const upload = await store.startUpload(key);
  proxy.clockOffsetMs = -partAgoMs;
  await upload.uploadPart(1, Buffer.from(`part of ${key}`));
  proxy.clockOffsetMs = 0;
}

/** One key of each shard of two, under `stem`. */
function keysByShard(stem: string): [string, string] {
  const keys: (string | undefined)[] = [undefined, undefined];
  for (let i = 0; !keys[0] || !keys[1]; i++) keys[shardOf(`${stem}${i}.bin`, 2)] ??= `${stem}${i}.bin`;
  return [keys[0]!, keys[1]!];
}

describe("S3: incomplete multipart uploads of killed syncs", () => {
  it("a sync killed while uploading parts leaves its upload; the next sync aborts it and reports 1", async () => {
    const big = Buffer.alloc(6 * MiB, 0x61);
    const src = fileSource({ "big file.bin": big, "small.txt": "small" });
    const dst = await s3Store("killed/");
    // The kill: part 2 never gets an answer and the upload's abort never reaches the store
    // (SIGKILL runs no clean-up), then the sync is stopped once part 1 is stored.
    proxy.hangPart = 2;
    proxy.refuseAborts = true;
    const ac = new AbortController();
    const first = syncStores(src, dst, {
      partSize: 5 * MiB,
      uploadCutoff: 0,
      signal: ac.signal,
      retry: FAST_RETRY,
    });
    await eventually(() => proxy.partsStored() >= 1);
    ac.abort();
    expect((await first).aborted).toBe(true);
    expect(proxy.pending()).toEqual(["killed/big file.bin"]);
    proxy.refuseAborts = false;

    // A dry run writes nothing, aborts included.
    const dry = await syncStores(src, dst, { dryRun: true, abandonedAfterMs: 0, retry: FAST_RETRY });
    expect(dry.abortedUploads).toBe(0);
    expect(proxy.pending()).toEqual(["killed/big file.bin"]);

    // s3rver stamps nothing "long ago" here: a grace of 0 makes "before this sync" the rule.
    const next = await syncStores(src, dst, {
      partSize: 5 * MiB,
      uploadCutoff: 0,
      abandonedAfterMs: 0,
      retry: FAST_RETRY,
    });
    expect(next).toMatchObject({ complete: true, abortedUploads: 1 });
    expect(next.uploadCleanupErrors).toBeUndefined();
    // The killed upload is gone, the rerun's own upload was completed, the object is whole.
    expect(proxy.pending()).toEqual([]);
    expect(proxy.aborted).toEqual(["killed/big file.bin"]);
    expect((await readAll(await dst.read("big file.bin"))).equals(big)).toBe(true);
    // Every list, list-parts and abort request carried a SigV4 signature that holds.
    expect(proxy.requests.length).toBeGreaterThan(0);
    expect(proxy.requests.every((r) => r.signed)).toBe(true);
    // Each sync (the killed one too) listed the uploads under its prefix only.
    const lists = proxy.requests.filter((r) => r.op === "list");
    expect(lists.map((r) => r.query.prefix)).toEqual(["killed/", "killed/"]);
  });

  it("leaves an upload initiated within the grace period, and one whose parts are still being written", async () => {
    const dst = await s3Store("live/");
    await leaveUpload(dst, "fresh.bin", 60_000); // a minute ago: another sync's, maybe
    await leaveUpload(dst, "slow.bin", HOUR, 30_000); // started an hour ago, last part 30 s ago
    const r = await syncStores(fileSource({ "a.txt": "a" }), dst, { retry: FAST_RETRY });
    expect(r).toMatchObject({ complete: true, abortedUploads: 0 });
    expect(proxy.pending()).toEqual(["live/fresh.bin", "live/slow.bin"]);
    // Only the old one's parts were looked at.
    expect(proxy.requests.filter((r) => r.op === "parts").map((r) => r.key)).toEqual(["live/slow.bin"]);
  });

  it("with --shard i/N aborts only this shard's keys, never .spillway/ or another prefix, across pages", async () => {
    const dst = await s3Store("sharded/");
    const [mine, theirs] = keysByShard("obj-");
    await leaveUpload(dst, mine, HOUR);
    await leaveUpload(dst, mine, HOUR); // a second killed run's upload of the same key
    await leaveUpload(dst, theirs, HOUR);
    await leaveUpload(dst, ".spillway/manifest.json", HOUR);
    await leaveUpload(await s3Store("other/"), mine, HOUR);
    proxy.pageSize = 2;
    const r = await syncStores(fileSource({}), dst, { shard: { index: 0, count: 2 }, retry: FAST_RETRY });
    expect(r).toMatchObject({ complete: true, abortedUploads: 2 });
    expect(proxy.pending()).toEqual([
      `other/${mine}`,
      "sharded/.spillway/manifest.json",
      `sharded/${theirs}`,
    ]);
    // Four uploads under the prefix, two a page: the pages after the first name where the
    // previous one ended (key-marker and upload-id-marker), as S3 pages.
    const lists = proxy.requests.filter((q) => q.op === "list");
    expect(lists.map((q) => q.query.prefix)).toEqual(["sharded/", "sharded/"]);
    expect(lists[0]!.query["key-marker"]).toBeUndefined();
    expect(lists[1]!.query["key-marker"]).toBeDefined();
    expect(lists[1]!.query["upload-id-marker"]).toBeDefined();
  });

  it("a failing listing or abort is reported, and does not fail the sync", async () => {
    const dst = await s3Store("failing/");
    await leaveUpload(dst, "old.bin", HOUR);
    const src = fileSource({ "a.txt": "a" });

    proxy.failNext.set("list", 403);
    const listFailed = await syncStores(src, dst, { retry: FAST_RETRY });
    expect(listFailed).toMatchObject({
      complete: true,
      abortedUploads: 0,
      uploadCleanupErrors: { count: 1 },
    });
    expect(listFailed.uploadCleanupErrors?.first).toMatch(/list multipart uploads/);

    proxy.failNext.set("abort", 403);
    const abortFailed = await syncStores(src, dst, { retry: FAST_RETRY });
    expect(abortFailed).toMatchObject({
      complete: true,
      abortedUploads: 0,
      uploadCleanupErrors: { count: 1 },
    });
    expect(abortFailed.uploadCleanupErrors?.first).toMatch(/abort upload of old\.bin/);
    expect(proxy.pending()).toEqual(["failing/old.bin"]);

    const ok = await syncStores(src, dst, { retry: FAST_RETRY });
    expect(ok).toMatchObject({ complete: true, abortedUploads: 1 });
    expect(proxy.pending()).toEqual([]);
  });

  it("a store without the multipart listing (s3rver itself answers NotImplemented) is no error", async () => {
    const direct = await openStore(
      `s3://${BUCKET}/direct/?endpoint=${encodeURIComponent(s3.endpoint)}&region=${s3.region}`,
      { s3: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } },
    );
    const r = await syncStores(fileSource({ "a.txt": "a" }), direct, { retry: FAST_RETRY });
    expect(r).toMatchObject({ complete: true, abortedUploads: 0 });
    expect(r.uploadCleanupErrors).toBeUndefined();
  });
});

describe("file store: temp files of killed syncs", () => {
  it("removes an upload's temp files untouched for the grace period, and keeps those still written", async () => {
    const root = mkdtempSync(join(dir, "fdst-"));
    const tmp = join(root, ".spillway", "tmp");
    mkdirSync(tmp, { recursive: true });
    const [dead, live, half] = [randomUUID(), randomUUID(), randomUUID()];
    const old = new Date(Date.now() - HOUR);
    for (const name of [dead, `${dead}.part1`, `${dead}.part2`, live, half, `${half}.part1`]) {
      writeFileSync(join(tmp, name), "x");
      if (name !== live && name !== `${half}.part1`) utimesSync(join(tmp, name), old, old);
    }
    const r = await syncStores(fileSource({ "a.txt": "a" }), new FileStore(root), { retry: FAST_RETRY });
    expect(r).toMatchObject({ complete: true, abortedUploads: 1 });
    expect(readdirSync(tmp).sort()).toEqual([live, half, `${half}.part1`].sort());
  });
});

async function eventually(check: () => boolean, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface Upload {
  key: string;
  uploadId: string;
  initiated: Date;
  parts: Map<number, { lastModified: Date; etag: string; size: number }>;
}

interface SeenRequest {
  op: "list" | "parts" | "abort";
  key: string;
  query: Record<string, string>;
  /** An AWS4-HMAC-SHA256 Authorization header whose signature holds for what was received. */
  signed: boolean;
}

const xml = (s: string) =>
  s.replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" })[c]!,
  );
const byteOrder = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

/**
 * S3's multipart-upload listing and abort in front of s3rver: everything else is forwarded;
 * CreateMultipartUpload, UploadPart and CompleteMultipartUpload are forwarded and recorded.
 */
class UploadsProxy {
  url = "";
  /** Added to the clock that stamps Initiated and parts' LastModified. */
  clockOffsetMs = 0;
  /** ListMultipartUploads pages hold at most this many uploads. */
  pageSize = 1000;
  /** Part number whose UploadPart is never answered (once). */
  hangPart: number | undefined;
  /** AbortMultipartUpload fails (a killed process never sends it). */
  refuseAborts = false;
  /** The next request of an operation is answered with this status (AccessDenied). */
  readonly failNext = new Map<SeenRequest["op"], number>();
  requests: SeenRequest[] = [];
  aborted: string[] = [];
  private uploads = new Map<string, Upload>();
  private server!: Server;

  private constructor(
    private readonly target: URL,
    private readonly secretAccessKey: string,
  ) {}

  static async start(target: string, secretAccessKey: string): Promise<UploadsProxy> {
    const p = new UploadsProxy(new URL(target), secretAccessKey);
    p.server = createServer((req, res) => {
      p.handle(req).then(
        (r) => {
          if (!r) return; // left hanging
          res.writeHead(r.status, r.headers);
          res.end(r.body);
        },
        () => res.destroy(),
      );
    });
    await new Promise<void>((resolve) => p.server.listen(0, "127.0.0.1", resolve));
    p.url = `http://127.0.0.1:${(p.server.address() as AddressInfo).port}`;
    return p;
  }

  reset(): void {
    this.uploads.clear();
    this.requests = [];
    this.aborted = [];
    this.clockOffsetMs = 0;
    this.pageSize = 1000;
    this.hangPart = undefined;
    this.refuseAborts = false;
    this.failNext.clear();
  }

  /** Keys of the uploads neither completed nor aborted, sorted. */
  pending(): string[] {
    return [...this.uploads.values()].map((u) => u.key).sort(byteOrder);
  }

  partsStored(): number {
    let n = 0;
    for (const u of this.uploads.values()) n += u.parts.size;
    return n;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.closeAllConnections();
      this.server.close(() => resolve());
    });
  }

  private now(): Date {
    return new Date(Date.now() + this.clockOffsetMs);
  }

  private async handle(req: IncomingMessage): Promise<Reply | undefined> {
    const url = new URL(req.url ?? "/", "http://x");
    const query: Record<string, string> = {};
    for (const [k, v] of url.searchParams) query[k] = v;
    const [, bucket = "", ...rest] = url.pathname.split("/");
    const key = rest.map(decodeURIComponent).join("/");
    const body = await readAll(req);
    const op: SeenRequest["op"] | undefined =
      req.method === "GET" && key === "" && "uploads" in query
        ? "list"
        : req.method === "GET" && "uploadId" in query
          ? "parts"
          : req.method === "DELETE" && "uploadId" in query
            ? "abort"
            : undefined;
    if (op) {
      this.requests.push({ op, key, query, signed: await sigV4Holds(req, this.secretAccessKey) });
      const status = this.failNext.get(op);
      if (status !== undefined) {
        this.failNext.delete(op);
        return s3Error(status, "AccessDenied");
      }
      if (op === "list") return this.list(bucket, query);
      const upload = this.uploads.get(query.uploadId!);
      if (!upload || upload.key !== key) return s3Error(404, "NoSuchUpload");
      if (op === "parts") return this.listParts(bucket, upload, query);
      if (this.refuseAborts) return s3Error(500, "InternalError");
      this.uploads.delete(upload.uploadId);
      this.aborted.push(key);
      return { status: 204, headers: {}, body: Buffer.alloc(0) };
    }
    if (
      req.method === "PUT" &&
      query.partNumber !== undefined &&
      Number(query.partNumber) === this.hangPart
    ) {
      this.hangPart = undefined;
      return undefined;
    }
    const r = await this.forward(req, body);
    if (r.status !== 200) return r;
    if (req.method === "POST" && "uploads" in query) {
      const uploadId = /<UploadId>([^<]+)<\/UploadId>/.exec(r.body.toString())![1]!;
      this.uploads.set(uploadId, { key, uploadId, initiated: this.now(), parts: new Map() });
    } else if (req.method === "PUT" && query.uploadId !== undefined) {
      this.uploads.get(query.uploadId)?.parts.set(Number(query.partNumber), {
        lastModified: this.now(),
        etag: String(r.headers.etag ?? ""),
        size: body.length,
      });
    } else if (req.method === "POST" && query.uploadId !== undefined) {
      this.uploads.delete(query.uploadId);
    }
    return r;
  }

  /** ListMultipartUploads: by key (byte order), then upload id; markers as S3 reads them. */
  private list(bucket: string, q: Record<string, string>): Reply {
    const prefix = q.prefix ?? "";
    const keyMarker = q["key-marker"];
    const idMarker = q["upload-id-marker"];
    const max = Math.min(Number(q["max-uploads"] ?? 1000), this.pageSize);
    const all = [...this.uploads.values()]
      .filter((u) => u.key.startsWith(prefix))
      .filter((u) => {
        if (keyMarker === undefined) return true;
        const c = byteOrder(u.key, keyMarker);
        return c > 0 || (c === 0 && idMarker !== undefined && u.uploadId > idMarker);
      })
      .sort((a, b) => byteOrder(a.key, b.key) || (a.uploadId < b.uploadId ? -1 : 1));
    const page = all.slice(0, max);
    const last = page.at(-1);
    const truncated = all.length > max;
    return xmlReply(
      `<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">` +
        `<Bucket>${xml(bucket)}</Bucket><KeyMarker>${xml(keyMarker ?? "")}</KeyMarker>` +
        `<UploadIdMarker>${xml(idMarker ?? "")}</UploadIdMarker>` +
        (truncated && last
          ? `<NextKeyMarker>${xml(last.key)}</NextKeyMarker><NextUploadIdMarker>${xml(last.uploadId)}</NextUploadIdMarker>`
          : "") +
        `<Prefix>${xml(prefix)}</Prefix><MaxUploads>${max}</MaxUploads><IsTruncated>${truncated}</IsTruncated>` +
        page
          .map(
            (u) =>
              `<Upload><Key>${xml(u.key)}</Key><UploadId>${xml(u.uploadId)}</UploadId>` +
              `<Initiator><ID>S3RVER</ID><DisplayName>S3rver</DisplayName></Initiator>` +
              `<Owner><ID>S3RVER</ID><DisplayName>S3rver</DisplayName></Owner>` +
              `<StorageClass>STANDARD</StorageClass><Initiated>${u.initiated.toISOString()}</Initiated></Upload>`,
          )
          .join("") +
        `</ListMultipartUploadsResult>`,
    );
  }

  /** ListParts, one page (the uploads here have a part or two). */
  private listParts(bucket: string, u: Upload, q: Record<string, string>): Reply {
    const after = Number(q["part-number-marker"] ?? 0);
    const parts = [...u.parts.entries()].filter(([n]) => n > after).sort(([a], [b]) => a - b);
    return xmlReply(
      `<ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>${xml(bucket)}</Bucket>` +
        `<Key>${xml(u.key)}</Key><UploadId>${xml(u.uploadId)}</UploadId>` +
        `<PartNumberMarker>${after}</PartNumberMarker><MaxParts>1000</MaxParts><IsTruncated>false</IsTruncated>` +
        parts
          .map(
            ([n, p]) =>
              `<Part><PartNumber>${n}</PartNumber><LastModified>${p.lastModified.toISOString()}</LastModified>` +
              `<ETag>${xml(p.etag)}</ETag><Size>${p.size}</Size></Part>`,
          )
          .join("") +
        `</ListPartsResult>`,
    );
  }

  private forward(req: IncomingMessage, body: Buffer): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const up = request(
        {
          host: this.target.hostname,
          port: this.target.port,
          method: req.method,
          path: req.url,
          headers: req.headers,
        },
        (r) => {
          readAll(r).then(
            (b) => resolve({ status: r.statusCode ?? 502, headers: r.headers, body: b }),
            reject,
          );
        },
      );
      up.on("error", reject);
      up.end(body);
    });
  }
}

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

const xmlReply = (doc: string): Reply => ({
  status: 200,
  headers: { "content-type": "application/xml" },
  body: Buffer.from(`<?xml version="1.0" encoding="UTF-8"?>\n${doc}`),
});

const s3Error = (status: number, code: string): Reply => ({
  status,
  headers: { "content-type": "application/xml" },
  body: Buffer.from(
    `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>injected</Message></Error>`,
  ),
});
