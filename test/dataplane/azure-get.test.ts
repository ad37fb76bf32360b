/**
 * Azure Get Blob and Put Blob over node:http with a SAS (http-azure.ts), against a real Azurite:
 * whole, ranged and conditional reads and their errors for every credential kind; the SAS on the
 * wire — the user's as given, or read-list / create-write container SASes generated from the
 * account key, renewed near expiry (the clock injected) — and no shared-key signature; no error
 * of this route ever carries the SAS.
 */
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { inspect } from "node:util";
import {
  BlockBlobClient,
  ContainerClient,
  ContainerSASPermissions,
  generateBlobSASQueryParameters,
  SASProtocol,
  StorageSharedKeyCredential,
} from "@azure/storage-blob";
import { jest } from "@jest/globals";
import { AzureBlobStore } from "../../operator/dataplane/azure.ts";
import { type ObjectStore, openStore, parseStoreUri, StoreError } from "../../operator/dataplane/index.ts";
import { readAll } from "../../operator/dataplane/manifest.ts";
import { AzuriteEmulator } from "../../operator/sandbox/emulators/index.ts";
import { codeOf } from "./fixtures.ts";
import { forward, injectError } from "./proxy.ts";

const md5 = (b: Buffer) => createHash("md5").update(b).digest("hex");

let dir: string;
let azurite: AzuriteEmulator;
let sdk: ContainerClient;
/** A proxy in front of Azurite that records each request's path and Authorization header. */
let proxy: {
  url: string;
  server: Server;
  seen: { method: string; url: URL; authorization: string | undefined }[];
  fail: [number, string][];
};
const body = Buffer.alloc(4096);
for (let i = 0; i < body.length; i++) body[i] = (i * 7) & 0xff;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "spillway-azget-"));
  azurite = await AzuriteEmulator.start({ dir, containers: ["get"] });
  sdk = new ContainerClient(
    `${azurite.blobEndpoint}/get`,
    new StorageSharedKeyCredential(azurite.accountName, azurite.accountKey),
  );
  await sdk.getBlockBlobClient("p/obj ü.bin").uploadData(body);
  const target = new URL(azurite.blobEndpoint);
  const state = { url: "", server: undefined as unknown as Server, seen: [], fail: [] } as typeof proxy;
  state.server = createServer((req, res) => {
    state.seen.push({
      method: req.method ?? "",
      url: new URL(req.url ?? "/", "http://proxy"),
      authorization: req.headers.authorization,
    });
    const next = state.fail.shift();
    if (next) return injectError(req, res, next[0], next[1]);
    forward(target, req, res);
  });
  await new Promise<void>((resolve) => state.server.listen(0, "127.0.0.1", resolve));
  state.url = `http://127.0.0.1:${(state.server.address() as AddressInfo).port}${target.pathname}`;
  proxy = state;
});
afterAll(async () => {
  proxy.server.closeAllConnections();
  await new Promise<void>((resolve) => proxy.server.close(() => resolve()));
  await azurite.stop();
  rmSync(dir, { recursive: true, force: true });
});
afterEach(() => {
  jest.restoreAllMocks();
  proxy.seen.length = 0;
  proxy.fail.length = 0;
});

function sas(permissions: string, expiresOn = new Date(Date.now() + 3600_000)): string {
  return generateBlobSASQueryParameters(
    {
      containerName: "get",
      permissions: ContainerSASPermissions.parse(permissions),
      expiresOn,
      protocol: SASProtocol.HttpsAndHttp,
    },
    new StorageSharedKeyCredential(azurite.accountName, azurite.accountKey),
  ).toString();
}

function uri(options: { endpoint?: string; sas?: string; container?: string } = {}): string {
  const endpoint = encodeURIComponent(options.endpoint ?? azurite.blobEndpoint);
  const token = options.sas ? `&sas=${encodeURIComponent(options.sas)}` : "";
  return `azblob://${azurite.accountName}/${options.container ?? "get"}/p/?endpoint=${endpoint}${token}`;
}

async function text(store: ObjectStore, key: string, options: Parameters<ObjectStore["read"]>[1] = {}) {
  return readAll(await store.read(key, options));
}

