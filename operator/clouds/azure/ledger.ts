/**
 * In-process coordination of the responder: a concurrency limit, a coalescer (one run at a
 * time, later callers share the next run) and the node ledger behind `maxNodes`. JavaScript
 * runs one callback at a time, so a check and a record made without an `await` between them
 * are atomic; these classes lean on that.
 */

/** At most `limit` tasks at once, first come first served. */
export class Semaphore {
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly limit: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((r) => this.waiting.push(r));
    else this.active++;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }
}

/** One run at a time; callers arriving during a run share the next one (which starts after them). */
export class Coalescer<T> {
  private running?: Promise<T>;
  private next?: Promise<T>;

  run(fn: () => Promise<T>): Promise<T> {
    if (!this.running) {
      const p = fn().finally(() => {
        if (this.running === p) this.running = undefined;
      });
      this.running = p;
      return p;
    }
    if (!this.next) {
      const after = this.running.then(
        () => undefined,
        () => undefined,
      );
      this.next = after.then(() => {
        this.next = undefined;
        return this.run(fn);
      });
    }
    return this.next;
  }
}

/**
 * Nodes of one SKU reserved in one group — as last listed from ARM, plus what this process is
 * reserving right now — for the provider's `maxNodes`. `admit` checks and records in one
 * synchronous step, so concurrent offers cannot all pass a check made before any of them
 * reserved; the ARM listing is refreshed when older than the TTL (others may reserve too).
 */
export class NodeLedger {
  private listed = new Map<string, number>();
  private readonly inflight = new Map<string, number>();
  private listedAt = Number.NEGATIVE_INFINITY;
  private readonly refresher = new Coalescer<void>();
  /** Local changes by sequence number, so a listing begun before them does not undo them. */
  private seq = 0;
  private readonly changedAt = new Map<string, { seq: number; nodes: number | undefined }>();

  isFresh(now: number, ttlMs: number): boolean {
    return now - this.listedAt < ttlMs;
  }

  /** Call before listing; hand the result to `replace` with this mark. */
  mark(): number {
    return this.seq;
  }

  refresh(list: () => Promise<Map<string, number>>, now: () => number): Promise<void> {
    return this.refresher.run(async () => {
      const mark = this.mark();
      this.replace(await list(), mark, now());
    });
  }

  replace(listed: Map<string, number>, mark: number, at: number): void {
    for (const [name, change] of this.changedAt) {
      if (change.seq <= mark) this.changedAt.delete(name);
      else if (change.nodes === undefined) listed.delete(name);
      else listed.set(name, change.nodes);
    }
    this.listed = listed;
    this.listedAt = at;
  }

  /** Nodes reserved (settled, not in flight), leaving out `except`. */
  total(except?: ReadonlySet<string>): number {
    let sum = 0;
    for (const [n, c] of this.listed) if (!except?.has(n)) sum += c;
    return sum;
  }

  /** Records `nodes` for `name` if the total stays within `max`; else says how many others hold. */
  admit(name: string, nodes: number, max: number): { ok: true } | { ok: false; others: number } {
    let others = 0;
    for (const [n, c] of this.listed) if (n !== name && !this.inflight.has(n)) others += c;
    for (const [n, c] of this.inflight) if (n !== name) others += c;
    if (others + nodes > max) return { ok: false, others };
    this.inflight.set(name, nodes);
    return { ok: true };
  }

  /** The reservation call ended: it holds `nodes` now, or (undefined) nothing changed. */
  settle(name: string, nodes: number | undefined): void {
    this.inflight.delete(name);
    if (nodes !== undefined) this.record(name, nodes);
  }

  forget(name: string): void {
    this.inflight.delete(name);
    this.record(name, undefined);
  }

  private record(name: string, nodes: number | undefined): void {
    this.seq += 1;
    this.changedAt.set(name, { seq: this.seq, nodes });
    if (nodes === undefined) this.listed.delete(name);
    else this.listed.set(name, nodes);
  }
}
