/**
 * The sync workers' final check, `compareWithSource`: the merged manifest against a fresh
 * listing of the source, both read as streams. The replica is a directory; the source is an
 * in-memory listing (its order is the test's to choose).
 */
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { compareWithSource } from "../../../operator/controllers/dataset/workers.ts";
import { FileStore } from "../../../operator/dataplane/file.ts";
import { type Manifest, manifestKey, saveManifest } from "../../../operator/dataplane/manifest.ts";
import type { ObjectInfo, ObjectStore } from "../../../operator/dataplane/store.ts";
import { ListedSource } from "../../dataplane/doubles.ts";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "spillway-compare-"));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});
let n = 0;

const md5 = (v: string) => createHash("md5").update(v).digest("hex");
const sha = (v: string) => createHash("sha256").update(v).digest("hex");

/** `count` objects `k/00000` … with distinct contents, in key order. */
function objects(count: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < count; i++) out[`k/${String(i).padStart(5, "0")}`] = `content of object ${i}`;
  return out;
}

/** A replica whose committed manifest records exactly `objs` as the workers copied them. */
async function replicaOf(objs: Record<string, string>): Promise<FileStore> {
  const store = new FileStore(join(dir, `r${n++}`));
  const m: Manifest = new Map(
    Object.entries(objs).map(([k, v]) => [
      k,
      { size: Buffer.byteLength(v), sha256: sha(v), srcEtag: md5(v), dstEtag: `d-${k}` },
    ]),
  );
  await saveManifest(store, manifestKey(), m);
  return store;
}

/** A source listing `objs` in the order given (ListedSource lists in insertion order). */
const sourceOf = (objs: Record<string, string>) => new ListedSource(objs);

describe("compareWithSource", () => {
  it("accepts a replica whose manifest is what the source holds, with its totals", async () => {
    const objs = objects(50);
    const r = await compareWithSource(sourceOf(objs), await replicaOf(objs));
    const bytes = Object.values(objs).reduce((s, v) => s + Buffer.byteLength(v), 0);
    expect(r).toEqual({ objects: 50, bytes });
  });

  it("finds an object that changed at the source", async () => {
    const objs = objects(50);
    const replica = await replicaOf(objs);
    const r = await compareWithSource(sourceOf({ ...objs, "k/00020": "changed since the copy" }), replica);
    expect(r).toEqual({ mismatch: "k/00020 changed at the source during the sync" });
  });

  it("finds an object the manifest lacks and one gone from the source", async () => {
    const objs = objects(50);
    const replica = await replicaOf(objs);
    expect(await compareWithSource(sourceOf({ ...objs, "k/00020x": "new" }), replica)).toEqual({
      mismatch: "k/00020x is not in the replica's manifest",
    });
    const { "k/00007": _gone, ...rest } = objs;
    expect(await compareWithSource(sourceOf(rest), replica)).toEqual({
      mismatch: "1 objects of the replica's manifest are gone from the source",
    });
  });

  it("answers keys listed far out of key order by a pass over the manifest", async () => {
    const objs = objects(40);
    const replica = await replicaOf(objs);
    const reversed = Object.fromEntries(Object.entries(objs).reverse());
    // A side table of 3 rows: most keys arrive after the cursor dropped theirs.
    expect(await compareWithSource(sourceOf(reversed), replica, undefined, 3)).toMatchObject({ objects: 40 });
    const { "k/00002": _gone, ...rest } = reversed;
    expect(
      await compareWithSource(sourceOf({ ...rest, "k/00002": "changed" }), replica, undefined, 3),
    ).toEqual({ mismatch: "k/00002 changed at the source during the sync" });
    expect(
      await compareWithSource(sourceOf({ "k/99999": "new", ...reversed }), replica, undefined, 3),
    ).toEqual({
      mismatch: "k/99999 is not in the replica's manifest",
    });
  });

  it("reports a replica without a manifest as unreadable", async () => {
    const r = await compareWithSource(sourceOf(objects(3)), new FileStore(join(dir, `empty${n++}`)));
    expect(r).toEqual({ unreadable: undefined });
  });

  it("reads the manifest alongside the listing, not whole before it", async () => {
    // 4,000 rows (~0.5 MB): when the source lists its first object only the manifest's first
    // chunks may have been read; loading the manifest whole first would have read all of it.
    const objs = objects(4000);
    const files = await replicaOf(objs);
    let manifestBytesRead = 0;
    const replica: ObjectStore = Object.assign(Object.create(files) as FileStore, {
      // Counted as the reader pulls it, in 16 KiB pieces (the file may come as one chunk).
      read: async (key: string, options?: Parameters<FileStore["read"]>[1]) => {
        const inner = await files.read(key, options);
        return Readable.from(
          (async function* () {
            for await (const c of inner as AsyncIterable<Buffer>)
              for (let at = 0; at < c.length; at += 16384) {
                const piece = c.subarray(at, at + 16384);
                manifestBytesRead += piece.length;
                yield piece;
              }
          })(),
          { objectMode: false, highWaterMark: 16384 },
        );
      },
    });
    const source = sourceOf(objs);
    let readAtFirstListing: number | undefined;
    const listing: ObjectStore = Object.assign(Object.create(source) as ListedSource, {
      list: async function* (): AsyncIterable<ObjectInfo> {
        for await (const o of source.list()) {
          readAtFirstListing ??= manifestBytesRead;
          yield o;
        }
      },
    });
    expect(await compareWithSource(listing, replica)).toMatchObject({ objects: 4000 });
    expect(manifestBytesRead).toBeGreaterThan(400_000);
    expect(readAtFirstListing).toBeLessThan(manifestBytesRead / 2);
  });
});