const credentialKinds: [string, () => Promise<ObjectStore>][] = [
  [
    "connection string with an account key",
    () => openStore(uri(), { azure: { connectionString: azurite.connectionString } }),
  ],
  ["account key", () => openStore(uri(), { azure: { accountKey: azurite.accountKey } })],
  ["SAS in the URI", () => openStore(uri({ sas: sas("rl") }), {})],
  [
    "connection string with a SharedAccessSignature",
    () =>
      openStore(uri(), {
        azure: {
          connectionString: `BlobEndpoint=${azurite.blobEndpoint};SharedAccessSignature=${sas("rl")}`,
        },
      }),
  ],
];

describe.each(credentialKinds)("reading with a %s", (_kind, open) => {
  it("reads whole, ranged and open-ended, and conditionally on the etag; maps a stale etag and a missing blob", async () => {
    const download = jest.spyOn(BlockBlobClient.prototype, "download");
    const store = await open();
    const etag = (await store.head("obj ü.bin"))!.etag;
    expect(await text(store, "obj ü.bin")).toEqual(body);
    expect(await text(store, "obj ü.bin", { range: { start: 10, end: 20 } })).toEqual(body.subarray(10, 20));
    expect(await text(store, "obj ü.bin", { range: { start: 4000 } })).toEqual(body.subarray(4000));
    expect(await text(store, "obj ü.bin", { ifMatch: etag, range: { start: 0, end: 1 } })).toEqual(
      body.subarray(0, 1),
    );
    expect({
      staleEtag: await codeOf(store.read("obj ü.bin", { ifMatch: "0x8DEADBEEF" })),
      missing: await codeOf(store.read("no such blob")),
    }).toEqual({ staleEtag: "PreconditionFailed", missing: "NotFound" });
    // All of it over node:http: the SDK's download is never called.
    expect(download).not.toHaveBeenCalled();
  });
});

