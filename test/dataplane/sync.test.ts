/**
 * The sync engine against the real emulators (Azurite, s3rver) and the filesystem: what a user
 * sees at the destination (objects, bytes, the manifest's version) after each kind of sync.
 */
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { FileStore } from "../../operator/dataplane/file.ts";
import {
  loadManifest,
  manifestKey,
  mergeShardManifests,
  StoreError,
  syncStores,
} from "../../operator/dataplane/index.ts";
import { faulty, GeneratedSource, ListedSource } from "./doubles.ts";
import { contents, type Emulators, putAll, startEmulators } from "./fixtures.ts";
import { forward } from "./proxy.ts";

const MiB = 1024 * 1024;
const FAST_RETRY = { attempts: 5, baseDelayMs: 1, maxDelayMs: 5 };

let emu: Emulators;
beforeAll(async () => {
  emu = await startEmulators();
  await emu.containers("data");
});
afterAll(async () => {
  await emu?.stop();
});

/** Keys users really have: spaces, unicode, URL metacharacters, dots, nesting, 0 bytes. */
const DATASET: Record<string, string | Buffer> = {
  "train/shard 0001.jsonl": '{"text":"hello"}\n',
  "train/日本語/ünïcödé.txt": "unicode",
  "train/q?x#y%z+&=.txt": "metacharacters",
  "train/ok..dots": "dots inside a segment are fine",
  "empty.bin": Buffer.alloc(0),
  "deep/a/b/c/d/e.txt": "deep",
  "large.bin": Buffer.alloc(11 * MiB + 123, 0x5a),
};

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

function expectSameContents(actual: Map<string, Buffer>, expected: Record<string, string | Buffer>) {
  expect([...actual.keys()].sort()).toEqual(Object.keys(expected).sort());
  for (const [k, v] of Object.entries(expected)) expect(sha(actual.get(k)!)).toBe(sha(Buffer.from(v)));
}

