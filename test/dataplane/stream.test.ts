/**
 * The streaming merge behind a sync's flat memory: the manifest read and written as streams,
 * keys that arrive out of key order, `--delete` against a destination listing out of order,
 * and resuming from journal segments. Stores are directories and in-memory doubles (the
 * emulator paths are covered by sync.test.ts).
 */

import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { FileStore } from "../../operator/dataplane/file.ts";
import {
  type ObjectInfo,
  type ObjectStore,
  replicaVersion,
  StoreError,
  syncStores,
} from "../../operator/dataplane/index.ts";
import {
  compareKeys,
  JournalLines,
  loadManifest,
  type Manifest,
  manifestDigest,
  manifestKey,
  parseManifest,
  serialiseManifest,
} from "../../operator/dataplane/manifest.ts";
import {
  ManifestReader,
  removeAbandonedTempDirs,
  SortedManifestWriter,
} from "../../operator/dataplane/manifest-stream.ts";
import { LentChunks, setReadObserver } from "../../operator/dataplane/reads.ts";
import { faulty, ListedSource } from "./doubles.ts";
import { contents } from "./fixtures.ts";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "spillway-stream-"));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});
let n = 0;
const fresh = () => new FileStore(join(dir, `s${n++}`));

const md5 = (v: string) => createHash("md5").update(v).digest("hex");
const sha = (v: string) => createHash("sha256").update(v).digest("hex");
/** Astral (emoji) vs U+FF21 (full-width A): UTF-16 and UTF-8 order disagree on these two. */
const EXOTIC = ["x/\u{1F600}.txt", "x/\uFF21.txt"];

function manifestOf(keys: string[]): Manifest {
  return new Map(
    keys.map((k) => [k, { size: k.length, sha256: sha(k), srcEtag: md5(k), dstEtag: `d-${k}` }]),
  );
}