describe("the SAS on the wire", () => {
  it("with an account key: reads carry a read/list container SAS, writes a create/write one, no shared-key signature", async () => {
    const store = await openStore(uri({ endpoint: proxy.url }), {
      azure: { accountKey: azurite.accountKey },
    });
    await store.put("wire.bin", body);
    await text(store, "wire.bin");
    const sent = proxy.seen.map((r) => ({
      method: r.method,
      sp: r.url.searchParams.get("sp"),
      sr: r.url.searchParams.get("sr"),
      spr: r.url.searchParams.get("spr"),
      st: r.url.searchParams.get("st"),
      signed: (r.url.searchParams.get("sig") ?? "").length > 0,
      authorization: r.authorization,
    }));
    const expected = { sr: "c", spr: "https,http", st: null, signed: true, authorization: undefined };
    expect(sent).toEqual([
      { method: "PUT", sp: "cw", ...expected },
      { method: "GET", sp: "rl", ...expected },
    ]);
    // A lifetime of about an hour.
    const expiry = Date.parse(proxy.seen[0]!.url.searchParams.get("se")!);
    expect(expiry - Date.now()).toBeGreaterThan(50 * 60_000);
    expect(expiry - Date.now()).toBeLessThanOrEqual(3600_000);
  });

  it("with an account key: the check and the listing are List Blobs with the read/list SAS, deletes carry a delete-only one", async () => {
    const store = await openStore(uri({ endpoint: proxy.url }), {
      azure: { accountKey: azurite.accountKey },
    });
    await store.check();
    const listed: string[] = [];
    for await (const o of store.list()) listed.push(o.key);
    await store.delete("no such blob");
    expect(listed).toContain("obj ü.bin");
    expect(
      proxy.seen.map((r) => ({
        method: r.method,
        comp: r.url.searchParams.get("comp"),
        maxresults: r.url.searchParams.get("maxresults"),
        prefix: r.url.searchParams.get("prefix"),
        sp: r.url.searchParams.get("sp"),
        authorization: r.authorization,
      })),
    ).toEqual([
      { method: "GET", comp: "list", maxresults: "1", prefix: null, sp: "rl", authorization: undefined },
      { method: "GET", comp: "list", maxresults: "5000", prefix: "p/", sp: "rl", authorization: undefined },
      { method: "DELETE", comp: null, maxresults: null, prefix: null, sp: "d", authorization: undefined },
    ]);
    // A missing container and a wrong key, through the same check.
    const missing = await openStore(uri({ container: "no-such-container" }), {
      azure: { accountKey: azurite.accountKey },
    });
    const wrongKey = await openStore(uri(), {
      azure: { accountKey: Buffer.from("not the key").toString("base64") },
    });
    expect([await codeOf(missing.check()), await codeOf(wrongKey.check())]).toEqual([
      "ContainerNotFound",
      "Auth",
    ]);
  });

  it("a SAS the user gave is sent as given, for reads and writes", async () => {
    const token = sas("rcw");
    const store = await openStore(uri({ endpoint: proxy.url, sas: token }), {});
    await store.put("given.bin", body);
    expect(await text(store, "given.bin")).toEqual(body);
    expect(proxy.seen.map((r) => [r.method, r.url.search.slice(1), r.authorization])).toEqual([
      ["PUT", token, undefined],
      ["GET", token, undefined],
    ]);
  });

  it("a generated SAS is reused within its lifetime and replaced near its expiry; an expired one is refused", async () => {
    // The store's clock starts two hours behind: its first SAS expired an hour ago.
    let now = Date.now() - 2 * 3600_000;
    const store = AzureBlobStore.open(
      parseStoreUri(uri({ endpoint: proxy.url })) as Extract<
        ReturnType<typeof parseStoreUri>,
        { kind: "azblob" }
      >,
      { accountKey: azurite.accountKey },
      { sas: { now: () => now, lifetimeMs: 3600_000, refreshMarginMs: 15 * 60_000 } },
    );
    const expiries = () => proxy.seen.map((r) => r.url.searchParams.get("se"));
    expect(await codeOf(text(store, "obj ü.bin"))).toBe("Auth");
    now += 30 * 60_000; // 30 min left of an hour: still used
    expect(await codeOf(text(store, "obj ü.bin"))).toBe("Auth");
    expect(new Set(expiries()).size).toBe(1);
    now = Date.now(); // past the renewal point: a new SAS, which the service accepts
    expect(await text(store, "obj ü.bin")).toEqual(body);
    const [first, , renewed] = expiries();
    expect(renewed).not.toBe(first);
    expect(Date.parse(renewed!) - Date.parse(first!)).toBeGreaterThan(1.5 * 3600_000);
  });

  it("a generated read SAS may not write or delete (least privilege)", async () => {
    const { AzureBlobHttp, KeySas, accountKeyObject } = await import(
      "../../operator/dataplane/http-azure.ts"
    );
    const keySas = new KeySas(azurite.accountName, accountKeyObject(azurite.accountKey), "get", "http");
    const readOnly = new AzureBlobHttp({
      containerUrl: `${azurite.blobEndpoint}/get`,
      // Every request, writes too, with the read SAS.
      sas: { token: () => keySas.token("read") },
    });
    await expect(readOnly.putBlob("p/ro.bin", body, body.length, {})).rejects.toMatchObject({
      statusCode: 403,
      code: "AuthorizationPermissionMismatch",
    });
    await expect(readOnly.deleteBlob("p/obj ü.bin")).rejects.toMatchObject({
      statusCode: 403,
      code: "AuthorizationPermissionMismatch",
    });
    expect(await readAll(await readOnly.getBlob("p/obj ü.bin"))).toEqual(body);
  });
});

describe("with a proxy in the environment", () => {
  it("reads and writes go through the proxy, as the SDK's other requests do", async () => {
    // A forward proxy for plain http: requests arrive with the absolute URL as their target.
    const targets: string[] = [];
    const forwardProxy = createServer((req, res) => {
      targets.push(req.url ?? "");
      const url = new URL(req.url ?? "/", "http://not-absolute");
      forward(new URL(azurite.blobEndpoint), Object.assign(req, { url: url.pathname + url.search }), res);
    });
    await new Promise<void>((resolve) => forwardProxy.listen(0, "127.0.0.1", resolve));
    const previous = process.env.HTTP_PROXY;
    process.env.HTTP_PROXY = `http://127.0.0.1:${(forwardProxy.address() as AddressInfo).port}`;
    try {
      const store = await openStore(uri(), { azure: { accountKey: azurite.accountKey } });
      await store.put("proxied.bin", body);
      expect(await text(store, "proxied.bin")).toEqual(body);
      expect(targets.map((t) => [t.startsWith(azurite.blobEndpoint), new URL(t).pathname])).toEqual([
        [true, "/devstoreaccount1/get/p/proxied.bin"],
        [true, "/devstoreaccount1/get/p/proxied.bin"],
      ]);
    } finally {
      if (previous === undefined) delete process.env.HTTP_PROXY;
      else process.env.HTTP_PROXY = previous;
      forwardProxy.closeAllConnections();
      await new Promise<void>((resolve) => forwardProxy.close(() => resolve()));
    }
  });
});