describe("copying between clouds", () => {
  let version: string | undefined;

  it("copies Azure Blob to S3 with every key, byte and hash intact, and records a version", async () => {
    const src = await emu.open(emu.azUri("data", "a2s/src"));
    await putAll(src, DATASET);
    const dst = await emu.open(emu.s3Uri("data", "a2s/dst"));
    const r = await syncStores(src, dst, { partSize: 5 * MiB, retry: FAST_RETRY });
    expect(r).toMatchObject({ complete: true, failed: { objects: 0 }, copied: { objects: 7 } });
    expect(r.version).toMatch(/^sha256:[0-9a-f]{64}$/);
    expectSameContents(await contents(dst), DATASET);
    // The content hash is recorded beside the data (S3 fixes an object's metadata before a
    // streamed object's hash is known), and travels as metadata on buffered puts.
    const manifest = await loadManifest(dst, manifestKey());
    expect(manifest?.get("large.bin")?.sha256).toBe(sha(DATASET["large.bin"] as Buffer));
    expect((await dst.head("train/ok..dots"))?.sha256).toBe(sha(Buffer.from(DATASET["train/ok..dots"]!)));
    version = r.version;
  });

  it("copies S3 to Azure Blob, and equal content gives an equal version", async () => {
    const src = await emu.open(emu.s3Uri("data", "s2a/src"));
    await putAll(src, DATASET);
    const dst = await emu.open(emu.azUri("data", "s2a/dst"));
    // uploadCutoff 0: large.bin in staged blocks (the Azure → S3 case above streams it whole).
    const r = await syncStores(src, dst, { partSize: 5 * MiB, uploadCutoff: 0, retry: FAST_RETRY });
    expect(r.complete).toBe(true);
    expect(r.version).toBe(version);
    expectSameContents(await contents(dst), DATASET);
    // Azure sets metadata at commit: the multipart object carries its hash too.
    expect((await dst.head("large.bin"))?.sha256).toBe(sha(DATASET["large.bin"] as Buffer));
  });

  it.each([
    ["Azure Blob", (p: string) => emu.azUri("data", p)],
    ["S3", (p: string) => emu.s3Uri("data", p)],
  ])("copies %s to a directory and back", async (name, uri) => {
    const src = await emu.open(uri(`${name}-rt/src`));
    await putAll(src, DATASET);
    const dir = await emu.open(emu.fileUri(`${name}-rt`));
    const back = await emu.open(uri(`${name}-rt/back`));
    const out = await syncStores(src, dir, { partSize: 5 * MiB });
    const ret = await syncStores(dir, back, { partSize: 5 * MiB });
    expect([out.complete, ret.complete]).toEqual([true, true]);
    expect(ret.version).toBe(out.version);
    const root = fileURLToPath(emu.fileUri(`${name}-rt`));
    expect(readFileSync(join(root, "train", "日本語", "ünïcödé.txt"), "utf8")).toBe("unicode");
    expect(statSync(join(root, "empty.bin")).size).toBe(0);
    expectSameContents(await contents(back), DATASET);
    // Azure takes a hash known only after a streamed Put Blob as metadata (S3 cannot).
    if (name === "Azure Blob")
      expect((await back.head("large.bin"))?.sha256).toBe(sha(DATASET["large.bin"] as Buffer));
  });

  it("syncs a whole container (empty prefix), and an empty source gives an empty, complete version", async () => {
    await emu.containers("whole");
    const empty = await syncStores(await emu.open(emu.azUri("whole")), await emu.open(emu.s3Uri("whole")));
    expect(empty).toMatchObject({ complete: true, copied: { objects: 0 } });
    expect(empty.version).toMatch(/^sha256:/);
    const src = await emu.open(emu.azUri("whole"));
    await putAll(src, { "top.txt": "top", "sub/x.txt": "x" });
    const dst = await emu.open(emu.s3Uri("whole"));
    const r = await syncStores(src, dst);
    expect(r.copied.objects).toBe(2);
    expectSameContents(await contents(dst), { "top.txt": "top", "sub/x.txt": "x" });
  });
});

describe("listing", () => {
  it.each([
    ["Azure Blob", (p: string) => emu.azUri("data", p)],
    ["S3", (p: string) => emu.s3Uri("data", p)],
    ["a directory", (p: string) => emu.fileUri(p)],
  ])("lists %s page by page, every key once, in order", async (_name, uri) => {
    const store = await emu.open(uri("paged"));
    const keys = Array.from({ length: 25 }, (_, i) => `k/${String(i).padStart(2, "0")}`);
    await Promise.all(keys.map((k) => store.put(k, Buffer.from(k))));
    const seen: string[] = [];
    for await (const o of store.list({ pageSize: 10 })) seen.push(o.key);
    expect(seen).toEqual(keys);
  });
});

