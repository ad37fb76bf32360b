/**
 * Test doubles around the ObjectStore port: a source that lists keys no real emulator can hold
 * (hostile `..` keys), a generated source of any size that holds nothing in memory, and a
 * wrapper that injects faults into a real store.
 */
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import {
  type ListOptions,
  type MultipartUpload,
  type ObjectHead,
  type ObjectInfo,
  type ObjectStore,
  type PutResult,
  type ReadOptions,
  StoreError,
  type WriteOptions,
} from "../../operator/dataplane/index.ts";

/** A read-only source listing arbitrary (possibly hostile) keys with in-memory contents. */
export class ListedSource implements ObjectStore {
  readonly displayUri = "memory://listed";
  readonly capabilities = {
    conditionalWrites: "none",
    partChecksum: "none",
    listsSha256: false,
    minPartSize: 1,
    maxParts: 10_000,
    maxPutSize: Number.MAX_SAFE_INTEGER,
  } as const;
  constructor(private readonly objects: Record<string, string>) {}
  async *list(): AsyncIterable<ObjectInfo> {
    for (const [key, v] of Object.entries(this.objects))
      yield { key, size: Buffer.byteLength(v), etag: createHash("md5").update(v).digest("hex") };
  }
  async head(): Promise<ObjectHead | undefined> {
    return undefined;
  }
  async read(key: string): Promise<Readable> {
    const v = this.objects[key];
    if (v === undefined) throw new StoreError("NotFound", key);
    return Readable.from([Buffer.from(v)]);
  }
  put(): Promise<PutResult> {
    throw new Error("read-only");
  }
  startUpload(): Promise<MultipartUpload> {
    throw new Error("read-only");
  }
  async delete(): Promise<void> {}
  async check(): Promise<void> {}
}

/** Deterministic bytes: byte i of object `key` is (i * 31 + seed) & 0xff. */
export class GeneratedSource implements ObjectStore {
  readonly displayUri = "generated://";
  readonly capabilities = {
    conditionalWrites: "none",
    partChecksum: "none",
    listsSha256: false,
    minPartSize: 1,
    maxParts: 10_000,
    maxPutSize: Number.MAX_SAFE_INTEGER,
  } as const;
  constructor(
    private readonly key: string,
    readonly size: number,
    private readonly seed = 7,
  ) {}
  /** The sha256 of the generated content, computed the same streaming way. */
  async sha256(): Promise<string> {
    const h = createHash("sha256");
    for await (const c of await this.read()) h.update(c as Buffer);
    return h.digest("hex");
  }
  async *list(): AsyncIterable<ObjectInfo> {
    yield { key: this.key, size: this.size, etag: `gen-${this.seed}` };
  }
  async head(): Promise<ObjectHead | undefined> {
    return undefined;
  }
  async read(_key?: string, options: ReadOptions = {}): Promise<Readable> {
    const chunk = 1 << 20;
    // The pattern repeats every 256 bytes, so any offset maps into one precomputed chunk.
    const pattern = Buffer.alloc(chunk + 256);
    for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 31 + this.seed) & 0xff;
    const from = options.range?.start ?? 0;
    const to = Math.min(this.size, options.range?.end ?? this.size);
    return Readable.from(
      (function* () {
        for (let off = from; off < to; off += chunk) {
          const skew = off % 256;
          yield pattern.subarray(skew, skew + Math.min(chunk, to - off));
        }
      })(),
      { objectMode: false },
    );
  }
  put(): Promise<PutResult> {
    throw new Error("read-only");
  }
  startUpload(): Promise<MultipartUpload> {
    throw new Error("read-only");
  }
  async delete(): Promise<void> {}
  async check(): Promise<void> {}
}

export interface Faults {
  /** Keys whose reads fail with this error every time. */
  failReads?: Map<string, StoreError>;
  /** The first N writes (put / part upload) fail with Throttled (then they succeed). */
  throttleWrites?: number;
}

/** Delegates to a real store and injects the configured faults. */
export function faulty(inner: ObjectStore, faults: Faults): ObjectStore & { throttled: number } {
  let throttled = 0;
  const throttle = () => {
    if (throttled < (faults.throttleWrites ?? 0)) {
      throttled++;
      throw new StoreError("Throttled", "injected: 503 SlowDown");
    }
  };
  return {
    get throttled() {
      return throttled;
    },
    displayUri: inner.displayUri,
    capabilities: inner.capabilities,
    list: (o?: ListOptions) => inner.list(o),
    head: (k: string, s?: AbortSignal) => inner.head(k, s),
    async read(key: string, o?: ReadOptions) {
      const e = faults.failReads?.get(key);
      if (e) throw e;
      return inner.read(key, o);
    },
    async put(key: string, body: Uint8Array, o?: WriteOptions) {
      throttle();
      return inner.put(key, body, o);
    },
    async startUpload(key: string, o?: WriteOptions) {
      const up = await inner.startUpload(key, o);
      return {
        key: up.key,
        async uploadPart(n: number, d: Uint8Array, s?: AbortSignal) {
          throttle();
          return up.uploadPart(n, d, s);
        },
        commit: (p, c) => up.commit(p, c),
        abort: () => up.abort(),
      } satisfies MultipartUpload;
    },
    delete: (k: string, s?: AbortSignal) => inner.delete(k, s),
    check: (s?: AbortSignal, p?: "read" | "write") => inner.check(s, p),
  };
}
