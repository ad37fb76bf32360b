/**
 * A listing's next page, requested before the current one is used up (`PageAhead`).
 *
 * A listing reads one page at a time into one reused buffer (`PageBuffer`, xml.ts), and asked
 * for the next page only when the last entry of the current one was taken. A sync takes
 * entries at its copies' pace, so at every page boundary no new copy started while the store
 * answered: Azurite takes ~0.4 s to list 5,000 blobs, S3 stores list 1,000 keys a page — a
 * stall every page of a long copy, and a no-op resync (which merges a page in milliseconds)
 * never overlapped the store's listing with its own merge.
 *
 * Now the next page's request goes out while the current page is still being taken: as soon
 * as the entries left, at the pace they were taken so far, would take less than twice what the
 * store took to answer the last page (at once for a no-op; near the page's end for a cold copy
 * of small objects). Its response is **held unread** until the page is needed and only then
 * read into the listing's one buffer — so a listing still holds one page's bytes, not two: the
 * unread body waits in node:http's stream buffer (16 KiB) and the socket, which stops reading
 * once that is full (TCP flow control holds the rest at the store). What is overlapped is the
 * store's time to answer (its scan of the container, the page's encoding), which is most of a
 * page's time; the body's transfer is a local copy at network speed.
 *
 * A held response is an ordinary request: if it fails while held (the store or a proxy closes
 * an idle connection, the transport's idle timeout), reading it fails with that error and the
 * listing's retry requests the page again from the same marker — the same path as a page whose
 * connection drops mid-body. When the listing stops early (its consumer returns, the sync is
 * aborted) `close` aborts the early request, which destroys its socket.
 */

import { onAbort } from "./abort.ts";

/** `SPILLWAY_LIST_READ_AHEAD=0` turns the read-ahead off (each page requested when it is needed). */
const READ_AHEAD = process.env.SPILLWAY_LIST_READ_AHEAD !== "0";

/** What the early request resolves with: a response whose body is read later. */
export interface HeldResponse {
  destroy(error?: Error): unknown;
}

/** Sends a page's request; resolves once its response headers arrived (status checked). */
export type OpenPage<R> = (signal: AbortSignal) => Promise<R>;

export class PageAhead<R extends HeldResponse> {
  private readonly stop = new AbortController();
  private readonly unlink: () => void;
  private early: Promise<R> | undefined;
  private next: OpenPage<R> | undefined;
  private count = 0;
  private startedAt = 0;
  /** What the store took to answer the last page (request to headers), ms. */
  private latency = 0;
  /**
   * `signal` is the listing's (a sync's, long-lived: registered through `onAbort`): aborting it
   * aborts the early request as well. `now` is the clock the pacing reads (ms).
   */
  constructor(
    signal: AbortSignal | undefined,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.unlink = signal ? onAbort(signal, () => this.stop.abort(signal.reason)) : () => {};
  }

  /** The signal every request of the listing is sent with (aborted by `close`). */
  get signal(): AbortSignal {
    return this.stop.signal;
  }

  /**
   * A page's response: the early one when it went out (its first attempt only: a retry asks
   * again), otherwise a request sent now through `open`. Either is timed for the pacing.
   */
  response(open: OpenPage<R>): Promise<R> {
    const early = this.early;
    this.early = undefined;
    return early ?? this.timed(open);
  }

  /**
   * A page of `count` entries is about to be taken; `next` sends the request of the page after
   * it (undefined: this is the last page, or the route cannot read ahead).
   */
  page(count: number, next: OpenPage<R> | undefined): void {
    this.count = count;
    this.next = next;
    this.startedAt = this.now();
    if (count === 0) this.send(); // an empty page that is not the last: its successor at once
  }

  /**
   * Entry `i` (0-based) of the current page was taken: sends the next page's request when due.
   * Returns a promise when it did, which the listing awaits before its next entry: it resolves
   * at the event loop's next turn (`setImmediate`), when node:http has written the request.
   *
   * Why: node:http hands a request to its socket in a `process.nextTick`, and Node runs those
   * only once the microtask queue is empty — which a listing's consumer that never waits for
   * I/O (a no-op resync merges a whole page in promise continuations) leaves it only at the
   * page's end: the early request would go out when the page is used up, as without it.
   * Measured on Azurite (50,000 blobs, a consumer spending 100 µs per entry and yielding to
   * the event loop every 100): 9.4 s without the read-ahead, 6.0 s with it.
   */
  taken(i: number): Promise<void> | undefined {
    if (this.next === undefined) return undefined;
    const taken = i + 1;
    const left = this.count - taken;
    // The first entries of a page may be taken faster than the rest (free copy slots): the pace
    // is trusted once an eighth of the page, or 64 entries, went.
    if (left > 0 && taken < Math.min(64, Math.ceil(this.count / 8))) return undefined;
    const elapsed = this.now() - this.startedAt;
    if (left > 0 && (elapsed / taken) * left > 2 * this.latency) return undefined;
    if (!this.send()) return undefined;
    return new Promise((resolve) => setImmediate(resolve));
  }

  /** Aborts the early request (if any) and unregisters from the listing's signal. */
  close(): void {
    this.next = undefined;
    this.unlink();
    this.stop.abort();
    const early = this.early;
    this.early = undefined;
    early?.then(
      (r) => r.destroy(),
      () => {},
    );
  }

  private send(): boolean {
    const open = this.next;
    this.next = undefined;
    if (open === undefined || !READ_AHEAD) return false;
    const early = this.timed(open);
    early.catch(() => {}); // read (and its error met) when the page is needed; not unhandled meanwhile
    this.early = early;
    return true;
  }

  private timed(open: OpenPage<R>): Promise<R> {
    const sent = this.now();
    return open(this.stop.signal).then((r) => {
      this.latency = this.now() - sent;
      return r;
    });
  }
}