describe("incremental sync", () => {
  it("moves nothing on a rerun, then only the objects changed or added at the source", async () => {
    const src = await emu.open(emu.azUri("data", "inc/src"));
    const files = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`f${i}.txt`, `v1-${i}`]));
    await putAll(src, files);
    const dst = await emu.open(emu.s3Uri("data", "inc/dst"));
    const first = await syncStores(src, dst);
    expect(first.copied.objects).toBe(20);

    const again = await syncStores(src, dst);
    expect(again).toMatchObject({ copied: { objects: 0 }, skipped: { objects: 20 }, version: first.version });

    await putAll(src, { "f3.txt": "v2-3", "new.txt": "new" }); // f3: same size, new content
    const third = await syncStores(src, dst);
    expect(third).toMatchObject({ copied: { objects: 2 }, skipped: { objects: 19 }, complete: true });
    expect(third.version).not.toBe(first.version);
    const got = await contents(dst);
    expect(got.get("f3.txt")?.toString()).toBe("v2-3");
    expect(got.get("new.txt")?.toString()).toBe("new");
  });

  it("detects a destination object overwritten behind its back (verify=list) and repairs it", async () => {
    const src = await emu.open(emu.azUri("data", "corrupt/src"));
    await putAll(src, { "a.txt": "good a", "b.txt": "good b" });
    const dst = await emu.open(emu.s3Uri("data", "corrupt/dst"));
    await syncStores(src, dst);
    await dst.put("a.txt", Buffer.from("BAD!!!"));
    await dst.delete("b.txt");
    const r = await syncStores(src, dst, { verify: "list" });
    expect(r.copied.objects).toBe(2);
    const got = await contents(dst);
    expect(got.get("a.txt")?.toString()).toBe("good a");
    expect(got.get("b.txt")?.toString()).toBe("good b");
  });

  it("detects silent corruption that keeps size and timestamps (verify=content) and repairs it", async () => {
    const src = await emu.open(emu.s3Uri("data", "rot/src"));
    await putAll(src, { "weights.bin": "0123456789" });
    const dstDir = fileURLToPath(emu.fileUri("rot"));
    const dst = await emu.open(emu.fileUri("rot"));
    await syncStores(src, dst);
    const p = join(dstDir, "weights.bin");
    const before = statSync(p);
    writeFileSync(p, "0123456X89"); // same inode, same size
    utimesSync(p, before.atime, before.mtime);
    expect((await syncStores(src, dst)).copied.objects).toBe(0); // the manifest alone cannot see it
    const r = await syncStores(src, dst, { verify: "content" });
    expect(r.copied.objects).toBe(1);
    expect(readFileSync(p, "utf8")).toBe("0123456789");
  });
});

