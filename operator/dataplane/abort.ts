/**
 * Aborting a store's requests and streams when a sync's signal aborts, without a listener per
 * request on that long-lived signal (`onAbort`). Used by the HTTP transport, the Azure streamed
 * put and the file store's reads.
 */
const aborters = new WeakMap<AbortSignal, Set<() => void>>();

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
 * forced full GC after 4 s): 80 MiB promoted with node:http's option, 3 MiB without. (A sync
 * still promotes ~380 KB per scavenge after its first full GC, against ~47 KB before, with
 * this: another such chain is left, not found yet — docs/dataplane.md.) A `Set`'s deleted
 * entries keep nothing.
 */
export function onAbort(signal: AbortSignal, fn: () => void): () => void {
  let set = aborters.get(signal);
  if (!set) {
    const callbacks = new Set<() => void>();
    set = callbacks;
    aborters.set(signal, callbacks);
    signal.addEventListener(
      "abort",
      () => {
        const all = [...callbacks];
        callbacks.clear();
        for (const f of all) f();
      },
      { once: true },
    );
  }
  const callbacks = set;
  callbacks.add(fn);
  return () => {
    callbacks.delete(fn);
  };
}

/** The error an aborted request or stream fails with, as Node's `signal` options make it. */
export function abortError(signal: AbortSignal): Error {
  return Object.assign(new Error("The operation was aborted", { cause: signal.reason }), {
    name: "AbortError",
    code: "ABORT_ERR",
  });
}
