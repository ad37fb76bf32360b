/**
 * Lease-based leader election, client-go's algorithm on a coordination.k8s.io/v1 Lease:
 *
 * - A candidate tries every `retryPeriod` (jittered). It may take the lease when it is
 *   free (no holder, or released) or when the holder's record has not changed for
 *   `leaseDurationSeconds` *as observed by the candidate's own clock* (no cross-machine
 *   clock comparison — the same choice client-go makes).
 * - The leader renews every `retryPeriod`; if it cannot renew for `renewDeadline`, or sees
 *   another holder, it steps down at once.
 * - Every write carries the Lease's resourceVersion: two candidates racing for an expired
 *   lease cannot both win (the loser gets 409 Conflict).
 * - `release()` (graceful shutdown) empties the holder so a standby takes over at its next
 *   retry instead of waiting out the lease.
 */
import { jittered } from "./backoff.ts";
import { isAlreadyExists, isConflict, type KubeClient } from "./client.ts";
import { type Clock, realClock, sleep } from "./clock.ts";
import { type Logger, silentLogger } from "./logging.ts";
import { type KubeObject, Resources } from "./resources.ts";

export interface LeaseRecord {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

export interface LeaseObject extends KubeObject {
  spec?: LeaseRecord;
}

/** Storage of the lease record with optimistic concurrency (a Lease object, or a fake). */
export interface LeaseLock {
  readonly description: string;
  get(): Promise<{ record: LeaseRecord; resourceVersion: string } | undefined>;
  /** Fails (throws) if the lease already exists. */
  create(record: LeaseRecord): Promise<void>;
  /** Fails (throws) if the lease changed since `resourceVersion`. */
  update(record: LeaseRecord, resourceVersion: string): Promise<void>;
}

/** The lock on a real Lease object. */
export class KubeLeaseLock implements LeaseLock {
  readonly description: string;
  constructor(
    private readonly client: KubeClient,
    private readonly namespace: string,
    private readonly name: string,
  ) {
    this.description = `${namespace}/${name}`;
  }

  async get() {
    const lease = await this.client.tryGet<LeaseObject>(Resources.Lease, this.name, this.namespace);
    if (!lease) return undefined;
    return { record: lease.spec ?? {}, resourceVersion: lease.metadata.resourceVersion ?? "" };
  }

  async create(record: LeaseRecord) {
    await this.client.create<LeaseObject>(Resources.Lease, {
      metadata: { name: this.name, namespace: this.namespace },
      spec: record,
    });
  }

  async update(record: LeaseRecord, resourceVersion: string) {
    await this.client.update<LeaseObject>(Resources.Lease, {
      metadata: { name: this.name, namespace: this.namespace, resourceVersion },
      spec: record,
    });
  }
}

export interface LeaderElectionOptions {
  lock: LeaseLock;
  /** Unique per replica (pod name + random suffix). */
  identity: string;
  /** How long a lease is valid without renewal. Default 15 s. */
  leaseDurationMs?: number;
  /** How long the leader keeps retrying a failed renewal before stepping down. Default 10 s. */
  renewDeadlineMs?: number;
  /** Pause between attempts. Default 2 s. */
  retryPeriodMs?: number;
  clock?: Clock;
  random?: () => number;
  logger?: Logger;
  onStartedLeading?: () => void;
  onStoppedLeading?: () => void;
  onNewLeader?: (identity: string) => void;
}

/** MicroTime as the API serialises it: RFC 3339 with microseconds. */
export function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

export class LeaderElector {
  readonly identity: string;
  readonly leaseDurationMs: number;
  readonly renewDeadlineMs: number;
  readonly retryPeriodMs: number;
  private leading = false;
  private observed?: { record: LeaseRecord; resourceVersion: string };
  private observedTime = 0;
  private lastRenewal = 0;
  private abort?: AbortController;
  private loop?: Promise<void>;
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly log: Logger;
  private lastLeader?: string;

  constructor(private readonly opts: LeaderElectionOptions) {
    this.identity = opts.identity;
    this.leaseDurationMs = opts.leaseDurationMs ?? 15_000;
    this.renewDeadlineMs = opts.renewDeadlineMs ?? 10_000;
    this.retryPeriodMs = opts.retryPeriodMs ?? 2_000;
    if (!(this.leaseDurationMs > this.renewDeadlineMs && this.renewDeadlineMs > 1.2 * this.retryPeriodMs)) {
      throw new Error(
        `leader election needs leaseDuration > renewDeadline > 1.2 × retryPeriod (got ${this.leaseDurationMs}/${this.renewDeadlineMs}/${this.retryPeriodMs} ms)`,
      );
    }
    this.clock = opts.clock ?? realClock;
    this.random = opts.random ?? Math.random;
    this.log = (opts.logger ?? silentLogger()).child({
      lease: opts.lock.description,
      identity: opts.identity,
    });
  }

  isLeader(): boolean {
    return this.leading;
  }

  /** The holder last seen on the lease (may be this replica). */
  leader(): string | undefined {
    return this.lastLeader;
  }

