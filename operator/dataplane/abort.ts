/**
 * Aborting a store's requests and streams when a sync's signal aborts, without a listener per
 * request on that long-lived signal (`onAbort`). Used by the HTTP transport, the Azure streamed
 * put and the file store's reads.
 */
/** The callbacks registered on one signal: slots reused through a free list. */
interface Registry {
  fns: ((() => void) | undefined)[];
  free: number[];
  fired: boolean;
}
const registries = new WeakMap<AbortSignal, Registry>();

/**
 * Runs `fn` when `signal` aborts; returns the function that unregisters it. One 'abort'
 * listener per signal, whatever the number of requests or streams, not one per request.
 *
 * Why: a sync's signal lives as long as the sync, so it is in V8's old generation, and an
 * EventTarget keeps its listeners in a linked list whose removed nodes keep their `next` and
 * their callback. Once a full GC has promoted a node (it promotes everything live), each
 * removed, dead node still points to the next request's listener, which every scavenge then
 * keeps alive — its closure, the request, the response, the socket's read buffers — and
 * promotes, to point to the next one: a cascade through every later request. node:http's and
 * fs streams' `signal` option (and `AbortSignal.any`) add one listener per request, stream or
 * dependent signal to that list. Measured on the bench's Node floor (10,000 × 4 KiB, one
 * forced full GC after 4 s): 80 MiB promoted with node:http's option, 3 MiB without.
 * A `Set` of callbacks does the same at another grain: V8 rehashes a Set that churns, and the
 * replaced table keeps a link to its successor (for live iterators) and its entries, so each
 * obsolete table kept the next one, and the requests in it, alive. Hence slots in an array,
 * reused through a free list: nothing links one generation of callbacks to the next. A sync
 * of 5,000 × 4 KiB Azure → S3 with a full GC forced after 3 s: 47 MiB promoted with the
 * option (or the Set), ~380 KB per scavenge after the GC; 8 MiB, ~47 KB, with this.
 */
export function onAbort(signal: AbortSignal, fn: () => void): () => void {
  if (signal.aborted) {
    fn();
    return () => {};
  }
  let registry = registries.get(signal);
  if (!registry) {
    const r: Registry = { fns: [], free: [], fired: false };
    registry = r;
    registries.set(signal, r);
    signal.addEventListener(
      "abort",
      () => {
        r.fired = true;
        const all = r.fns.filter((f) => f !== undefined);
        r.fns = [];
        r.free = [];
        for (const f of all) f();
      },
      { once: true },
    );
  }
  const r = registry;
  const i = r.free.pop() ?? r.fns.length;
  r.fns[i] = fn;
  let registered = true;
  return () => {
    if (!registered || r.fired) return;
    registered = false;
    r.fns[i] = undefined;
    r.free.push(i);
  };
}

/** The error an aborted request or stream fails with, as Node's `signal` options make it. */
export function abortError(signal: AbortSignal): Error {
  return Object.assign(new Error("The operation was aborted", { cause: signal.reason }), {
    name: "AbortError",
    code: "ABORT_ERR",
  });
}

/**
 * Runs `fn` with a signal of its own that aborts when `signal` does (registered through
 * `onAbort`, unregistered once `fn` settled). For the SDK routes: the AWS SDK's HTTP handler
 * and the Azure SDK's pipeline each add (and later remove) a listener of their own on the
 * signal of every request, which on a sync's long-lived signal is the cascade `onAbort`
 * describes; given a signal of the request's own, they add it there.
 */
export async function withOwnSignal<T>(
  signal: AbortSignal | undefined,
  fn: (signal: AbortSignal | undefined) => Promise<T>,
): Promise<T> {
  if (signal === undefined) return fn(undefined);
  const own = new AbortController();
  const off = onAbort(signal, () => own.abort(signal.reason));
  try {
    return await fn(own.signal);
  } finally {
    off();
  }
}