/** What the engine before the streaming merge wrote: the same document, keys in UTF-16 order. */
function oldSerialise(m: Manifest): Buffer {
  const keys = [...m.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const h = createHash("sha256");
  for (const k of keys) h.update(`${k}\t${m.get(k)!.size}\t${m.get(k)!.sha256}\n`);
  const lines = keys.map((k) => {
    const e = m.get(k)!;
    return JSON.stringify([k, e.size, e.sha256, e.srcEtag, e.dstEtag]);
  });
  const head = JSON.stringify({
    format: "spillway.dev/manifest/v1",
    version: `sha256:${h.digest("hex")}`,
    objects: keys.length,
  });
  return Buffer.from(`${head.slice(0, -1)},"entries":[\n${lines.join(",\n")}\n]}\n`);
}

/** A source listing `objects` in exactly the given order (an emulator that sorts differently). */
function listedInOrder(objects: [string, string][]): ListedSource {
  return new ListedSource(Object.fromEntries(objects));
}

/** A store whose listing comes in the given order instead of its own. */
function listingReordered(inner: ObjectStore, reorder: (keys: ObjectInfo[]) => ObjectInfo[]): ObjectStore {
  return {
    ...faulty(inner, {}),
    async *list(o) {
      const all: ObjectInfo[] = [];
      for await (const x of inner.list(o)) all.push(x);
      yield* reorder(all);
    },
  };
}

describe("key order", () => {
  it("is UTF-8 byte order, and the digest of ordinary keys is what it was", () => {
    const keys = ["b", "a/b", "a-b", "a0", "ä", "日本", ...EXOTIC, "\uE000", "z\u{10FFFF}", ""];
    const utf8 = [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    expect([...keys].sort(compareKeys)).toEqual(utf8);
    const ordinary = manifestOf(["train/shard 1", "train/日本語/ü.txt", "a-b", "a/b", "a0"]);
    const before = JSON.parse(oldSerialise(ordinary).toString().split("\n")[0]! + "]}").version;
    expect(manifestDigest(ordinary)).toBe(before);
    // The one change: keys where UTF-16 and UTF-8 order disagree get a new version.
    const exotic = manifestOf(EXOTIC);
    expect(manifestDigest(exotic)).not.toBe(
      JSON.parse(oldSerialise(exotic).toString().split("\n")[0]! + "]}").version,
    );
  });

  it("a directory lists in the same global order as S3 and Azure", async () => {
    const store = fresh();
    const keys = ["a/x", "a-b", "a.txt", "a0", "b/c/d", "b/c-d", "b/c0", ...EXOTIC];
    for (const k of keys) await store.put(k, Buffer.from(k));
    const seen: string[] = [];
    for await (const o of store.list()) seen.push(o.key);
    expect(seen).toEqual([...keys].sort(compareKeys));
  });
});

describe("the manifest as a stream", () => {
  const keys = Array.from({ length: 60 }, (_, i) => `k/${(i * 37) % 60}-${"x".repeat(i % 7)}`).concat(EXOTIC);
  const m = manifestOf(keys);

  it("writes, from rows in any order, the very document serialiseManifest writes, and reads it back", async () => {
    const writer = await SortedManifestWriter.create({ stragglers: 4 });
    try {
      for (const k of keys) writer.add(k, m.get(k)!); // listing order, not key order
      const written = await writer.finish();
      expect(written).toMatchObject({ version: manifestDigest(m), objects: m.size });
      const store = fresh();
      await writer.upload(store, manifestKey(), { source: "memory://x" });
      const stored = readFileSync(join(store.root, ".spillway", "manifest.json"));
      expect(stored.equals(serialiseManifest(m, { source: "memory://x" }))).toBe(true);
      const reader = (await ManifestReader.open(store, manifestKey()))!;
      expect(reader.header).toMatchObject({ version: manifestDigest(m), objects: m.size });
      const rows: string[] = [];
      for await (const [k, e] of reader.rows()) {
        expect(e).toEqual(m.get(k));
        rows.push(k);
      }
      expect(rows).toEqual([...keys].sort(compareKeys));
    } finally {
      await writer.dispose();
    }
  });

  it("reads a manifest the previous engine wrote (UTF-16 order), and a sync over it ends correct", async () => {
    const src = listedInOrder(keys.map((k) => [k, k]));
    const dst = fresh();
    const first = await syncStores(src, dst);
    // Replace the committed manifest by the same records in the old engine's order.
    const committed = (await loadManifest(dst, manifestKey()))!;
    await dst.put(manifestKey(), oldSerialise(committed));
    const rows: string[] = [];
    for await (const [k] of (await ManifestReader.open(dst, manifestKey()))!.rows()) rows.push(k);
    expect(new Set(rows)).toEqual(new Set(keys));

    const again = await syncStores(src, dst);
    expect(again).toMatchObject({ complete: true, version: first.version });
    expect(again.copied.objects).toBeLessThanOrEqual(1); // at most the key the two orders disagree on
    const stored = readFileSync(join(dst.root, ".spillway", "manifest.json"));
    expect(stored.equals(serialiseManifest(committed, { source: src.displayUri }))).toBe(true);
  });

  it("gives a replica's version, read as a stream, as the digest of its manifest, in either order", async () => {
    const store = fresh();
    expect(await replicaVersion(store)).toBeUndefined();
    await store.put(manifestKey(), serialiseManifest(m));
    expect(await replicaVersion(store)).toBe(manifestDigest(m));
    await store.put(manifestKey(), oldSerialise(m)); // the previous engine's UTF-16 order
    expect(await replicaVersion(store)).toBe(manifestDigest(m));
    const whole = serialiseManifest(m).toString("utf8");
    await store.put(manifestKey(), Buffer.from(whole.slice(0, whole.length / 2))); // damaged
    expect(await replicaVersion(store)).toBeUndefined();
  });

  it("writes a document many times its write buffer, multibyte keys across its flushes, as serialiseManifest does", async () => {
    const many = manifestOf(
      Array.from(
        { length: 3000 },
        (_, i) => `d/${i % 3 === 0 ? "\u{1F600}" : i % 3 === 1 ? "\uFF21\u00e9" : "a"}-${i}`,
      ),
    );
    const writer = await SortedManifestWriter.create();
    try {
      for (const [k, e] of many) writer.add(k, e);
      const written = await writer.finish();
      expect(written.version).toBe(manifestDigest(many));
      const store = fresh();
      await writer.upload(store, manifestKey(), { source: "memory://x" });
      const stored = readFileSync(join(store.root, ".spillway", "manifest.json"));
      expect(stored.length).toBeGreaterThan(4 * 64 * 1024);
      expect(stored.equals(serialiseManifest(many, { source: "memory://x" }))).toBe(true);
    } finally {
      await writer.dispose();
    }
  });

  it("uploads through a streamed put of chunks lent from one buffer, nothing reported as garbage; parts from the same", async () => {
    // Rows enough for several reads of the body file (256 KiB each).
    const big = manifestOf(Array.from({ length: 8000 }, (_, i) => `lent/${String(i).padStart(5, "0")}`));
    const writer = await SortedManifestWriter.create();
    const seen: number[] = [];
    setReadObserver((n) => seen.push(n));
    try {
      for (const [k, e] of big) writer.add(k, e);
      await writer.finish();
      const store = fresh();
      let streamed: Buffer | undefined;
      const buffers = new Set<ArrayBufferLike>();
      let lentChunks = 0;
      const streaming: ObjectStore = {
        ...faulty(store, {}),
        async putStream(key, body, size, o) {
          if (!(body instanceof LentChunks)) throw new Error("expected lent chunks");
          const chunks: Buffer[] = [];
          for await (const c of body.chunks()) {
            lentChunks++;
            buffers.add(c.buffer);
            chunks.push(Buffer.from(c)); // a copy: the chunk is lent
          }
          streamed = Buffer.concat(chunks);
          expect(streamed.length).toBe(size);
          expect(createHash("sha256").update(streamed).digest("hex")).toBe(o?.sha256);
          return store.put(key, streamed, o);
        },
      };
      await writer.upload(streaming, manifestKey(), { source: "memory://x" });
      expect(streamed!.equals(serialiseManifest(big, { source: "memory://x" }))).toBe(true);
      // The document's head, its tail, and the one buffer every read of the body file went to:
      // no read left garbage to report.
      expect(streamed!.length).toBeGreaterThan(3 * 256 * 1024);
      expect(lentChunks).toBeGreaterThan(5);
      expect(buffers.size).toBeLessThanOrEqual(3);
      expect(seen).toEqual([]);
      // The file store takes parts: from chunks of one buffer, copied, the document is whole.
      seen.length = 0;
      const parted = fresh();
      await writer.upload(parted, manifestKey(), { source: "memory://x" });
      expect(seen).toEqual([]);
      const stored = readFileSync(join(parted.root, ".spillway", "manifest.json"));
      expect(stored.equals(serialiseManifest(big, { source: "memory://x" }))).toBe(true);
    } finally {
      setReadObserver(undefined);
      await writer.dispose();
    }
  });

  it("reads the document in windows of ranged reads of one version, lines across windows whole", async () => {
    const store = fresh();
    await store.put(manifestKey(), serialiseManifest(m));
    const reads: { start: number; end?: number; ifMatch?: string }[] = [];
    const counting: ObjectStore = {
      ...faulty(store, {}),
      async read(key, o) {
        reads.push({ ...o!.range!, ...(o!.ifMatch ? { ifMatch: o!.ifMatch } : {}) });
        return store.read(key, o);
      },
    };
    const size = (await store.head(manifestKey()))!.size;
    const reader = (await ManifestReader.open(counting, manifestKey(), { window: 97 }))!;
    const got: Manifest = new Map();
    for await (const [k, e] of reader.rows()) got.set(k, e);
    expect(reader.truncated).toBe(false);
    expect(got).toEqual(m);
    // Every byte read once, in order, each window conditional on the version the head found.
    const etag = (await store.head(manifestKey()))!.etag;
    expect(reads[0]).toEqual({ start: 0, end: 97, ifMatch: etag });
    expect(reads.map((r) => r.start)).toEqual(reads.map((_, i) => i * 97));
    expect(reads.at(-1)!.end).toBe(size);
    expect(reads.every((r) => r.ifMatch === etag)).toBe(true);
  });

  it("retries a window whose read breaks, and goes on from there", async () => {
    const store = fresh();
    await store.put(manifestKey(), serialiseManifest(m));
    let broken = 0;
    const flaky: ObjectStore = {
      ...faulty(store, {}),
      async read(key, o) {
        const inner = await store.read(key, o);
        if ((o?.range?.start ?? 0) < 300 || broken++ > 0) return inner;
        // The first window from byte 300 on: 50 bytes, then a reset connection.
        return Readable.from(
          (async function* () {
            let sent = 0;
            for await (const c of inner as AsyncIterable<Buffer>) {
              if (sent + c.length > 50) {
                yield c.subarray(0, 50 - sent);
                inner.destroy();
                throw Object.assign(new Error("socket hang up"), { code: "ECONNRESET" });
              }
              sent += c.length;
              yield c;
            }
          })(),
        );
      },
    };
    const reader = (await ManifestReader.open(flaky, manifestKey(), {
      window: 150,
      retry: { attempts: 3, baseDelayMs: 1, maxDelayMs: 2 },
    }))!;
    const got: Manifest = new Map();
    for await (const [k, e] of reader.rows()) got.set(k, e);
    expect(broken).toBeGreaterThan(1);
    expect(reader.truncated).toBe(false);
    expect(got).toEqual(m);
  });

  it("ends the rows, truncated, where the manifest was replaced while it was read", async () => {
    const store = fresh();
    await store.put(manifestKey(), serialiseManifest(m));
    const reader = (await ManifestReader.open(store, manifestKey(), { window: 200 }))!;
    const got: string[] = [];
    for await (const [k] of reader.rows()) {
      got.push(k);
      if (got.length === 3) await store.put(manifestKey(), serialiseManifest(manifestOf(keys.slice(0, 5))));
    }
    expect(reader.truncated).toBe(true);
    expect(got.length).toBeGreaterThanOrEqual(3);
    expect(got.length).toBeLessThan(keys.length);
    expect(got).toEqual([...keys].sort(compareKeys).slice(0, got.length));
  });

  it("stops the read ahead when its rows are not all consumed", async () => {
    const store = fresh();
    await store.put(manifestKey(), serialiseManifest(m));
    const signals: AbortSignal[] = [];
    const watching: ObjectStore = {
      ...faulty(store, {}),
      async read(key, o) {
        signals.push(o!.signal!);
        return store.read(key, o);
      },
    };
    const reader = (await ManifestReader.open(watching, manifestKey(), { window: 100 }))!;
    for await (const _ of reader.rows()) break;
    expect(signals.length).toBeGreaterThan(0);
    expect(signals.every((s) => s.aborted)).toBe(true);
  });
});

describe("a source that lists out of key order", () => {
  // The second half of the keys first, each half in reverse: almost nothing arrives in order.
  const keys = Array.from({ length: 40 }, (_, i) => `obj-${String(i).padStart(3, "0")}`).concat(EXOTIC);
  const scrambled = [...keys.slice(20).reverse(), ...keys.slice(0, 20).reverse()];
  const small = { sideTable: 3, reorder: 4, stragglers: 5 };

  it("is copied whole, with a sorted manifest and the version of the sorted listing", async () => {
    const objects = scrambled.map((k): [string, string] => [k, `content of ${k}`]);
    const sorted = fresh();
    const reference = await syncStores(
      listedInOrder([...objects].sort((a, b) => compareKeys(a[0], b[0]))),
      sorted,
    );
    const dst = fresh();
    const r = await syncStores(listedInOrder(objects), dst, { streamLimits: small });
    expect(r).toMatchObject({ complete: true, copied: { objects: keys.length }, version: reference.version });
    const lines = readFileSync(join(dst.root, ".spillway", "manifest.json"), "utf8")
      .split("\n")
      .slice(1, -2);
    const order = lines.map((l) => JSON.parse(l.replace(/,$/, ""))[0] as string);
    expect(order).toEqual([...keys].sort(compareKeys));
    expect([...(await contents(dst)).keys()].sort(compareKeys)).toEqual([...keys].sort(compareKeys));
  });

  it("on a rerun, recopies at most what fell out of the bounded side table, and an unbounded one recopies nothing", async () => {
    const objects = scrambled.map((k): [string, string] => [k, `v1 ${k}`]);
    const dst = fresh();
    const first = await syncStores(listedInOrder(objects), dst, { streamLimits: small });
    const roomy = await syncStores(listedInOrder(objects), dst);
    expect(roomy).toMatchObject({ complete: true, copied: { objects: 0 }, version: first.version });
    const tight = await syncStores(listedInOrder(objects), dst, { streamLimits: small });
    expect(tight).toMatchObject({ complete: true, version: first.version });
    expect(tight.copied.objects + tight.skipped.objects).toBe(keys.length);
    // A change to an object listed out of order is still seen.
    const changed = objects.map(([k, v]): [string, string] => [k, k === "obj-005" ? "v2!" : v]);
    const third = await syncStores(listedInOrder(changed), dst, { streamLimits: small });
    expect(third.complete).toBe(true);
    expect((await contents(dst)).get("obj-005")?.toString()).toBe("v2!");
    expect((await loadManifest(dst, manifestKey()))?.get("obj-005")?.size).toBe(3);
  });
});

describe("--delete against a destination that lists out of key order", () => {
  it.each([
    ["reversed", (all: ObjectInfo[]) => [...all].reverse()],
    [
      "interleaved",
      (all: ObjectInfo[]) => all.filter((_, i) => i % 2).concat(all.filter((_, i) => !(i % 2))),
    ],
  ])("never deletes a key the source holds (%s listing)", async (_name, reorder) => {
    const keep = Array.from({ length: 30 }, (_, i) => `keep/${String(i).padStart(2, "0")}`).concat(EXOTIC);
    const extra = ["keep/05x", "zzz/extra", "a-extra", "keep/99"];
    const src = listedInOrder(keep.map((k) => [k, k]));
    const real = fresh();
    await syncStores(src, real);
    for (const k of extra) await real.put(k, Buffer.from("extra"));
    const dst = listingReordered(real, reorder);
    const r = await syncStores(src, dst, { delete: true, streamLimits: { sideTable: 2 } });
    expect(r).toMatchObject({ complete: true, deleted: { objects: extra.length }, failed: { objects: 0 } });
    expect([...(await contents(real)).keys()].sort(compareKeys)).toEqual([...keep].sort(compareKeys));
  });
});

describe("resuming from journal segments", () => {
  it("journals an interrupted sync in segments, and the rerun copies only what is left, then drops them", async () => {
    const keys = Array.from({ length: 30 }, (_, i) => `o${String(i).padStart(2, "0")}`);
    const src = listedInOrder(keys.map((k) => [k, `content ${k}`]));
    const real = fresh();
    const ac = new AbortController();
    let puts = 0;
    const dst: ObjectStore = {
      ...faulty(real, {}),
      async put(key, body, o) {
        const r = await real.put(key, body, o);
        if (!key.startsWith(".spillway/")) {
          if (++puts === 18) ac.abort();
          await new Promise((res) => setTimeout(res, 5)); // room for the 1 ms checkpoints
        }
        return r;
      },
    };
    const cut = await syncStores(src, dst, { concurrency: 1, checkpointIntervalMs: 1, signal: ac.signal });
    expect(cut).toMatchObject({ complete: false, aborted: true });
    const segments = readdirSync(join(real.root, ".spillway", "journal"));
    expect(segments.length).toBeGreaterThan(1);
    const journaled = new Set<string>();
    for (const s of segments)
      for (const k of (await loadManifest(real, `.spillway/journal/${s}`))!.keys()) journaled.add(k);
    expect(journaled.size).toBeGreaterThanOrEqual(17);

    const rest = await syncStores(src, real);
    expect(rest).toMatchObject({ complete: true, verify: "list", skipped: { objects: journaled.size } });
    expect(rest.copied.objects).toBe(keys.length - journaled.size);
    const left: string[] = [];
    for await (const o of real.list({ prefix: ".spillway/" })) left.push(o.key);
    expect(left).toEqual([".spillway/manifest.json"]);
    expect((await contents(real)).size).toBe(keys.length);
  });

  it("encodes a segment's rows as the copies finish, read back as a manifest; a failed segment's rows go back before later ones", () => {
    const entry = (k: string, v: string) => ({
      size: k.length,
      sha256: sha(v),
      srcEtag: md5(v),
      dstEtag: `d-${v}`,
    });
    const lines = new JournalLines(64); // grows many times over
    expect(lines.take()).toBeUndefined();
    const first = ["z", "a/\u{1F600}", 'm "q"', ...EXOTIC, "\u00e9t\u00e9"];
    for (const k of first) lines.add(k, entry(k, "v1"));
    expect(lines.size).toBe(first.length);
    const segment = lines.take()!;
    expect(lines.size).toBe(0);
    const doc = JSON.parse(segment.document.toString("utf8")) as Record<string, unknown>;
    expect(doc).toMatchObject({ journal: true, objects: first.length });
    expect(doc.version).toBeUndefined();
    // Rows in the order they finished; every byte of the keys as given.
    expect((doc.entries as unknown[][]).map((r) => r[0])).toEqual(first);
    expect(parseManifest(segment.document.toString("utf8"))).toEqual(
      new Map(first.map((k) => [k, entry(k, "v1")])),
    );
    // Its write failed: a later copy of "z" (v2) is added, then the segment is put back. The
    // next segment holds both runs' rows, and the later row for "z" wins.
    lines.add("z", entry("z", "v2"));
    lines.add("b", entry("b", "v2"));
    lines.restore(segment);
    expect(lines.size).toBe(first.length + 2);
    const next = parseManifest(lines.take()!.document.toString("utf8"));
    expect(next.size).toBe(first.length + 1);
    expect(next.get("z")).toEqual(entry("z", "v2"));
    expect(next.get("b")).toEqual(entry("b", "v2"));
    expect(next.get(EXOTIC[0]!)).toEqual(entry(EXOTIC[0]!, "v1"));
  });

  it("a journal segment that failed to write goes out with the next one, and the rerun resumes from it", async () => {
    const keys = Array.from({ length: 20 }, (_, i) => `j${String(i).padStart(2, "0")}`);
    const src = listedInOrder(keys.map((k) => [k, `content ${k}`]));
    const real = fresh();
    const ac = new AbortController();
    let puts = 0;
    let segmentPuts = 0;
    const dst: ObjectStore = {
      ...faulty(real, {}),
      async put(key, body, o) {
        if (key.startsWith(".spillway/journal/") && segmentPuts++ < 3)
          throw new StoreError("Other", "journal write refused"); // the first three writes
        const r = await real.put(key, body, o);
        if (!key.startsWith(".spillway/")) {
          if (++puts === 12) ac.abort();
          await new Promise((res) => setTimeout(res, 5));
        }
        return r;
      },
    };
    const cut = await syncStores(src, dst, {
      concurrency: 1,
      checkpointIntervalMs: 1,
      signal: ac.signal,
      retry: { attempts: 3, baseDelayMs: 1, maxDelayMs: 2 },
    });
    expect(cut).toMatchObject({ complete: false, aborted: true });
    expect(segmentPuts).toBeGreaterThan(3);
    const journaled = new Set<string>();
    for (const s of readdirSync(join(real.root, ".spillway", "journal")))
      for (const k of (await loadManifest(real, `.spillway/journal/${s}`))!.keys()) journaled.add(k);
    // Every finished copy is journaled, the first segment's ones too.
    expect([...journaled].sort()).toEqual(keys.slice(0, journaled.size));
    expect(journaled.size).toBeGreaterThanOrEqual(11);
    const rest = await syncStores(src, real);
    expect(rest).toMatchObject({ complete: true, skipped: { objects: journaled.size } });
    expect(rest.copied.objects).toBe(keys.length - journaled.size);
  });

  it("resumes from the single-file journal of the previous engine", async () => {
    const keys = ["a", "b", "c", "d"];
    const src = listedInOrder(keys.map((k) => [k, `content ${k}`]));
    const dst = fresh();
    await syncStores(
      listedInOrder([
        ["a", "content a"],
        ["b", "content b"],
      ]),
      dst,
    );
    const done = (await loadManifest(dst, manifestKey()))!;
    await dst.delete(manifestKey());
    await dst.put(".spillway/journal.json", serialiseManifest(done)); // as an interrupted run left it
    const r = await syncStores(src, dst);
    expect(r).toMatchObject({ complete: true, skipped: { objects: 2 }, copied: { objects: 2 } });
    expect(await dst.head(".spillway/journal.json")).toBeUndefined();
  });

  it("journals the copies when the manifest cannot be written, so the rerun does not redo them", async () => {
    const keys = ["a", "b", "c"];
    const src = listedInOrder(keys.map((k) => [k, `content ${k}`]));
    const real = fresh();
    const dst: ObjectStore = {
      ...faulty(real, {}),
      async startUpload(key, o) {
        if (key === manifestKey())
          throw new StoreError("Auth", "injected: manifest write refused (HTTP 403)");
        return real.startUpload(key, o);
      },
    };
    await expect(
      syncStores(src, dst, { retry: { attempts: 1, baseDelayMs: 1, maxDelayMs: 1 } }),
    ).rejects.toThrow("manifest write refused");
    const again = await syncStores(src, real);
    expect(again).toMatchObject({ complete: true, copied: { objects: 0 }, skipped: { objects: 3 } });
  });
});

describe("temp files", () => {
  it("a sync removes the manifest temp dir a killed sync left, never a live one", async () => {
    const dead = spawnSync("true").pid!;
    const abandoned = join(tmpdir(), `spillway-manifest-${dead}-test`);
    const recent = join(tmpdir(), `spillway-manifest-${dead}-recent`);
    const live = join(tmpdir(), `spillway-manifest-${process.ppid}-test`);
    for (const d of [abandoned, recent, live]) {
      mkdirSync(d, { recursive: true });
      writeFileSync(join(d, "entries"), "[]");
    }
    const old = new Date(Date.now() - 3600_000);
    for (const d of [abandoned, live]) {
      utimesSync(join(d, "entries"), old, old);
      utimesSync(d, old, old);
    }
    try {
      await removeAbandonedTempDirs();
      expect([existsSync(abandoned), existsSync(recent), existsSync(live)]).toEqual([false, true, true]);
    } finally {
      for (const d of [abandoned, recent, live]) rmSync(d, { recursive: true, force: true });
    }
  });
});
