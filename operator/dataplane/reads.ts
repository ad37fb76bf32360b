/**
 * Transient read buffers, counted for whoever frees them; and bodies lent from one buffer.
 *
 * A sync's reads leave garbage outside V8's heap — node:http's copy of every response body
 * chunk, a file read stream's buffer per read — that dies at once but is freed only when V8
 * collects the small JS object holding it, and a sync allocates so little on the JS heap that
 * V8 collects rarely. The data plane keeps no count and frees nothing itself: it reports the
 * bytes of each such read here, and the process's owner decides (the sync command feeds its
 * `ReadBufferScavenger`, runtime/memory.ts: a minor GC every 16 MiB).
 */
import { Readable } from "node:stream";

let observer: ((bytes: number) => void) | undefined;

/** Sets the process-wide function told the bytes of each transient read (undefined: none). */
export function setReadObserver(o: ((bytes: number) => void) | undefined): void {
  observer = o;
}

/** Reports a read whose buffer is garbage as soon as it was handed on. */
export function noteTransientRead(bytes: number): void {
  observer?.(bytes);
}

/**
 * A request body read into one reused buffer: each chunk `chunks()` yields is lent, valid only
 * until the next is asked for. The raw HTTP routes write a chunk and ask for the next only
 * once the socket has taken it (transport.ts `send`), so a body of any size leaves no garbage
 * — where a Readable's chunks are each a fresh buffer, dead once written but freed only at a
 * GC: the manifest's upload read its temp file (30 MiB at 200,000 objects) that way and the
 * sync's peak RSS rose by ~10–16 MiB in its last second (2026-12-07). `chunks` is called once
 * per attempt: a retried request reads the body again.
 */
export class LentChunks {
  constructor(readonly chunks: () => AsyncIterable<Uint8Array>) {}

  /**
   * The same bytes as a Readable owning a copy of each chunk, for a sender that keeps what it
   * is given (the SDK routes); the copies are reported as transient reads.
   */
  toReadable(): Readable {
    const chunks = this.chunks;
    return Readable.from(
      (async function* () {
        for await (const c of chunks()) {
          noteTransientRead(c.length);
          yield Buffer.from(c);
        }
      })(),
      { objectMode: false },
    );
  }
}

/** A streamed put's body: a stream that gives its chunks away, or lent chunks. */
export type StreamBody = Readable | LentChunks;