describe("errors of the SAS route", () => {
  it("never carry the SAS (message, cause, stack, own properties)", async () => {
    const userSas = sas("rcw");
    const expired = sas("r", new Date(Date.now() - 3600_000));
    const withKey = await openStore(uri({ endpoint: proxy.url }), {
      azure: { accountKey: azurite.accountKey },
    });
    const withSas = await openStore(uri({ endpoint: proxy.url, sas: userSas }), {});
    const withExpired = await openStore(uri({ sas: expired }), {});
    const closed = await openStore(
      uri({ endpoint: "http://127.0.0.1:1/devstoreaccount1", sas: userSas }),
      {},
    );
    const wrongMd5 = { md5: md5(Buffer.from("other bytes")) };
    const failing = () =>
      new Readable({
        read() {
          this.destroy(new Error("source went away"));
        },
      });
    const errors: unknown[] = [];
    const attempts: (() => Promise<unknown>)[] = [];
    for (const store of [withKey, withSas]) {
      attempts.push(
        () => text(store, "no such blob"),
        () => text(store, "obj ü.bin", { ifMatch: "0x8DEADBEEF" }),
        () => store.put("md5.bin", body, wrongMd5),
        () => store.putStream!("md5.bin", Readable.from([body]), body.length, wrongMd5),
        () => store.putStream!("failing.bin", failing(), 1024),
        () => store.put("cond.bin", body, { ifMatch: "0x8DEADBEEF" }),
        () => {
          proxy.fail.push([500, "InternalError"]);
          return text(store, "obj ü.bin");
        },
        () => {
          proxy.fail.push([403, "AuthenticationFailed"]);
          return store.put("auth.bin", body);
        },
      );
    }
    attempts.push(
      () => text(withExpired, "obj ü.bin"),
      () => text(closed, "obj ü.bin"),
      () => closed.put("x.bin", body),
      // The container check, the listing and deletes (List Blobs, Get Container Properties,
      // Delete Blob on the same route).
      () => withExpired.check(),
      async () => {
        for await (const _ of withExpired.list()) void _;
      },
      () => closed.check(),
      () => withSas.delete("obj ü.bin"), // rcw: no d
      () => {
        proxy.fail.push([403, "AuthenticationFailed"]);
        return withKey.check();
      },
    );
    for (const attempt of attempts) {
      try {
        await attempt();
        errors.push("resolved");
      } catch (e) {
        errors.push(e);
      }
    }
    expect(errors.map((e) => (e instanceof StoreError ? e.code : String(e)))).toEqual([
      ...["NotFound", "PreconditionFailed", "Integrity", "Integrity", "Other", "PreconditionFailed"],
      ...["Transient", "Auth"],
      ...["NotFound", "PreconditionFailed", "Integrity", "Integrity", "Other", "PreconditionFailed"],
      ...["Transient", "Auth"],
      ...["Auth", "Transient", "Transient"],
      ...["Auth", "Auth", "Transient", "Auth", "Auth"],
    ]);
    const signatures = [userSas, expired].map((t) => new URLSearchParams(t).get("sig")!);
    for (const e of errors) {
      const shown = `${inspect(e, { depth: 10, showHidden: true })} ${String(e)}`;
      expect(shown).not.toContain("sig=");
      for (const s of signatures) {
        expect(shown).not.toContain(s);
        expect(shown).not.toContain(encodeURIComponent(s));
      }
    }
  });
});
