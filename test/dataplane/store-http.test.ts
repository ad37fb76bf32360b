/**
 * The stores' requests sent without the SDKs' operation stacks — S3 GetObject, PutObject,
 * HeadObject, DeleteObject and the listings signed by the SDK's SigV4 signer over node:http
 * (http-s3.ts), Azure Get Blob and Put Blob over node:http with a SAS (http-azure.ts) —
 * against real s3rver and Azurite: bytes
 * round-trip, what is refused and how each failure is classified, and that throttling and
 * server errors are retried by the caller's backoff.
 */
import { createHash } from "node:crypto";
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import {
  ContainerSASPermissions,
  generateBlobSASQueryParameters,
  SASProtocol,
  StorageSharedKeyCredential,
} from "@azure/storage-blob";
import { type ObjectStore, openStore, StoreError } from "../../operator/dataplane/index.ts";
import { readAll } from "../../operator/dataplane/manifest.ts";
import { LentChunks } from "../../operator/dataplane/reads.ts";
import { withRetry } from "../../operator/dataplane/retry.ts";
import { parseObjectList, parseUploadList } from "../../operator/dataplane/s3.ts";
import { codeOf, type Emulators, startEmulators } from "./fixtures.ts";
import { forward, injectError } from "./proxy.ts";
import { sigV4Holds } from "./sigv4.ts";

let emu: Emulators;
let s3: ObjectStore;
let az: ObjectStore;
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const md5 = (b: Buffer) => createHash("md5").update(b).digest("hex");

beforeAll(async () => {
  emu = await startEmulators();
  await emu.containers("hot");
  s3 = await emu.open(emu.s3Uri("hot", "p/"));
  az = await emu.open(emu.azUri("hot", "p/"));
});
afterAll(async () => {
  await emu.stop();
});

/**
 * A proxy in front of an emulator that answers the next requests with the given statuses
 * (S3/Azure error bodies), refuses SigV4 requests whose signature does not hold (403
 * SignatureDoesNotMatch, counted in `badSignatures`), and forwards everything else.
 */