  /** Healthy unless we believe we lead but have not renewed for a whole lease duration. */
  healthy(): boolean {
    return !this.leading || this.clock.now() - this.lastRenewal <= this.leaseDurationMs;
  }

  /** Campaigns, leads, and after losing the lease campaigns again, until `stop()`. */
  start(): void {
    if (this.loop) return;
    this.abort = new AbortController();
    this.loop = this.run(this.abort.signal);
  }

  /** Stops campaigning and renewing. The lease is kept (call `release()` to hand it over). */
  async stop(): Promise<void> {
    this.abort?.abort();
    await this.loop;
    this.loop = undefined;
    this.stepDown();
  }

  /** Gives up the lease if this replica holds it: an empty holder lets a standby take over at once. */
  async release(): Promise<boolean> {
    try {
      const current = await this.opts.lock.get();
      if (!current || current.record.holderIdentity !== this.identity) return false;
      const now = this.clock.now();
      await this.opts.lock.update(
        {
          holderIdentity: "",
          leaseDurationSeconds: 1,
          acquireTime: microTime(now),
          renewTime: microTime(now),
          leaseTransitions: current.record.leaseTransitions ?? 0,
        },
        current.resourceVersion,
      );
      this.log.info("released the lease");
      return true;
    } catch (err) {
      this.log.warn("could not release the lease", { err });
      return false;
    } finally {
      this.stepDown();
    }
  }

  private async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      if (!(await this.acquire(signal))) return;
      this.leading = true;
      this.lastRenewal = this.clock.now();
      this.log.info("became leader");
      this.safely(() => this.opts.onStartedLeading?.());
      await this.renew(signal);
      if (signal.aborted) return; // stop(): the caller decides about release and callbacks
      this.stepDown();
    }
  }

  private stepDown(): void {
    if (!this.leading) return;
    this.leading = false;
    this.log.info("stopped leading");
    this.safely(() => this.opts.onStoppedLeading?.());
  }

  private async acquire(signal: AbortSignal): Promise<boolean> {
    while (!signal.aborted) {
      if (await this.tryAcquireOrRenew()) return true;
      await sleep(this.clock, jittered(this.retryPeriodMs, 1.2, this.random), signal);
    }
    return false;
  }

  private async renew(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      await sleep(this.clock, this.retryPeriodMs, signal);
      if (signal.aborted) return;
      if (await this.tryAcquireOrRenew()) {
        this.lastRenewal = this.clock.now();
        continue;
      }
      const holder = this.observed?.record.holderIdentity;
      if (holder && holder !== this.identity) {
        this.log.warn("lease taken by another replica", { holder });
        return;
      }
      if (this.clock.now() - this.lastRenewal >= this.renewDeadlineMs) {
        this.log.error("failed to renew the lease within the renew deadline", {
          renewDeadlineMs: this.renewDeadlineMs,
        });
        return;
      }
    }
  }

  /** One attempt: create, take over or renew the lease. Never throws. */
  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = this.clock.now();
    const durationSeconds = Math.max(1, Math.ceil(this.leaseDurationMs / 1000));
    const mine = (prev?: LeaseRecord): LeaseRecord => ({
      holderIdentity: this.identity,
      leaseDurationSeconds: durationSeconds,
      acquireTime: prev?.holderIdentity === this.identity ? prev.acquireTime : microTime(now),
      renewTime: microTime(now),
      leaseTransitions:
        prev === undefined
          ? 0
          : prev.holderIdentity === this.identity
            ? (prev.leaseTransitions ?? 0)
            : (prev.leaseTransitions ?? 0) + 1,
    });
    try {
      const current = await this.opts.lock.get();
      if (!current) {
        const record = mine();
        await this.opts.lock.create(record);
        this.observe({ record, resourceVersion: "" }, now);
        return true;
      }
      if (
        !this.observed ||
        this.observed.resourceVersion !== current.resourceVersion ||
        this.observed.record.renewTime !== current.record.renewTime
      ) {
        this.observe(current, now);
      }
      const holder = current.record.holderIdentity;
      const validForMs = (current.record.leaseDurationSeconds ?? durationSeconds) * 1000;
      if (holder && holder !== this.identity && this.observedTime + validForMs > now) return false;
      const record = mine(current.record);
      await this.opts.lock.update(record, current.resourceVersion);
      this.observe({ record, resourceVersion: "" }, now);
      return true;
    } catch (err) {
      if (!isConflict(err) && !isAlreadyExists(err)) this.log.warn("lease attempt failed", { err });
      return false;
    }
  }

  private observe(seen: { record: LeaseRecord; resourceVersion: string }, now: number): void {
    this.observed = seen;
    this.observedTime = now;
    const holder = seen.record.holderIdentity;
    if (holder && holder !== this.lastLeader) {
      this.lastLeader = holder;
      this.safely(() => this.opts.onNewLeader?.(holder));
    }
  }

  private safely(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.log.error("leader election callback failed", { err });
    }
  }
}
