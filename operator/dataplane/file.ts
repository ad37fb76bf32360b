/**
 * Local-filesystem ObjectStore. An object is a plain file under `root`; writes go to a temp
 * file in `root/.spillway/tmp/` (same filesystem), are fsynced and renamed into place, so a
 * reader or a crash never sees half a file under its key.
 */
import { randomUUID } from "node:crypto";
import { createReadStream } from "node:fs";
import {
  type FileHandle,
  link,
  mkdir,
  open,
  opendir,
  readdir,
  rename,
  rm,
  stat,
  unlink,
} from "node:fs/promises";
import { dirname, join, relative, sep } from "node:path";
import type { Readable } from "node:stream";
import { abortError, onAbort } from "./abort.ts";
import { compareKeys } from "./manifest.ts";
import {
  type AbandonedUploadOptions,
  type AbandonedUploadResult,
  type ListOptions,
  type MultipartUpload,
  normaliseKey,
  type ObjectHead,
  type ObjectInfo,
  type ObjectStore,
  type PartReceipt,
  type PutResult,
  type ReadOptions,
  type StoreCapabilities,
  StoreError,
  type WriteOptions,
} from "./store.ts";

/**
 * Temp files live under Spillway's own `.spillway/` directory (beside the sync manifest), so a
 * synced directory shows one Spillway entry and never a half-written file under a data key.
 */
const META_DIR = ".spillway";
const TMP_NAME = "tmp";

function etagOf(s: { mtimeMs: number; size: number; ino: number }): string {
  return `${Math.round(s.mtimeMs * 1000).toString(16)}-${s.size.toString(16)}-${s.ino.toString(16)}`;
}

function fsError(e: unknown, what: string): StoreError {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return new StoreError("NotFound", `${what}: not found`, { cause: e });
  if (code === "EACCES" || code === "EPERM")
    return new StoreError("Auth", `${what}: permission denied`, { cause: e });
  if (code === "EMFILE" || code === "ENFILE" || code === "EAGAIN" || code === "EBUSY")
    return new StoreError("Transient", `${what}: ${code}`, { cause: e });
  return new StoreError("Other", `${what}: ${(e as Error).message}`, { cause: e });
}

export class FileStore implements ObjectStore {
  readonly capabilities: StoreCapabilities = {
    conditionalWrites: "enforced",
    partChecksum: "none",
    listsSha256: false,
    minPartSize: 1,
    maxParts: 1_000_000,
    maxPutSize: Number.MAX_SAFE_INTEGER,
  };
  readonly displayUri: string;
  private readonly base: string;

  constructor(
    readonly root: string,
    prefix = "",
  ) {
    this.base = prefix ? join(root, prefix) : root;
    this.displayUri = `file://${this.base}`;
  }

  /** The absolute path of a key, after confinement (defence in depth beyond normaliseKey). */
  private pathOf(key: string): string {
    const k = normaliseKey(key);
    const p = join(this.base, ...k.split("/"));
    const rel = relative(this.base, p);
    const segs = rel.split(sep);
    if (rel === "" || rel.startsWith("..") || (segs[0] === META_DIR && segs[1] === TMP_NAME))
      throw new StoreError("InvalidKey", `key escapes the store: ${JSON.stringify(key)}`);
    return p;
  }

  async check(_signal?: AbortSignal, purpose: "read" | "write" = "read"): Promise<void> {
    try {
      const s = await stat(this.base);
      if (!s.isDirectory())
        throw new StoreError("ContainerNotFound", `${this.displayUri} is not a directory`);
    } catch (e) {
      if (e instanceof StoreError) throw e;
      if ((e as NodeJS.ErrnoException).code === "ENOENT" && purpose === "write") {
        // A missing destination directory is created on first write (as `mkdir -p` would);
        // its nearest existing ancestor must be a directory.
        let d = dirname(this.base);
        for (;;) {
          const s = await stat(d).catch(() => undefined);
          if (s?.isDirectory()) return;
          if (s || dirname(d) === d)
            throw new StoreError("ContainerNotFound", `${this.displayUri}: no such directory`);
          d = dirname(d);
        }
      }
      if ((e as NodeJS.ErrnoException).code === "ENOENT")
        throw new StoreError("ContainerNotFound", `${this.displayUri}: no such directory`);
      throw fsError(e, this.displayUri);
    }
  }

