/**
 * Transient read buffers, counted for whoever frees them.
 *
 * A sync's reads leave garbage outside V8's heap — node:http's copy of every response body
 * chunk, a file read stream's buffer per read — that dies at once but is freed only when V8
 * collects the small JS object holding it, and a sync allocates so little on the JS heap that
 * V8 collects rarely. The data plane keeps no count and frees nothing itself: it reports the
 * bytes of each such read here, and the process's owner decides (the sync command feeds its
 * `ReadBufferScavenger`, runtime/memory.ts: a minor GC every 16 MiB).
 */
let observer: ((bytes: number) => void) | undefined;

/** Sets the process-wide function told the bytes of each transient read (undefined: none). */
export function setReadObserver(o: ((bytes: number) => void) | undefined): void {
  observer = o;
}

/** Reports a read whose buffer is garbage as soon as it was handed on. */
export function noteTransientRead(bytes: number): void {
  observer?.(bytes);
}