async function failingProxy(
  target: string,
): Promise<{ url: string; fail: number[]; seen: number; badSignatures: number; server: Server }> {
  const t = new URL(target);
  const state = {
    url: "",
    fail: [] as number[],
    seen: 0,
    badSignatures: 0,
    server: undefined as unknown as Server,
  };
  state.server = createServer(async (req, res) => {
    state.seen++;
    if (
      String(req.headers.authorization ?? "").startsWith("AWS4-") &&
      !(await sigV4Holds(req, emu.s3.secretAccessKey))
    ) {
      state.badSignatures++;
      req.resume();
      res.writeHead(403, { "content-type": "application/xml" });
      res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>SignatureDoesNotMatch</Code></Error>`);
      return;
    }
    const status = state.fail.shift();
    if (status === undefined) return forward(t, req, res);
    injectError(req, res, status, status === 503 ? "SlowDown" : "InternalError", { "retry-after": "0" });
  });
  await new Promise<void>((resolve) => state.server.listen(0, "127.0.0.1", resolve));
  const port = (state.server.address() as AddressInfo).port;
  state.url = `http://127.0.0.1:${port}${t.pathname.replace(/\/+$/, "")}`;
  return state;
}
const close = (s: Server) =>
  new Promise<void>((resolve) => {
    s.closeAllConnections();
    s.close(() => resolve());
  });

const KEYS = ["plain.bin", "with space/ünïcödé 日本.txt", "odd!'()*&+=@,;$.dat", "deep/a/b/c/~tilde%25.bin"];

describe.each([
  ["S3 (signed node:http)", () => s3],
  ["Azure (raw Get Blob)", () => az],
])("%s", (_name, store) => {
  it("round-trips bytes under keys with spaces, unicode and reserved characters", async () => {
    for (const [i, key] of KEYS.entries()) {
      const body = Buffer.from(`${key} #${i} `.repeat(50 + i));
      await store().put(key, body, { sha256: sha(body) });
      expect(await readAll(await store().read(key))).toEqual(body);
      expect((await store().head(key))?.sha256).toBe(sha(body));
    }
    const listed: string[] = [];
    for await (const o of store().list()) listed.push(o.key);
    expect(listed).toEqual(expect.arrayContaining(KEYS));
  });

  it("reads a range, and a 0-byte object as no bytes", async () => {
    const body = Buffer.from("0123456789abcdef");
    await store().put("range.bin", body, { sha256: sha(body) });
    expect((await readAll(await store().read("range.bin", { range: { start: 3, end: 9 } }))).toString()).toBe(
      "345678",
    );
    expect((await readAll(await store().read("range.bin", { range: { start: 10 } }))).toString()).toBe(
      "abcdef",
    );
    const empty = Buffer.alloc(0);
    await store().put("empty.bin", empty, { sha256: sha(empty) });
    expect((await readAll(await store().read("empty.bin"))).length).toBe(0);
    expect((await store().head("empty.bin"))?.size).toBe(0);
  });

  it("maps a missing object to NotFound", async () => {
    expect(await codeOf(store().read("no/such/key.bin"))).toBe("NotFound");
  });
});

describe("S3 writes", () => {
  // S3 refuses the body itself (BadDigest); s3rver stores it, and the ETag it returns (the MD5
  // of what it stored) is what the adapter compares: Integrity either way.
  it("fails with Integrity when the body's MD5 is not the one the source said", async () => {
    const body = Buffer.from("the real bytes");
    const wrong = md5(Buffer.from("other bytes"));
    expect(await codeOf(s3.put("bad-md5.bin", body, { sha256: sha(body), md5: wrong }))).toBe("Integrity");
  });

  it("streams a body of a known size in one PUT; a source that fails mid-way fails the put", async () => {
    const body = Buffer.alloc(3 * 1024 * 1024, 7);
    const r = await s3.putStream!(
      "streamed.bin",
      Readable.from([body.subarray(0, 1e6), body.subarray(1e6)]),
      body.length,
      {
        sha256: sha(body),
      },
    );
    expect(r.md5).toBe(md5(body));
    // (compared by hash: jest's deep equality walks a 3 MiB buffer byte by byte for seconds)
    expect(sha(await readAll(await s3.read("streamed.bin")))).toBe(sha(body));
    const failing = new Readable({
      read() {
        this.push(Buffer.alloc(64 * 1024, 1));
        this.destroy(new Error("source went away"));
      },
    });
    await expect(s3.putStream!("half.bin", failing, 1024 * 1024)).rejects.toThrow("source went away");
  });

  it("checks the bucket with a signed one-key listing: present, missing (ContainerNotFound), unknown key (Auth)", async () => {
    await s3.check();
    const missing = await openStore(emu.s3Uri("no-such-bucket", "p/"), emu.credentials);
    expect(await codeOf(missing.check())).toBe("ContainerNotFound");
    const stranger = await openStore(emu.s3Uri("hot", "p/"), {
      s3: { accessKeyId: "NOSUCHKEY", secretAccessKey: "x" },
    });
    expect(await codeOf(stranger.check())).toBe("Auth");
  });

  // A bucket shared between teams grants s3:ListBucket only under a prefix (the s3:prefix
  // condition); HeadBucket is authorised as a listing of the whole bucket and refused there.
  // The proxy plays that policy: bucket-level requests without a prefix under "p/" are 403.
  it("checks the bucket with what a prefix-confined ListBucket policy allows, on both routes", async () => {
    const t = new URL(emu.s3.endpoint);
    const seen: string[] = [];
    const policy = createServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://x");
      const bucketLevel = url.pathname.split("/").filter(Boolean).length === 1;
      seen.push(`${req.method} ${url.pathname}${url.search}`);
      if (bucketLevel && !(url.searchParams.get("prefix") ?? "").startsWith("p/")) {
        req.resume();
        res.writeHead(403, { "content-type": "application/xml" });
        res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code></Error>`);
        return;
      }
      forward(t, req, res);
    });
    await new Promise<void>((resolve) => policy.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(policy.address() as AddressInfo).port}`;
    const previous = process.env.SPILLWAY_STORE_SDK_ONLY;
    try {
      for (const sdkOnly of [false, true]) {
        if (sdkOnly) process.env.SPILLWAY_STORE_SDK_ONLY = "1";
        const at = (prefix: string) =>
          openStore(
            `s3://hot/${prefix}?endpoint=${encodeURIComponent(url)}&region=${emu.s3.region}`,
            emu.credentials,
          );
        seen.length = 0;
        await (await at("p/team-a/")).check();
        // (path-style "/hot" on the raw route, "/hot/" from the SDK)
        expect(seen).toEqual([expect.stringMatching(/^GET \/hot\/?\?max-keys=1&prefix=p%2Fteam-a%2F$/)]);
        expect(await codeOf((await at("q/")).check())).toBe("Auth");
      }
    } finally {
      if (previous === undefined) delete process.env.SPILLWAY_STORE_SDK_ONLY;
      else process.env.SPILLWAY_STORE_SDK_ONLY = previous;
      await close(policy);
    }
  });

  // s3rver checks the access key id, not SigV4 signatures (the signing proxy below does).
  it("maps an unknown access key to Auth, for reads and writes, without the secret in the message", async () => {
    const secret = "definitely-not-the-secret";
    const wrong = await openStore(emu.s3Uri("hot", "p/"), {
      s3: { accessKeyId: "NOSUCHKEY", secretAccessKey: secret },
    });
    const body = Buffer.from("x");
    const errors: unknown[] = [];
    for (const p of [wrong.put("auth.bin", body, { sha256: sha(body) }), wrong.read("plain.bin")])
      await p.catch((e: unknown) => errors.push(e));
    expect(errors.map((e) => (e as StoreError).code)).toEqual(["Auth", "Auth"]);
    for (const e of errors) expect(String((e as Error).message)).not.toContain(secret);
  });
});

describe("Azure reads", () => {
  // (s3rver ignores If-Match on GET, so only Azurite can show the condition enforced.)
  it("reads only the version asked for: another etag is PreconditionFailed", async () => {
    const body = Buffer.from("version one");
    const { etag } = await az.put("versioned.bin", body, { sha256: sha(body) });
    expect((await readAll(await az.read("versioned.bin", { ifMatch: etag }))).toString()).toBe("version one");
    const two = Buffer.from("version two");
    await az.put("versioned.bin", two, { sha256: sha(two) });
    expect(await codeOf(az.read("versioned.bin", { ifMatch: etag }))).toBe("PreconditionFailed");
  });

  it("reads with a SAS in the URI (the token rides on every Get Blob), and a read-only SAS cannot write", async () => {
    const sas = generateBlobSASQueryParameters(
      {
        containerName: "hot",
        permissions: ContainerSASPermissions.parse("rl"),
        expiresOn: new Date(Date.now() + 3600_000),
        protocol: SASProtocol.HttpsAndHttp,
      },
      new StorageSharedKeyCredential(emu.azurite.accountName, emu.azurite.accountKey),
    ).toString();
    const viaSas = await openStore(
      `azblob://${emu.azurite.accountName}/hot/p/?endpoint=${encodeURIComponent(emu.azurite.blobEndpoint)}&sas=${encodeURIComponent(sas)}`,
      {},
    );
    const key = KEYS[1]!;
    expect(await readAll(await viaSas.read(key))).toEqual(await readAll(await az.read(key)));
    expect(await codeOf(viaSas.read("no/such.bin"))).toBe("NotFound");
    expect(await codeOf(viaSas.put("sas.bin", Buffer.from("x")))).toBe("Auth");
  });

  it("maps a wrong account key to Auth", async () => {
    const wrong = await openStore(emu.azUri("hot", "p/"), {
      azure: { accountKey: Buffer.from("not the key").toString("base64") },
    });
    expect(await codeOf(wrong.read("plain.bin"))).toBe("Auth");
  });
});

describe("S3 signatures", () => {
  it("hold for what arrives, for every key form, on the raw route as on the SDK's", async () => {
    const proxy = await failingProxy(emu.s3.endpoint);
    const previous = process.env.SPILLWAY_STORE_SDK_ONLY;
    try {
      const uri = `s3://hot/p/?endpoint=${encodeURIComponent(proxy.url)}&region=${emu.s3.region}`;
      const raw = await openStore(uri, emu.credentials);
      process.env.SPILLWAY_STORE_SDK_ONLY = "1";
      const sdk = await openStore(uri, emu.credentials);
      for (const [i, key] of KEYS.entries()) {
        const body = Buffer.from(`signed ${key} ${i}`);
        await raw.put(key, body, { sha256: sha(body), metadata: { owner: "test" } });
        expect(await readAll(await raw.read(key, { range: { start: 1 } }))).toEqual(body.subarray(1));
        await raw.putStream!(key, Readable.from([body]), body.length, { md5: md5(body) });
        expect(await readAll(await sdk.read(key))).toEqual(body);
      }
      expect(proxy.badSignatures).toBe(0);
      // The check itself refuses a request whose path is not the signed one.
      const wrongKey = await openStore(
        `s3://hot/p/?endpoint=${encodeURIComponent(proxy.url)}&region=${emu.s3.region}`,
        { s3: { accessKeyId: emu.s3.accessKeyId, secretAccessKey: "another secret" } },
      );
      expect(await codeOf(wrongKey.read(KEYS[1]!))).toBe("Auth");
      expect(proxy.badSignatures).toBe(1);
    } finally {
      if (previous === undefined) delete process.env.SPILLWAY_STORE_SDK_ONLY;
      else process.env.SPILLWAY_STORE_SDK_ONLY = previous;
      await close(proxy.server);
    }
  });
});

describe("S3 listing, HEAD and DELETE over the signed route", () => {
  it("list pages by marker (keys with XML's special characters as markers), HEAD and DELETE as the SDK reads them", async () => {
    const proxy = await failingProxy(emu.s3.endpoint);
    const previous = process.env.SPILLWAY_STORE_SDK_ONLY;
    try {
      const uri = `s3://hot/listing/?endpoint=${encodeURIComponent(proxy.url)}&region=${emu.s3.region}`;
      const raw = await openStore(uri, emu.credentials);
      process.env.SPILLWAY_STORE_SDK_ONLY = "1";
      const sdk = await openStore(uri, emu.credentials);
      const keys = [...KEYS, `a&b<c>"d'e.txt`, "tab\tand]]>.bin", "z/last.bin"];
      for (const [i, key] of keys.entries()) {
        const body = Buffer.from(`listed ${i}`);
        await raw.put(key, body, {
          sha256: sha(body),
          contentType: "text/plain",
          metadata: { owner: "test" },
        });
      }
      const all = async (store: ObjectStore) => {
        const out = [];
        for await (const o of store.list({ pageSize: 2 })) out.push(o);
        return out;
      };
      const listed = await all(raw);
      expect(listed.map((o) => o.key).sort()).toEqual([...keys].sort());
      expect(listed).toEqual(await all(sdk));
      expect(listed.every((o) => o.lastModified instanceof Date && /^[0-9a-f]{32}$/.test(o.etag))).toBe(true);

      const body = Buffer.from("listed 5");
      const head = await raw.head(keys[5]!);
      expect(head).toEqual(await sdk.head(keys[5]!));
      expect(head).toMatchObject({
        key: keys[5],
        size: body.length,
        etag: md5(body),
        sha256: sha(body),
        contentType: "text/plain",
        metadata: { owner: "test" },
      });
      expect(await raw.head("no/such.bin")).toBeUndefined();

      await raw.delete(keys[5]!);
      expect(await sdk.head(keys[5]!)).toBeUndefined();
      await raw.delete(keys[5]!); // already gone: not an error
      expect((await all(raw)).length).toBe(keys.length - 1);
      expect(proxy.badSignatures).toBe(0);
    } finally {
      if (previous === undefined) delete process.env.SPILLWAY_STORE_SDK_ONLY;
      else process.env.SPILLWAY_STORE_SDK_ONLY = previous;
      await close(proxy.server);
    }
  });

  it("a listing page that fails is fetched again from the same marker; a missing bucket is ContainerNotFound", async () => {
    const proxy = await failingProxy(emu.s3.endpoint);
    try {
      const via = await openStore(
        `s3://hot/listing/?endpoint=${encodeURIComponent(proxy.url)}&region=${emu.s3.region}`,
        emu.credentials,
      );
      const it = via.list({ pageSize: 2 })[Symbol.asyncIterator]();
      const first = await it.next();
      await it.next();
      proxy.fail.push(500);
      const rest: string[] = [];
      for (let r = await it.next(); !r.done; r = await it.next()) rest.push(r.value.key);
      expect(rest.length).toBeGreaterThan(0);
      expect(rest).not.toContain((first.value as { key: string }).key);
      const missing = await openStore(
        `s3://no-such-bucket/?endpoint=${encodeURIComponent(emu.s3.endpoint)}&region=${emu.s3.region}`,
        emu.credentials,
      );
      const code = await codeOf(
        (async () => {
          for await (const _ of missing.list()) break;
        })(),
      );
      expect(code).toBe("ContainerNotFound");
    } finally {
      await close(proxy.server);
    }
  });

  it("a listing in a form the page reader does not know is read by the SDK's parser, in full", async () => {
    // A proxy that answers bucket listings with their entries in another (valid) form.
    const target = new URL(emu.s3.endpoint);
    let rewritten = 0;
    const proxy = createServer((req, res) => {
      const url = req.url ?? "";
      if (req.method !== "GET" || !/^\/hot\/?\?/.test(url) || url.includes("uploads"))
        return forward(target, req, res);
      const up = request(
        { host: target.hostname, port: target.port, method: req.method, path: url, headers: req.headers },
        async (r) => {
          const xml = (await readAll(r)).toString("utf8").replace(/<Contents>/g, '<Contents xmlns="">');
          rewritten++;
          const { "content-length": _length, ...headers } = r.headers;
          res.writeHead(r.statusCode ?? 502, headers);
          res.end(xml);
        },
      );
      req.pipe(up);
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    try {
      const endpoint = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
      const via = await openStore(
        `s3://hot/other-form/?endpoint=${encodeURIComponent(endpoint)}&region=${emu.s3.region}`,
        emu.credentials,
      );
      const keys = async (store: ObjectStore) => {
        const out: string[] = [];
        for await (const o of store.list({ pageSize: 3 })) out.push(o.key);
        return out;
      };
      const direct = await emu.open(emu.s3Uri("hot", "other-form/"));
      for (let i = 0; i < 7; i++) await direct.put(`k${i}`, Buffer.from(`other form ${i}`));
      const expected = await keys(direct);
      expect(expected).toEqual(["k0", "k1", "k2", "k3", "k4", "k5", "k6"]);
      expect(await keys(via)).toEqual(expected);
      // Every page was rewritten: the first failed the page reader, the SDK read it and the rest.
      expect(rewritten).toBe(Math.ceil(expected.length / 3) + 1);
    } finally {
      await close(proxy);
    }
  });
});

describe("S3 listing documents read from their bytes", () => {
  const doc = (inner: string, top = "<IsTruncated>false</IsTruncated>") =>
    Buffer.from(
      `<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">` +
        `<Name>b</Name><Prefix></Prefix><Marker></Marker><MaxKeys>1000</MaxKeys>${top}${inner}</ListBucketResult>`,
    );
  const contents = (key: string, size: number) =>
    `<Contents><Key>${key}</Key><LastModified>2026-11-22T10:00:00.000Z</LastModified>` +
    `<ETag>&quot;0123456789abcdef0123456789abcdef&quot;</ETag><Size>${size}</Size>` +
    `<Owner><ID>x</ID><DisplayName>y</DisplayName></Owner><StorageClass>STANDARD</StorageClass></Contents>`;

  it("decodes entries (entities, numeric references), truncation and NextMarker", () => {
    const page = parseObjectList(
      doc(
        contents("a &amp; b &lt;c&gt; &#233;&#x65e5;", 3) + contents("second", 0),
        "<NextMarker>second</NextMarker><IsTruncated>true</IsTruncated>",
      ),
    );
    expect([page.count, page.truncated, page.nextMarker]).toEqual([2, true, "second"]);
    expect(page.item(0)).toEqual({
      key: "a & b <c> é日",
      size: 3,
      etag: '"0123456789abcdef0123456789abcdef"',
      lastModified: new Date("2026-11-22T10:00:00.000Z"),
    });
    expect(page.item(1).size).toBe(0);
    expect(parseObjectList(doc("")).count).toBe(0);
  });

  it("refuses what is not a ListBucketResult, a truncated page, and an entry without key or size", () => {
    expect(() => parseObjectList(Buffer.from("<Error><Code>x</Code></Error>"))).toThrow(
      /not a ListBucketResult/,
    );
    expect(() => parseObjectList(doc(contents("k", 1)).subarray(0, 300))).toThrow(/truncated/);
    const noSize = parseObjectList(doc("<Contents><Key>k</Key></Contents>"));
    expect(() => noSize.item(0)).toThrow(/unexpected/);
    // Entries in a form this reader does not know are never read as an empty listing.
    expect(() => parseObjectList(doc('<Contents xmlns="x"><Key>k</Key><Size>1</Size></Contents>'))).toThrow(
      /form this reader does not know/,
    );
    expect(() => parseObjectList(doc("<s3:Contents><s3:Key>k</s3:Key></s3:Contents>"))).toThrow(/form/);
    expect(() => parseObjectList(doc(contents("k", 1), ""))).toThrow(/IsTruncated/);
  });

  it("reads ListMultipartUploads: uploads, markers, and no <UploadId> taken for an <Upload>", () => {
    const page = parseUploadList(
      Buffer.from(
        `<ListMultipartUploadsResult><Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>` +
          `<NextKeyMarker>k2</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker><IsTruncated>true</IsTruncated>` +
          `<Upload><Key>k1</Key><UploadId>u1</UploadId><Initiated>2026-11-22T09:00:00.000Z</Initiated></Upload>` +
          `<Upload><Key>k2</Key><UploadId>u2</UploadId><Initiated>2026-11-22T09:30:00.000Z</Initiated></Upload>` +
          `</ListMultipartUploadsResult>`,
      ),
    );
    expect([page.count, page.truncated, page.nextKeyMarker, page.nextUploadIdMarker]).toEqual([
      2,
      true,
      "k2",
      "u2",
    ]);
    expect(page.item(1)).toEqual({
      key: "k2",
      uploadId: "u2",
      initiated: new Date("2026-11-22T09:30:00.000Z"),
    });
  });
});

describe("throttling and server errors on the new routes", () => {
  it("S3: a 503 is Throttled (with its Retry-After), a 500 Transient, and the caller's retry gets through", async () => {
    const proxy = await failingProxy(emu.s3.endpoint);
    try {
      const via = await openStore(
        `s3://hot/p/?endpoint=${encodeURIComponent(proxy.url)}&region=${emu.s3.region}`,
        emu.credentials,
      );
      const body = Buffer.from("through the proxy");
      proxy.fail.push(503);
      const throttled = await via.put("proxied.bin", body, { sha256: sha(body) }).catch((e: StoreError) => e);
      expect(throttled).toBeInstanceOf(StoreError);
      expect([(throttled as StoreError).code, (throttled as StoreError).retryAfterMs]).toEqual([
        "Throttled",
        0,
      ]);
      proxy.fail.push(503, 500);
      const before = proxy.seen;
      await withRetry(() => via.put("proxied.bin", body, { sha256: sha(body) }), {
        policy: { attempts: 4, baseDelayMs: 1, maxDelayMs: 5 },
      });
      proxy.fail.push(500);
      const read = await withRetry(async () => readAll(await via.read("proxied.bin")), {
        policy: { attempts: 3, baseDelayMs: 1, maxDelayMs: 5 },
      });
      expect(read.toString()).toBe("through the proxy");
      expect(proxy.seen - before).toBe(5);
    } finally {
      await close(proxy.server);
    }
  });

  it("Azure: a 503 and a 500 on Get Blob are retried by the caller", async () => {
    const proxy = await failingProxy(emu.azurite.blobEndpoint);
    try {
      const via = await openStore(
        `azblob://${emu.azurite.accountName}/hot/p/?endpoint=${encodeURIComponent(proxy.url)}`,
        emu.credentials,
      );
      proxy.fail.push(503);
      expect(await codeOf(via.read("plain.bin"))).toBe("Throttled");
      proxy.fail.push(503, 500);
      const before = proxy.seen;
      const read = await withRetry(async () => readAll(await via.read("plain.bin")), {
        policy: { attempts: 4, baseDelayMs: 1, maxDelayMs: 5 },
      });
      expect(read.toString()).toContain("plain.bin #0");
      expect(proxy.seen - before).toBe(3);
    } finally {
      await close(proxy.server);
    }
  });
});

describe("what the raw routes tell the stores", () => {
  /** A proxy recording each request's User-Agent and client request id, answering 500 on demand. */
  async function recordingProxy(target: string) {
    const t = new URL(target);
    const state = {
      url: "",
      seen: [] as { ua: string; clientId: string }[],
      fail: 0,
      server: createServer(),
    };
    state.server.on("request", (req, res) => {
      state.seen.push({
        ua: String(req.headers["user-agent"] ?? ""),
        clientId: String(req.headers["x-ms-client-request-id"] ?? ""),
      });
      if (state.fail > 0) {
        state.fail--;
        injectError(req, res, 500, "InternalError", {
          "x-ms-request-id": "az-req-42",
          "x-amz-request-id": "s3-req-42",
        });
        return;
      }
      forward(t, req, res);
    });
    await new Promise<void>((resolve) => state.server.listen(0, "127.0.0.1", resolve));
    const port = (state.server.address() as AddressInfo).port;
    state.url = `http://127.0.0.1:${port}${t.pathname.replace(/\/+$/, "")}`;
    return state;
  }
  const UA = /^spillway\/\d+\.\d+\.\d+ \(node\/\d+\.\d+\.\d+; \w+\)$/;
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

  it("Azure: Spillway's User-Agent, a fresh client request id per request, the service's request id in an error", async () => {
    const proxy = await recordingProxy(emu.azurite.blobEndpoint);
    try {
      const via = await openStore(
        `azblob://${emu.azurite.accountName}/hot/ua/?endpoint=${encodeURIComponent(proxy.url)}`,
        emu.credentials,
      );
      const body = Buffer.from("who is asking");
      await via.put("a.txt", body, { sha256: sha(body) });
      expect((await readAll(await via.read("a.txt"))).toString()).toBe("who is asking");
      for await (const o of via.list()) expect(o.key).toBe("a.txt");
      expect(proxy.seen.length).toBeGreaterThanOrEqual(3);
      for (const r of proxy.seen) {
        expect(r.ua).toMatch(UA);
        expect(r.clientId).toMatch(UUID);
      }
      expect(new Set(proxy.seen.map((r) => r.clientId)).size).toBe(proxy.seen.length);

      proxy.fail = 1;
      const e = (await via.read("a.txt").catch((x: unknown) => x)) as StoreError;
      expect(e).toBeInstanceOf(StoreError);
      expect(e.message).toContain("request id az-req-42");
    } finally {
      await close(proxy.server);
    }
  });

  it("S3: Spillway's User-Agent on signed requests, the service's request id in an error", async () => {
    const proxy = await recordingProxy(emu.s3.endpoint);
    try {
      const via = await openStore(
        `s3://hot/ua/?endpoint=${encodeURIComponent(proxy.url)}&region=${emu.s3.region}`,
        emu.credentials,
      );
      const body = Buffer.from("who is asking");
      await via.put("a.txt", body, { sha256: sha(body) });
      expect((await readAll(await via.read("a.txt"))).toString()).toBe("who is asking");
      expect((await via.head("a.txt"))?.size).toBe(body.length);
      expect(proxy.seen.length).toBeGreaterThanOrEqual(3);
      for (const r of proxy.seen) expect(r.ua).toMatch(UA);

      proxy.fail = 1;
      const e = (await via.read("a.txt").catch((x: unknown) => x)) as StoreError;
      expect(e).toBeInstanceOf(StoreError);
      expect(e.message).toContain("request id s3-req-42");
    } finally {
      await close(proxy.server);
    }
  });
});

describe("a proxy in the environment", () => {
  /** Sets proxy variables for the stores opened in `f`, restoring them after. */
  async function withEnv<T>(vars: Record<string, string>, f: () => Promise<T>): Promise<T> {
    const previous = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
    Object.assign(process.env, vars);
    try {
      return await f();
    } finally {
      for (const [k, v] of Object.entries(previous))
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
    }
  }
  /** A forward proxy for plain http: requests arrive with the absolute URL as their target. */
  async function forwardProxy() {
    const state = { url: "", targets: [] as string[], server: createServer() };
    state.server.on("request", (req, res) => {
      state.targets.push(req.url ?? "");
      const url = new URL(req.url ?? "/");
      forward(new URL(url.origin), Object.assign(req, { url: url.pathname + url.search }), res);
    });
    await new Promise<void>((resolve) => state.server.listen(0, "127.0.0.1", resolve));
    state.url = `http://127.0.0.1:${(state.server.address() as AddressInfo).port}`;
    return state;
  }

  it("carries S3 and Azure requests of the raw routes, signed as sent; NO_PROXY goes around it", async () => {
    const proxy = await forwardProxy();
    try {
      const body = Buffer.from("through a forward proxy");
      await withEnv({ HTTP_PROXY: proxy.url, NO_PROXY: "" }, async () => {
        for (const uri of [emu.s3Uri("hot", "px/"), emu.azUri("hot", "px/")]) {
          const via = await openStore(uri, emu.credentials);
          await via.put("a.bin", body, { sha256: sha(body) });
          expect(await readAll(await via.read("a.bin"))).toEqual(body);
          // Parts and their commit: the AWS SDK's and the Azure SDK's own requests.
          const part = Buffer.alloc(5 * 1024 * 1024, 7);
          const upload = await via.startUpload("parts.bin", { partSize: part.length });
          const receipts = [await upload.uploadPart(1, part), await upload.uploadPart(2, body)];
          await upload.commit(receipts, { sha256: sha(Buffer.concat([part, body])) });
          expect((await via.head("parts.bin"))?.size).toBe(part.length + body.length);
        }
      });
      // The SDKs' requests went through the proxy too (S3 shares the raw route's agent).
      for (const origin of [new URL(emu.s3.endpoint).origin, new URL(emu.azurite.blobEndpoint).origin])
        expect(
          proxy.targets.filter((t) => t.startsWith(origin) && t.includes("/px/parts.bin")).length,
        ).toBeGreaterThanOrEqual(3);
      const hosts = new Set(proxy.targets.map((t) => new URL(t).origin));
      expect(hosts).toEqual(
        new Set([new URL(emu.s3.endpoint).origin, new URL(emu.azurite.blobEndpoint).origin]),
      );
      expect(proxy.targets.filter((t) => t.includes("/px/a.bin")).length).toBeGreaterThanOrEqual(4);

      const before = proxy.targets.length;
      await withEnv({ HTTP_PROXY: proxy.url, NO_PROXY: "127.0.0.1" }, async () => {
        const via = await openStore(emu.s3Uri("hot", "px/"), emu.credentials);
        expect(await readAll(await via.read("a.bin"))).toEqual(body);
      });
      expect(proxy.targets.length).toBe(before);
    } finally {
      await close(proxy.server);
    }
  });
});

describe("lent chunks", () => {
  it("puts lent chunks (one buffer, reused) in one request, S3 and Azure, on the raw route as on the SDK's", async () => {
    const body = Buffer.alloc(3 * 1024 * 1024 + 17);
    for (let i = 0; i < body.length; i++) body[i] = (i * 131 + (i >> 12)) & 0xff;
    // Every chunk from one buffer, scribbled over the moment the next is asked for.
    const lent = () =>
      new LentChunks(async function* () {
        const buf = Buffer.allocUnsafe(200 * 1024);
        for (let at = 0; at < body.length; at += buf.length) {
          const n = body.copy(buf, 0, at, at + buf.length);
          yield buf.subarray(0, n);
          buf.fill(0x5a);
        }
      });
    const previous = process.env.SPILLWAY_STORE_SDK_ONLY;
    try {
      process.env.SPILLWAY_STORE_SDK_ONLY = "1";
      const sdkS3 = await emu.open(emu.s3Uri("hot", "p/"));
      const sdkAz = await emu.open(emu.azUri("hot", "p/"));
      for (const [name, store] of [
        ["s3 raw", s3],
        ["azure raw", az],
        ["s3 sdk", sdkS3],
        ["azure sdk", sdkAz],
      ] as const) {
        const key = `lent/${name}.bin`;
        const r = await store.putStream!(key, lent(), body.length, { sha256: sha(body), md5: md5(body) });
        expect({ name, md5: r.md5 }).toEqual({ name, md5: md5(body) });
        expect({ name, sha: sha(await readAll(await store.read(key))) }).toEqual({ name, sha: sha(body) });
        expect((await store.head(key))?.sha256).toBe(sha(body));
      }
    } finally {
      if (previous === undefined) delete process.env.SPILLWAY_STORE_SDK_ONLY;
      else process.env.SPILLWAY_STORE_SDK_ONLY = previous;
    }
  });
});