  async *list(options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    const want = options.prefix ?? "";
    // Depth-first walk, one directory's names at a time: memory is bounded by the largest
    // directory, not the object count. Keys come out in global UTF-8 byte order (the order of
    // S3 and Azure listings and of the manifest): a directory sorts as `name/`, so `a-b` (0x2D)
    // and `a.txt` (0x2E) come before everything under `a/` (0x2F), and `a0` after it.
    const walk = async function* (this: FileStore, dir: string, rel: string): AsyncGenerator<ObjectInfo> {
      let names: string[];
      try {
        const entries = await readdir(dir, { withFileTypes: true });
        const sortKey = new Map<string, string>();
        for (const d of entries) {
          let isDir = d.isDirectory();
          if (d.isSymbolicLink())
            isDir = (await stat(join(dir, d.name)).catch(() => undefined))?.isDirectory() ?? false;
          sortKey.set(d.name, isDir ? `${d.name}/` : d.name);
        }
        names = [...sortKey.keys()].sort((a, b) => compareKeys(sortKey.get(a)!, sortKey.get(b)!));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT" || (e as NodeJS.ErrnoException).code === "ENOTDIR")
          return;
        throw fsError(e, dir);
      }
      for (const name of names) {
        options.signal?.throwIfAborted();
        if (rel === META_DIR && name === TMP_NAME) continue;
        const key = rel ? `${rel}/${name}` : name;
        if (!(want.startsWith(key) || key.startsWith(want))) continue;
        const p = join(dir, name);
        let s: Awaited<ReturnType<typeof stat>>;
        try {
          s = await stat(p);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === "ENOENT") continue;
          throw fsError(e, p);
        }
        if (s.isDirectory()) yield* walk.call(this, p, key);
        else if (s.isFile() && key.startsWith(want))
          yield { key, size: s.size, etag: etagOf(s), lastModified: s.mtime };
      }
    };
    yield* walk.call(this, this.base, "");
  }

  async head(key: string): Promise<ObjectHead | undefined> {
    const p = this.pathOf(key);
    try {
      const s = await stat(p);
      if (!s.isFile()) return undefined;
      return { key, size: s.size, etag: etagOf(s), lastModified: s.mtime, metadata: {} };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT" || (e as NodeJS.ErrnoException).code === "ENOTDIR")
        return undefined;
      throw fsError(e, key);
    }
  }

  async read(key: string, options: ReadOptions = {}): Promise<Readable> {
    const p = this.pathOf(key);
    const h = await open(p, "r").catch((e: unknown) => {
      throw fsError(e, key);
    });
    const st = await h.stat().catch(async (e: unknown) => {
      await h.close();
      throw fsError(e, key);
    });
    if (options.ifMatch !== undefined && etagOf(st) !== options.ifMatch) {
      await h.close();
      throw new StoreError("PreconditionFailed", `${key}: changed since it was listed`);
    }
    const r = options.range;
    const start = r?.start ?? 0;
    // Up to the size the file has now: a file that grows meanwhile is read as it was (the
    // engine compares the bytes read with the listed size and retries a changed object).
    const last = Math.min(r?.end !== undefined ? r.end - 1 : Number.POSITIVE_INFINITY, st.size - 1);
    if (last < start) {
      await h.close();
      const { Readable } = await import("node:stream");
      return Readable.from([]);
    }
    const stream = createReadStream("", {
      fd: h,
      start,
      end: last,
      // Each read allocates a buffer of this size (and copies a short read into a smaller
      // one): 1 MiB per read of a 4 KiB file, and a second for the end of file, was ~2 MiB of
      // external memory per small object, which V8 answered with a full GC every ~30 objects
      // (150 in a copy of 5,000 × 4 KiB files). Sized to what is read, with `end` so that no
      // read past it is made.
      highWaterMark: Math.min(1 << 20, last - start + 1),
    });
    const signal = options.signal;
    if (signal)
      stream.once(
        "close",
        onAbort(signal, () => stream.destroy(abortError(signal))),
      );
    return stream;
  }

  private async tmpPath(): Promise<string> {
    const dir = join(this.base, META_DIR, TMP_NAME);
    await mkdir(dir, { recursive: true });
    return join(dir, randomUUID());
  }

  /** Moves a complete, fsynced temp file to its key, honouring the write conditions. */
  private async publish(tmp: string, key: string, target: string, options: WriteOptions): Promise<PutResult> {
    await mkdir(dirname(target), { recursive: true });
    if (options.ifMatch !== undefined) {
      const cur = await this.head(key);
      if (!cur || cur.etag !== options.ifMatch) {
        await unlink(tmp).catch(() => {});
        throw new StoreError("PreconditionFailed", `${key}: etag does not match`);
      }
    }
    if (options.ifNoneMatch === "*") {
      // link() fails when the target exists: an atomic create-only publish.
      try {
        await link(tmp, target);
      } catch (e) {
        await unlink(tmp).catch(() => {});
        if ((e as NodeJS.ErrnoException).code === "EEXIST")
          throw new StoreError("PreconditionFailed", `${key}: already exists`);
        throw fsError(e, key);
      }
      await unlink(tmp);
    } else {
      await rename(tmp, target);
    }
    await fsyncDir(dirname(target));
    const s = await stat(target);
    return { etag: etagOf(s) };
  }

  async put(key: string, body: Uint8Array, options: WriteOptions = {}): Promise<PutResult> {
    const target = this.pathOf(key);
    const tmp = await this.tmpPath();
    try {
      const h = await open(tmp, "w");
      try {
        await h.writeFile(body);
        await h.sync();
      } finally {
        await h.close();
      }
      return await this.publish(tmp, key, target, options);
    } catch (e) {
      await unlink(tmp).catch(() => {});
      if (e instanceof StoreError) throw e;
      throw fsError(e, key);
    }
  }

  async startUpload(key: string, options: WriteOptions = {}): Promise<MultipartUpload> {
    const target = this.pathOf(key);
    const tmp = await this.tmpPath();
    const handle: FileHandle = await open(tmp, "w");
    const partSize = options.partSize;
    const store = this;
    // Parts are written in place at (n-1)·partSize when the size is known; otherwise each part
    // goes to its own file and commit concatenates them.
    const partFiles = new Map<number, string>();
    let closed = false;
    return {
      key,
      async uploadPart(partNumber: number, data: Uint8Array): Promise<PartReceipt> {
        if (partSize) {
          let off = 0;
          while (off < data.length) {
            const { bytesWritten } = await handle.write(
              data,
              off,
              data.length - off,
              (partNumber - 1) * partSize + off,
            );
            off += bytesWritten;
          }
          return { partNumber, size: data.length, id: String(partNumber) };
        }
        const pf = `${tmp}.part${partNumber}`;
        const h = await open(pf, "w");
        try {
          await h.writeFile(data);
        } finally {
          await h.close();
        }
        partFiles.set(partNumber, pf);
        return { partNumber, size: data.length, id: pf };
      },
      async commit(parts: PartReceipt[]): Promise<PutResult> {
        const sorted = [...parts].sort((a, b) => a.partNumber - b.partNumber);
        sorted.forEach((p, i) => {
          if (p.partNumber !== i + 1) throw new StoreError("Other", `${key}: missing part ${i + 1}`);
        });
        const total = sorted.reduce((n, p) => n + p.size, 0);
        if (!partSize) {
          let pos = 0;
          for (const p of sorted) {
            const data = await (await open(p.id, "r")).readFile();
            await handle.write(data, 0, data.length, pos);
            pos += data.length;
            await unlink(p.id).catch(() => {});
          }
        }
        await handle.truncate(total);
        await handle.sync();
        await handle.close();
        closed = true;
        return store.publish(tmp, key, target, options);
      },
      async abort(): Promise<void> {
        if (!closed) await handle.close().catch(() => {});
        closed = true;
        await unlink(tmp).catch(() => {});
        for (const pf of partFiles.values()) await unlink(pf).catch(() => {});
      },
    };
  }

  async delete(key: string): Promise<void> {
    const p = this.pathOf(key);
    try {
      await unlink(p);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "ENOTDIR") return;
      throw fsError(e, key);
    }
    // Remove directories the delete emptied, up to the store's base (never above it).
    let d = dirname(p);
    while (d.startsWith(this.base + sep)) {
      try {
        const it = await opendir(d);
        const first = await it.read();
        await it.close();
        if (first) break;
        await rm(d, { recursive: false });
      } catch {
        break;
      }
      d = dirname(d);
    }
  }

  /**
   * Removes the temp files killed writers left in `.spillway/tmp/` (a `put`'s file, a
   * multipart upload's file and its `.part<n>` files): each upload's files go together once
   * none of them was written since `before`. The temp-dir clean-up of the sync's own manifest
   * (`removeAbandonedTempDirs`, under `os.tmpdir()`) does not reach them: they live beside the
   * data. A temp file's name says nothing of its key, so `owns` cannot apply; the age alone
   * decides — a live writer writes its file at least once per part, so it is never that old.
   */
  async abortAbandonedUploads(options: AbandonedUploadOptions): Promise<AbandonedUploadResult> {
    const result: AbandonedUploadResult = { aborted: 0, failed: 0 };
    const dir = join(this.base, META_DIR, TMP_NAME);
    const failed = (what: string, e: unknown) => {
      result.failed++;
      options.onError?.(what, fsError(e, what));
    };
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") failed(`list ${dir}`, e);
      return result;
    }
    // Upload id (the UUID before any `.part<n>`) → its files and when any of them last changed.
    const uploads = new Map<string, { files: string[]; newest: number }>();
    for (const name of names) {
      const id = name.split(".")[0]!;
      const s = await stat(join(dir, name)).catch(() => undefined); // gone meanwhile: committed
      if (!s) continue;
      const u = uploads.get(id) ?? { files: [], newest: 0 };
      u.files.push(name);
      u.newest = Math.max(u.newest, s.mtimeMs);
      uploads.set(id, u);
    }
    for (const u of uploads.values()) {
      if (options.signal?.aborted) break;
      if (!(u.newest < options.before.getTime())) continue;
      try {
        for (const f of u.files)
          await unlink(join(dir, f)).catch((e: unknown) => {
            if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
          });
        result.aborted++;
      } catch (e) {
        failed(`remove ${join(dir, u.files[0]!)}`, e);
      }
    }
    return result;
  }
}

async function fsyncDir(dir: string): Promise<void> {
  try {
    const h = await open(dir, "r");
    try {
      await h.sync();
    } finally {
      await h.close();
    }
  } catch {
    // Some filesystems refuse fsync on directories; the rename is still atomic.
  }
}