describe("faults", () => {
  it("retries throttled writes with backoff and completes", async () => {
    const src = await emu.open(emu.azUri("data", "throttle/src"));
    await putAll(src, { "a.txt": "a", "b.txt": "b", "c.txt": "c" });
    const dst = faulty(await emu.open(emu.s3Uri("data", "throttle/dst")), { throttleWrites: 3 });
    const retried: string[] = [];
    const r = await syncStores(src, dst, { retry: FAST_RETRY, onRetry: (what) => retried.push(what) });
    expect(r.complete).toBe(true);
    expect(dst.throttled).toBe(3);
    expect(retried).toHaveLength(3);
    expect((await contents(dst)).size).toBe(3);
  });

  it("after an error, --delete deletes nothing and the previous version stays committed", async () => {
    const src = await emu.open(emu.azUri("data", "del/src"));
    await putAll(src, { "keep.txt": "keep", "gone.txt": "gone" });
    const dst = await emu.open(emu.s3Uri("data", "del/dst"));
    const v1 = await syncStores(src, dst);
    await src.delete("gone.txt");
    await putAll(src, { "keep.txt": "keep v2", "broken.txt": "x" });

    const failing = faulty(src, {
      failReads: new Map([
        ["broken.txt", new StoreError("Auth", "read broken.txt: AuthorizationFailure (HTTP 403)")],
      ]),
    });
    const r = await syncStores(failing, dst, { delete: true, retry: FAST_RETRY });
    expect(r).toMatchObject({ complete: false, failed: { objects: 1 }, deleted: { objects: 0 } });
    expect(r.version).toBeUndefined();
    expect(r.errors[0]?.message).toContain("HTTP 403");
    expect([...(await contents(dst)).keys()].sort()).toEqual(["gone.txt", "keep.txt"]);
    const committed = await loadManifest(dst, manifestKey());
    expect(committed?.get("keep.txt")?.size).toBe(4); // still v1's manifest

    const ok = await syncStores(src, dst, { delete: true });
    expect(ok).toMatchObject({ complete: true, deleted: { objects: 1 } });
    expect(ok.version).not.toBe(v1.version);
    expect([...(await contents(dst)).keys()].sort()).toEqual(["broken.txt", "keep.txt"]);
  });

  it("after a sync that did not end cleanly, the next one finds writes the destination lost", async () => {
    // Azurite as the destination, as in the chaos finding: a killed Azurite loses the last
    // blobs it acknowledged. Here they are deleted behind the engine's back instead.
    const src = await emu.open(emu.s3Uri("data", "lost/src"));
    await putAll(src, { "a.txt": "a", "b.txt": "b", "c.txt": "c" });
    const dst = await emu.open(emu.azUri("data", "lost/dst"));
    const failing = faulty(src, {
      failReads: new Map([["c.txt", new StoreError("Transient", "read c.txt: injected (HTTP 500)")]]),
    });
    const first = await syncStores(failing, dst, { retry: FAST_RETRY });
    expect(first).toMatchObject({ complete: false, copied: { objects: 2 } }); // a and b journaled
    await dst.delete("a.txt"); // an acknowledged write the store then lost

    const next = await syncStores(src, dst, { retry: FAST_RETRY }); // verify "none" requested
    expect(next).toMatchObject({ complete: true, verify: "list", copied: { objects: 2 } }); // a and c
    expect([...(await contents(dst)).keys()].sort()).toEqual(["a.txt", "b.txt", "c.txt"]);

    const clean = await syncStores(src, dst); // after a clean end, "none" stays "none"
    expect(clean).toMatchObject({ complete: true, verify: "none", copied: { objects: 0 } });
  });

  it("never mixes two versions of a large object replaced while its parts are read", async () => {
    const src = await emu.open(emu.azUri("data", "replaced/src"));
    const v1 = Buffer.alloc(12 * MiB, 1);
    const v2 = Buffer.alloc(12 * MiB, 2);
    await src.put("model.bin", v1);
    let reads = 0;
    const swapping = {
      ...faulty(src, {}),
      async read(key: string, o?: Parameters<typeof src.read>[1]) {
        const stream = await src.read(key, o);
        if (++reads === 1) await src.put("model.bin", v2); // replaced after the first part's read began
        return stream;
      },
    };
    const dst = await emu.open(emu.s3Uri("data", "replaced/dst"));
    // uploadCutoff 0: in parts (ranged reads), where two versions could meet.
    const r = await syncStores(swapping, dst, {
      partSize: 5 * MiB,
      uploadCutoff: 0,
      concurrency: 1,
      retry: FAST_RETRY,
    });
    expect(r).toMatchObject({ complete: false, failed: { objects: 1 } });
    expect(await dst.head("model.bin")).toBeUndefined();
    const again = await syncStores(src, dst, { partSize: 5 * MiB, uploadCutoff: 0 }); // S3 multipart
    expect(again.complete).toBe(true);
    expect(sha((await contents(dst)).get("model.bin")!)).toBe(sha(v2));
  });

  it("stops when the destination goes away mid-sync instead of retrying every object left", async () => {
    const src = await emu.open(emu.azUri("data", "gone/src"));
    const names = Array.from({ length: 120 }, (_, i) => `o/${String(i).padStart(3, "0")}.txt`);
    await putAll(src, Object.fromEntries(names.map((k) => [k, `object ${k}`])));
    // s3rver behind a proxy that goes dark (listener closed, open sockets reset) after the 10th
    // object PUT: every request from then on is refused.
    let puts = 0;
    const sockets = new Set<Socket>();
    const target = new URL(emu.s3.endpoint);
    const proxy = createServer((req, res) => {
      if (req.method === "PUT" && req.url?.includes("/o/") && ++puts > 10) {
        proxy.close();
        for (const s of sockets) s.destroy();
        return;
      }
      forward(target, req, res);
    });
    proxy.on("connection", (s) => {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
    });
    await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", r));
    const endpoint = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    const dst = await emu.open(
      `s3://data/gone/dst/?endpoint=${encodeURIComponent(endpoint)}&region=${emu.s3.region}`,
    );

    const r = await syncStores(src, dst, { concurrency: 2, breakerFailures: 8, retry: FAST_RETRY });
    proxy.close();
    expect(r.complete).toBe(false);
    expect(r.stopped).toMatch(
      /^stopped after 8 object copies in a row failed \(the last: .+\); finished objects are journaled/,
    );
    // The 10th PUT can be the one still waiting for its answer when the 11th resets every socket.
    expect([9, 10]).toContain(r.copied.objects);
    // The breaker's 8, plus at most the copies already running when it tripped.
    expect(r.failed.objects).toBeGreaterThanOrEqual(8);
    expect(r.failed.objects).toBeLessThanOrEqual(8 + 2);
    expect(r.planned.objects).toBe(r.copied.objects + r.failed.objects); // the rest never tried
    expect(r.version).toBeUndefined();

    // The store is back: a rerun straight to s3rver completes.
    const back = await emu.open(emu.s3Uri("data", "gone/dst"));
    const again = await syncStores(src, back, { retry: FAST_RETRY });
    expect(again).toMatchObject({ complete: true, failed: { objects: 0 } });
    expect(again.stopped).toBeUndefined();
    expect([...(await contents(back)).keys()].sort()).toEqual(names);
  });

  it("resumes an interrupted sync without redoing finished objects", async () => {
    const src = await emu.open(emu.azUri("data", "resume/src"));
    const files = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`o${i}`, `content ${i}`]));
    await putAll(src, files);
    const real = await emu.open(emu.s3Uri("data", "resume/dst"));
    const ac = new AbortController();
    let puts = 0;
    const dst = {
      ...faulty(real, {}),
      async put(key: string, body: Uint8Array, o?: Parameters<typeof real.put>[2]) {
        const r = await real.put(key, body, o);
        if (!key.startsWith(".spillway/") && ++puts === 15) ac.abort();
        return r;
      },
    };
    const cut = await syncStores(src, dst, { concurrency: 2, signal: ac.signal });
    expect(cut).toMatchObject({ complete: false, aborted: true });
    expect(cut.version).toBeUndefined();

    const rest = await syncStores(src, real, { concurrency: 2 });
    expect(rest.complete).toBe(true);
    expect(rest.copied.objects).toBeLessThanOrEqual(40 - 14);
    expect(rest.copied.objects + rest.skipped.objects).toBe(40);
    expectSameContents(await contents(real), files);
  });
});

describe("the journal", () => {
  it("is dropped after a clean sync, several segments, with no delete failing on the way", async () => {
    const src = await emu.open(emu.azUri("data", "journal/src"));
    await putAll(src, Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`o${i}`, `journal ${i}`])));
    const real = await emu.open(emu.s3Uri("data", "journal/dst"));
    let segments = 0;
    const dst = {
      ...faulty(real, {}),
      async put(key: string, body: Uint8Array, o?: Parameters<typeof real.put>[2]) {
        if (key.startsWith(".spillway/journal/")) segments++;
        else await new Promise((r) => setTimeout(r, 10)); // slow enough for several checkpoints
        return real.put(key, body, o);
      },
    };
    const retried: string[] = [];
    const r = await syncStores(src, dst, {
      concurrency: 2,
      checkpointIntervalMs: 20,
      onRetry: (what) => retried.push(what),
    });
    expect(r.complete).toBe(true);
    expect(segments).toBeGreaterThanOrEqual(3);
    // s3rver removes a directory a delete leaves empty; two deletes emptying it together fail
    // one of them (HTTP 500): the segments' directory is emptied by one delete alone.
    expect(retried).toEqual([]);
    const left: string[] = [];
    for await (const o of real.list({ prefix: ".spillway/" })) left.push(o.key);
    expect(left).toEqual([".spillway/manifest.json"]);
  });
});

describe("confinement", () => {
  it("never writes a key with '..', '.', empty or absolute segments, and reports each one", async () => {
    const src = new ListedSource({
      "ok.txt": "ok",
      "../escape.txt": "x",
      "a/../../b.txt": "x",
      "/abs.txt": "x",
      "a\\..\\c.txt": "x",
      "./dot.txt": "x",
      "x//y": "x",
      "..": "x",
    });
    const parent = join(emu.dir, "confine");
    const dst = new FileStore(join(parent, "dst"));
    const r = await syncStores(src, dst);
    expect(r).toMatchObject({ complete: true, copied: { objects: 1 }, rejected: { objects: 7 } });
    expect(r.errors).toHaveLength(7);
    expect(readdirSync(parent)).toEqual(["dst"]);
    expect(readdirSync(join(parent, "dst")).sort()).toEqual([".spillway", "ok.txt"]);
    expect(existsSync(join(emu.dir, "escape.txt"))).toBe(false);
  });

  it("rejects a real Azure blob whose name has an empty segment", async () => {
    await emu.azurite.client().getContainerClient("data").getBlockBlobClient("hostile/src//x").upload("x", 1);
    await emu.azurite
      .client()
      .getContainerClient("data")
      .getBlockBlobClient("hostile/src/fine")
      .upload("y", 1);
    const r = await syncStores(
      await emu.open(emu.azUri("data", "hostile/src")),
      await emu.open(emu.fileUri("hostile")),
    );
    expect(r).toMatchObject({ copied: { objects: 1 }, rejected: { objects: 1 } });
  });
});

describe("large objects and memory", () => {
  it("streams a 1 GiB object in parts with data buffers bounded by concurrency × part size", async () => {
    // The source generates its bytes and the destination is a directory: what is measured is
    // the engine's own buffering (the emulators' multipart paths are covered above).
    const src = new GeneratedSource("big/1GiB.bin", 1024 * MiB);
    const dst = await emu.open(emu.fileUri("huge"));
    let peakArrayBuffers = 0;
    const sample = setInterval(() => {
      peakArrayBuffers = Math.max(peakArrayBuffers, process.memoryUsage().arrayBuffers);
    }, 20);
    const r = await syncStores(src, dst, { concurrency: 4, partSize: 8 * MiB }).finally(() =>
      clearInterval(sample),
    );
    expect(r.complete).toBe(true);
    expect(r.peakBufferBytes).toBeLessThanOrEqual(4 * 8 * MiB);
    expect(peakArrayBuffers).toBeLessThan(256 * MiB);
    expect(statSync(join(fileURLToPath(emu.fileUri("huge")), "big", "1GiB.bin")).size).toBe(1024 * MiB);
    const entry = (await loadManifest(dst, manifestKey()))?.get("big/1GiB.bin");
    expect(entry?.sha256).toBe(await src.sha256());
    await dst.delete("big/1GiB.bin");
  });
});

describe("sharding and dry runs", () => {
  it("two shards together give the same version as one worker", async () => {
    const src = await emu.open(emu.azUri("data", "shard/src"));
    await putAll(src, Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`s${i}`, `x${i}`])));
    const whole = await syncStores(src, await emu.open(emu.s3Uri("data", "shard/one")));
    const dst = await emu.open(emu.s3Uri("data", "shard/two"));
    const parts = await Promise.all(
      [0, 1].map((index) => syncStores(src, dst, { shard: { index, count: 2 } })),
    );
    expect(parts[0]!.copied.objects + parts[1]!.copied.objects).toBe(12);
    expect(await mergeShardManifests(dst, 2)).toBe(whole.version);
  });

  it("a dry run reports what would move and writes nothing", async () => {
    const src = await emu.open(emu.azUri("data", "dry/src"));
    await putAll(src, { "a.txt": "a", "b.txt": "bb" });
    const dst = await emu.open(emu.s3Uri("data", "dry/dst"));
    const r = await syncStores(src, dst, { dryRun: true });
    expect(r).toMatchObject({ dryRun: true, planned: { objects: 2, bytes: 3 }, copied: { objects: 0 } });
    const left: string[] = [];
    for await (const o of dst.list()) left.push(o.key);
    expect(left).toEqual([]);
  });
});
