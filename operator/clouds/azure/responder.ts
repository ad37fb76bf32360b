/**
 * The Azure primary's answer to a CapacityOffer, through Azure Resource Manager with the real
 * SDKs: a capacity reservation for the request (SKU × nodes, in the provider's capacity
 * reservation group), then the AKS GPU agent pool bound to that group scaled to the reserved
 * node count.
 *
 * The steps of `respond`, each a decline before anything is reserved when it fails:
 * 1. settings: `spec.azure`, the offer's region is the provider's, a SKU for the GPU type;
 * 2. price: the price-match rule (`operator/rofr/pricing.ts`; list price and floor from the
 *    provider's `spec.pricing`; ARM has no price API);
 * 3. the agent pool exists and runs that SKU (`AgentPools.get`, once per pool: AKS never
 *    changes a pool's VM size);
 * 4. idempotency: the reservation named after the offer (`CapacityReservations.get`); when it
 *    already holds the request, skip to 8;
 * 5. the SKU is offered in the region (`ResourceSkus.list`, cached), which also gives its
 *    quota family and vCPUs;
 * 6. quota: free vCPUs of the family (and the regional total) cover the request (`Usage.list`);
 *    `maxNodes`: the group's reservations of the SKU plus this request stay within it
 *    (`NodeLedger`, refreshed from `CapacityReservations.list`);
 * 7. the group exists (created when missing), then the reservation
 *    (`CapacityReservations.createOrUpdate`, tagged with the offer and run);
 * 8. the pool is scaled to the sum of the group's reservations of its SKU
 *    (`AgentPools.createOrUpdate`) — a level, not an increment, so retries never over-scale.
 * ARM errors at any step are classified (`errors.ts`); throttling and 5xx throw
 * `RetryableError`; a decline once the offer holds a reservation (made now or by an earlier
 * try) removes it.
 *
 * Pool sizing is coalesced per pool: one sizing runs at a time and every caller that arrived
 * during it shares the next one, which sees all of their reservations. Many concurrent offers
 * thus cost a few pool writes, not one each, and two sizings never race each other with stale
 * sums. (One operator replica acts at a time: leader election.)
 */
import { createHash } from "node:crypto";
import type { AgentPool } from "@azure/arm-containerservice";
import type { TokenCredential } from "@azure/core-auth";
import type { CapacityOffer, CloudProvider } from "../../api/v1alpha1/index.ts";
import { RetryableError } from "../../ports/errors.ts";
import type { OfferAnswer, PrimaryResponder, ResponderContext } from "../../ports/responder.ts";
import { priceMatch } from "../../rofr/pricing.ts";
import {
  AzureClientCache,
  type AzureClients,
  CredentialsConfigError,
  PUBLIC_ARM_ENDPOINT,
} from "./clients.ts";
import { type ArmErrorClass, classifyArmError, safeMessage } from "./errors.ts";
import { Coalescer, NodeLedger, Semaphore } from "./ledger.ts";

type AzureSettings = NonNullable<CloudProvider["spec"]["azure"]>;

/** The few logger methods used (winston's Logger fits). */
export interface ResponderLogger {
  info(message: string, meta?: Record<string, unknown>): unknown;
  warn(message: string, meta?: Record<string, unknown>): unknown;
}

export interface AzureResponderOptions {
  /** ARM endpoint when the provider's `spec.azure.armEndpoint` is unset; else the public cloud's. */
  armEndpoint?: string;
  /** Entra ID authority host when the credentials Secret has no `authorityHost`. */
  authorityHost?: string;
  /** PEM CA certificate(s) to trust for ARM and token calls (the sandbox's emulator, a private CA). */
  ca?: string;
  /** Credential used when the offer's context carries no credentials Secret (workload identity). */
  credential?: TokenCredential;
  /**
   * Retries inside the SDK (throttling, 5xx). Default 0: the controller's work queue owns
   * backoff, and an SDK sleeping inside `respond` would eat the offer's deadline unseen.
   */
  sdkMaxRetries?: number;
  /**
   * Offers (and releases) worked on at once; the rest wait their turn. Default 16. ARM
   * throttles a subscription's writes, and a thousand simultaneous TLS connections help no one.
   */
  concurrency?: number;
  /**
   * Poll interval of long-running ARM operations when Azure sends no Retry-After. Default: the
   * SDK's (2 s). The sandbox sets a few milliseconds.
   */
  pollIntervalMs?: number;
  /** How long a region's SKU catalogue is reused. Default 5 minutes. */
  skuCacheTtlMs?: number;
  logger?: ResponderLogger;
  now?: () => number;
}

/** A reservation Spillway made, as `managedReservations` lists it. */
export interface ManagedReservation {
  name: string;
  id?: string;
  sku: string;
  nodes: number;
  /** The offer it was made for (namespace and name, from its tags). */
  offer: { namespace: string; name: string };
  offerUid?: string;
  runUid?: string;
}

/** Tags written on each reservation: what it is for, for people and for garbage collection. */
export const RESERVATION_TAGS = {
  managedBy: "spillway-managed-by",
  offer: "spillway-offer",
  offerUid: "spillway-offer-uid",
  runUid: "spillway-run-uid",
} as const;

const MAX_RESERVATION_NAME = 64;

/**
 * The capacity reservation's name for an offer: `sw-<namespace>-<offer>-<digest>`, shortened
 * to Azure's limit. The digest of `namespace/name` keeps `ml`/`team-x` and `ml-team`/`x`
 * apart; being a function of the offer alone, a retry (or a restarted operator) finds it.
 */
export function reservationName(offer: Pick<CapacityOffer, "metadata">): string {
  const ns = offer.metadata.namespace ?? "default";
  const name = offer.metadata.name ?? "offer";
  const digest = createHash("sha256").update(`${ns}/${name}`).digest("hex").slice(0, 8);
  const readable = `sw-${ns}-${name}`.replace(/[^A-Za-z0-9_.-]/g, "-").slice(0, MAX_RESERVATION_NAME - 9);
  return `${readable.replace(/[.-]+$/, "")}-${digest}`;
}

interface SkuFacts {
  family: string;
  vcpus: number;
  restricted: boolean;
}

interface PoolTarget {
  clients: AzureClients;
  az: AzureSettings;
  key: string;
}

class Decline extends Error {
  constructor(
    readonly reason: NonNullable<OfferAnswer["reason"]>,
    message: string,
  ) {
    super(message);
  }
}

const lc = (s: string | undefined) => (s ?? "").toLowerCase();

function isNotFound(e: unknown): boolean {
  const status = (e as { statusCode?: unknown } | null)?.statusCode;
  return status === 404;
}

const LEDGER_TTL_MS = 30_000;

export class AzureResponder implements PrimaryResponder {
  private readonly clients = new AzureClientCache();
  private readonly skuCache = new Map<string, { at: number; skus: Map<string, SkuFacts> }>();
  private readonly sizers = new Map<string, Coalescer<number>>();
  private readonly ledgers = new Map<string, NodeLedger>();
  /** Facts that do not change under us: a pool's VM size, a group that exists. */
  private readonly poolSizes = new Map<string, string>();
  private readonly knownGroups = new Set<string>();
  /** Reservations being released, per pool: left out of the pool's size before they are deleted. */
  private readonly releasing = new Map<string, Set<string>>();
  private readonly now: () => number;
  private readonly slots: Semaphore;
  /** Options of every long-running call. */
  private readonly lro: { updateIntervalInMs?: number };

  constructor(private readonly opts: AzureResponderOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.slots = new Semaphore(Math.max(1, opts.concurrency ?? 16));
    this.lro = opts.pollIntervalMs !== undefined ? { updateIntervalInMs: opts.pollIntervalMs } : {};
  }

  async respond(offer: CapacityOffer, provider: CloudProvider, ctx: ResponderContext): Promise<OfferAnswer> {
    const secrets = Object.values(ctx.credentials ?? {});
    try {
      const answer = await this.slots.run(() => this.answer(offer, provider, ctx));
      this.log("info", `offer ${answer.outcome}`, offer, provider, {
        outcome: answer.outcome,
        reason: answer.reason ?? null,
      });
      return { ...answer, message: safeMessage(answer.message, secrets) };
    } catch (e) {
      if (e instanceof Decline) {
        const message = safeMessage(e.message, secrets);
        this.log("info", "offer Declined", offer, provider, { outcome: "Declined", reason: e.reason });
        return { outcome: "Declined", reason: e.reason, message };
      }
      if (e instanceof RetryableError) {
        this.log("warn", "transient Azure error; the offer will be retried", offer, provider, {
          error: safeMessage(e.message, secrets),
        });
        throw new RetryableError(safeMessage(e.message, secrets), e.retryAfterMs);
      }
      throw e;
    }
  }

  release(offer: CapacityOffer, provider: CloudProvider, ctx: ResponderContext): Promise<void> {
    return this.slots.run(() =>
      this.releaseNow(reservationName(offer), provider, ctx, this.fields(offer, provider)),
    );
  }

  /**
   * Spillway's reservations in the provider's group, with the offer each was made for (from
   * its tags): for a collector that releases those whose offer is gone or was not accepted
   * (an answer lost to a crash, a `respond` that outlived the offer's deadline).
   */
  async managedReservations(provider: CloudProvider, ctx: ResponderContext): Promise<ManagedReservation[]> {
    const az = provider.spec.azure;
    if (!az) return [];
    const secrets = Object.values(ctx.credentials ?? {});
    try {
      return await this.slots.run(async () => {
        const { clients } = this.poolTarget(provider, az, ctx);
        const out: ManagedReservation[] = [];
        await this.call(async () => {
          for await (const r of clients.compute.capacityReservations.listByCapacityReservationGroup(
            az.resourceGroup,
            az.capacityReservationGroup,
            { abortSignal: ctx.signal },
          )) {
            const tags = r.tags ?? {};
            if (tags[RESERVATION_TAGS.managedBy] !== "spillway" || !r.name) continue;
            const [namespace, offerName] = (tags[RESERVATION_TAGS.offer] ?? "/").split("/", 2);
            out.push({
              name: r.name,
              ...(r.id ? { id: r.id } : {}),
              sku: r.sku.name ?? "",
              nodes: r.sku.capacity ?? 0,
              offer: { namespace: namespace ?? "", name: offerName ?? "" },
              ...(tags[RESERVATION_TAGS.offerUid] ? { offerUid: tags[RESERVATION_TAGS.offerUid] } : {}),
              ...(tags[RESERVATION_TAGS.runUid] ? { runUid: tags[RESERVATION_TAGS.runUid] } : {}),
            });
          }
        });
        return out;
      });
    } catch (e) {
      throw this.releaseError(e, "listing reservations", secrets);
    }
  }

  /** Releases a reservation by name (from `managedReservations`): the pool shrinks, the reservation goes. */
  releaseReservation(name: string, provider: CloudProvider, ctx: ResponderContext): Promise<void> {
    return this.slots.run(() =>
      this.releaseNow(name, provider, ctx, { provider: provider.metadata.name ?? null, reservation: name }),
    );
  }

  private async releaseNow(
    name: string,
    provider: CloudProvider,
    ctx: ResponderContext,
    fields: Record<string, unknown>,
  ): Promise<void> {
    const az = provider.spec.azure;
    if (!az) return;
    const secrets = Object.values(ctx.credentials ?? {});
    try {
      const target = this.poolTarget(provider, az, ctx);
      const releasing = this.releasingSet(target.key);
      releasing.add(lc(name));
      try {
        // The pool shrinks first: Azure deletes a reservation only once no VM is associated.
        await this.sizePool(target, ctx.signal);
        await this.call(
          () =>
            target.clients.compute.capacityReservations.delete(
              az.resourceGroup,
              az.capacityReservationGroup,
              name,
              {
                abortSignal: ctx.signal,
                ...this.lro,
              },
            ),
          { notFound: undefined },
        );
      } finally {
        releasing.delete(lc(name));
      }
      for (const [key, ledger] of this.ledgers) if (key.startsWith(`${target.key}|`)) ledger.forget(lc(name));
      this.opts.logger?.info("reservation released", { ...fields, reservation: name });
    } catch (e) {
      throw this.releaseError(e, `release of ${name}`, secrets);
    }
  }

  /** Errors out of release paths: retryable ones stay retryable; messages scrubbed. */
  private releaseError(e: unknown, what: string, secrets: string[]): unknown {
    if (e instanceof Decline)
      return new Error(`${what} failed: ${e.reason}: ${safeMessage(e.message, secrets)}`);
    if (e instanceof RetryableError)
      return new RetryableError(safeMessage(e.message, secrets), e.retryAfterMs);
    return e;
  }

  private async answer(
    offer: CapacityOffer,
    provider: CloudProvider,
    ctx: ResponderContext,
  ): Promise<OfferAnswer> {
    const pname = provider.metadata.name ?? "the primary";
    const az = provider.spec.azure;
    if (!az) throw new Decline("ProviderError", `CloudProvider ${pname} has no spec.azure settings`);
    const req = offer.spec.request;
    if (lc(req.region) !== lc(provider.spec.region)) {
      throw new Decline(
        "RegionNotAllowed",
        `the offer asks for region ${req.region}; ${pname} serves ${provider.spec.region}`,
      );
    }
    const mapping = provider.spec.capacity.gpus.find((g) => g.type === req.gpuType);
    const sku = req.sku ?? mapping?.sku;
    if (!sku) throw new Decline("SkuUnavailable", `${pname} has no SKU for GPU type ${req.gpuType}`);
    if (mapping && mapping.gpusPerNode < req.gpusPerNode) {
      throw new Decline(
        "SkuUnavailable",
        `${sku} has ${mapping.gpusPerNode} GPUs per node; the run asks for ${req.gpusPerNode}`,
      );
    }
    const price = priceMatch(offer, provider);
    if (!price.accept) throw new Decline("PriceNotMatched", price.message);

    const target = this.poolTarget(provider, az, ctx);
    const { compute } = target.clients;
    const signal = ctx.signal;
    const name = reservationName(offer);
    const region = provider.spec.region;

    const poolSize = await this.poolVmSize(target, signal);
    if (lc(poolSize) !== lc(sku)) {
      throw new Decline(
        "SkuUnavailable",
        `AKS pool ${az.nodePool} runs ${poolSize || "an unknown size"}, not ${sku}`,
      );
    }

    const existing = await this.call(
      () =>
        compute.capacityReservations.get(az.resourceGroup, az.capacityReservationGroup, name, {
          abortSignal: signal,
        }),
      { notFound: undefined },
    );
    const held = existing && lc(existing.sku.name) === lc(sku) ? (existing.sku.capacity ?? 0) : 0;
    let reservationId = existing?.id;
    // Whether the offer holds a reservation now (one from an earlier try counts): a decline
    // from here on must remove it, since nothing of a declined offer may stay reserved.
    let reserved = existing !== undefined;
    try {
      if (!existing || held !== req.nodes || existing.provisioningState === "Failed") {
        const facts = await this.skuFacts(target.clients, region, sku, signal);
        if (!facts)
          throw new Decline("SkuUnavailable", `${sku} is not offered in ${region} to this subscription`);
        if (facts.restricted)
          throw new Decline("SkuUnavailable", `${sku} is restricted in ${region} for this subscription`);
        await this.checkQuota(target.clients, region, facts, (req.nodes - held) * facts.vcpus, signal);
        const ledger = this.ledger(target, sku);
        if (mapping?.maxNodes !== undefined) {
          if (!ledger.isFresh(this.now(), LEDGER_TTL_MS)) {
            await ledger.refresh(() => this.listReservations(target, sku, signal), this.now);
          }
          const admitted = ledger.admit(lc(name), req.nodes, mapping.maxNodes);
          if (!admitted.ok) {
            throw new Decline(
              "NoCapacity",
              `${pname} may use at most ${mapping.maxNodes} ${sku} nodes; ${admitted.others} are reserved and the run needs ${req.nodes}`,
            );
          }
        }
        let reservation: Awaited<ReturnType<typeof compute.capacityReservations.get>>;
        try {
          await this.ensureGroup(target, region, signal);
          reservation = await this.reserve(offer, target, name, region, sku, req.nodes, signal);
          ledger.settle(lc(name), req.nodes);
        } catch (e) {
          ledger.settle(lc(name), undefined);
          // The group may have been deleted behind our back: look again next time.
          this.knownGroups.delete(`${target.key}|${lc(az.capacityReservationGroup)}`);
          throw e;
        }
        reserved = true;
        reservationId = reservation.id;
      }
      await this.sizePool(target, signal);
    } catch (e) {
      if (e instanceof Decline && reserved) {
        await this.call(
          () =>
            compute.capacityReservations.delete(az.resourceGroup, az.capacityReservationGroup, name, {
              abortSignal: signal,
              ...this.lro,
            }),
          { notFound: undefined },
        ).catch(() => undefined);
        this.ledger(target, sku).forget(lc(name));
      }
      throw e;
    }

    return {
      outcome: "Accepted",
      message: `${req.nodes}× ${sku} reserved in ${region} (${name}); ${price.message}`,
      ...(price.pricePerHour !== undefined ? { acceptedPricePerHour: price.pricePerHour } : {}),
      ...(reservationId ? { reservation: reservationId } : {}),
    };
  }

  private reserve(
    offer: CapacityOffer,
    target: PoolTarget,
    name: string,
    region: string,
    sku: string,
    nodes: number,
    signal: AbortSignal | undefined,
  ) {
    const { az, clients } = target;
    return this.call(() =>
      clients.compute.capacityReservations.createOrUpdate(
        az.resourceGroup,
        az.capacityReservationGroup,
        name,
        {
          location: region,
          sku: { name: sku, capacity: nodes },
          tags: {
            [RESERVATION_TAGS.managedBy]: "spillway",
            [RESERVATION_TAGS.offer]: `${offer.metadata.namespace ?? "default"}/${offer.metadata.name ?? ""}`,
            ...(offer.metadata.uid ? { [RESERVATION_TAGS.offerUid]: offer.metadata.uid } : {}),
            [RESERVATION_TAGS.runUid]: offer.spec.run.uid,
          },
        },
        { abortSignal: signal, ...this.lro },
      ),
    );
  }

  private ledger(target: PoolTarget, sku: string): NodeLedger {
    const key = `${target.key}|${lc(sku)}`;
    let l = this.ledgers.get(key);
    if (!l) {
      l = new NodeLedger();
      this.ledgers.set(key, l);
    }
    return l;
  }

  /** The pool's VM size (immutable in AKS, so read once). Also proves the pool exists. */
  private async poolVmSize(target: PoolTarget, signal: AbortSignal | undefined): Promise<string> {
    const hit = this.poolSizes.get(target.key);
    if (hit !== undefined) return hit;
    const { az, clients } = target;
    const pool = await this.call(() =>
      clients.containers.agentPools.get(az.resourceGroup, az.aksCluster, az.nodePool, {
        abortSignal: signal,
      }),
    );
    const size = pool.vmSize ?? "";
    if (size) this.poolSizes.set(target.key, size);
    return size;
  }

  private poolTarget(provider: CloudProvider, az: AzureSettings, ctx: ResponderContext): PoolTarget {
    const armEndpoint = (az.armEndpoint ?? this.opts.armEndpoint ?? PUBLIC_ARM_ENDPOINT).replace(/\/+$/, "");
    let clients: AzureClients;
    try {
      clients = this.clients.get(
        {
          armEndpoint,
          subscriptionId: az.subscriptionId,
          maxRetries: this.opts.sdkMaxRetries ?? 0,
          ...(this.opts.authorityHost ? { authorityHost: this.opts.authorityHost } : {}),
          ...(this.opts.ca ? { ca: this.opts.ca } : {}),
          ...(this.opts.credential ? { fallbackCredential: this.opts.credential } : {}),
        },
        ctx.credentials,
      );
    } catch (e) {
      if (e instanceof CredentialsConfigError) {
        throw new Decline("ProviderError", `CloudProvider ${provider.metadata.name ?? ""}: ${e.message}`);
      }
      throw e;
    }
    const key = [armEndpoint, az.subscriptionId, az.resourceGroup, az.aksCluster, az.nodePool]
      .map(lc)
      .join("|");
    return { clients, az, key };
  }

  /** Runs an SDK call; ARM errors become `Decline` or `RetryableError`, 404 becomes `notFound` when given. */
  private async call<T, N = never>(fn: () => PromiseLike<T>, opts?: { notFound: N }): Promise<T | N> {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof Decline || e instanceof RetryableError) throw e;
      if (opts && "notFound" in opts && isNotFound(e)) return opts.notFound;
      if ((e as { name?: string } | null)?.name === "AbortError") throw e;
      const c: ArmErrorClass = classifyArmError(e);
      if (c.kind === "retry") {
        throw new RetryableError(`Azure ${c.code}: ${c.message}`, c.retryAfterMs, { cause: e });
      }
      throw new Decline(c.reason, `Azure ${c.code}: ${c.message}`);
    }
  }

  private async skuFacts(
    clients: AzureClients,
    region: string,
    sku: string,
    signal: AbortSignal | undefined,
  ): Promise<SkuFacts | undefined> {
    const key = `${lc(region)}|${clients.key}`;
    const hit = this.skuCache.get(key);
    const ttl = this.opts.skuCacheTtlMs ?? 300_000;
    let skus = hit && this.now() - hit.at < ttl ? hit.skus : undefined;
    if (!skus) {
      const found = new Map<string, SkuFacts>();
      await this.call(async () => {
        for await (const s of clients.compute.resourceSkus.list({
          filter: `location eq '${region}'`,
          abortSignal: signal,
        })) {
          if (s.resourceType !== "virtualMachines" || !s.name) continue;
          const vcpus = Number(s.capabilities?.find((c) => c.name === "vCPUs")?.value ?? "0");
          const restricted = (s.restrictions ?? []).some(
            (r) => r.reasonCode === "NotAvailableForSubscription" || r.type === "Location",
          );
          found.set(lc(s.name), { family: s.family ?? "", vcpus, restricted });
        }
      });
      skus = found;
      this.skuCache.set(key, { at: this.now(), skus });
    }
    return skus.get(lc(sku));
  }

  private async checkQuota(
    clients: AzureClients,
    region: string,
    facts: SkuFacts,
    needed: number,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    if (needed <= 0) return;
    await this.call(async () => {
      for await (const u of clients.compute.usage.list(region, { abortSignal: signal })) {
        const family = u.name?.value ?? "";
        if (lc(family) !== lc(facts.family) && lc(family) !== "cores") continue;
        const free = u.limit - u.currentValue;
        if (free < needed) {
          throw new Decline(
            "QuotaExceeded",
            `${u.name?.localizedValue ?? family} quota in ${region}: ${u.currentValue} of ${u.limit} vCPUs used, the run needs ${needed} more`,
          );
        }
      }
    });
  }

  /** Reservations of `sku` in the group (name → nodes), leaving out failed ones. */
  private async listReservations(
    target: PoolTarget,
    sku: string,
    signal: AbortSignal | undefined,
  ): Promise<Map<string, number>> {
    const { az, clients } = target;
    const out = new Map<string, number>();
    await this.call(
      async () => {
        for await (const r of clients.compute.capacityReservations.listByCapacityReservationGroup(
          az.resourceGroup,
          az.capacityReservationGroup,
          { abortSignal: signal },
        )) {
          if (lc(r.sku.name) !== lc(sku) || r.provisioningState === "Failed") continue;
          out.set(lc(r.name), r.sku.capacity ?? 0);
        }
        // A group that does not exist yet holds no reservations.
      },
      { notFound: undefined },
    );
    return out;
  }

  private async ensureGroup(
    target: PoolTarget,
    region: string,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const { az, clients } = target;
    const groupKey = `${target.key}|${lc(az.capacityReservationGroup)}`;
    if (this.knownGroups.has(groupKey)) return;
    const group = await this.call(
      () =>
        clients.compute.capacityReservationGroups.get(az.resourceGroup, az.capacityReservationGroup, {
          abortSignal: signal,
        }),
      { notFound: undefined },
    );
    if (!group) {
      await this.call(() =>
        clients.compute.capacityReservationGroups.createOrUpdate(
          az.resourceGroup,
          az.capacityReservationGroup,
          { location: region, tags: { [RESERVATION_TAGS.managedBy]: "spillway" } },
          { abortSignal: signal },
        ),
      );
    }
    this.knownGroups.add(groupKey);
  }

  /** Sets the pool's node count to the nodes reserved for its SKU; returns that count. */
  private sizePool(target: PoolTarget, signal: AbortSignal | undefined): Promise<number> {
    let sizer = this.sizers.get(target.key);
    if (!sizer) {
      sizer = new Coalescer();
      this.sizers.set(target.key, sizer);
    }
    return sizer.run(async () => {
      const { az, clients } = target;
      const pool: AgentPool = await this.call(() =>
        clients.containers.agentPools.get(az.resourceGroup, az.aksCluster, az.nodePool, {
          abortSignal: signal,
        }),
      );
      const sku = pool.vmSize ?? "";
      // The ledger holds ARM's listing plus every reservation made or deleted here since, so
      // it is re-listed only when older than its TTL (someone else may have changed the group).
      const ledger = this.ledger(target, sku);
      if (!ledger.isFresh(this.now(), LEDGER_TTL_MS)) {
        await ledger.refresh(() => this.listReservations(target, sku, signal), this.now);
      }
      const desired = ledger.total(this.releasing.get(target.key));
      const autoscale = pool.enableAutoScaling === true;
      if (pool.count === desired && (!autoscale || pool.minCount === desired)) return desired;
      await this.call(() =>
        clients.containers.agentPools.createOrUpdate(
          az.resourceGroup,
          az.aksCluster,
          az.nodePool,
          {
            ...pool,
            count: desired,
            ...(autoscale
              ? { minCount: desired, maxCount: Math.max(pool.maxCount ?? desired, desired) }
              : {}),
          },
          { abortSignal: signal, ...this.lro },
        ),
      );
      return desired;
    });
  }

  private releasingSet(key: string): Set<string> {
    let s = this.releasing.get(key);
    if (!s) {
      s = new Set();
      this.releasing.set(key, s);
    }
    return s;
  }

  private fields(offer: CapacityOffer, provider: CloudProvider): Record<string, unknown> {
    return {
      namespace: offer.metadata.namespace ?? null,
      run: offer.spec.run.name,
      offer: offer.metadata.name ?? null,
      provider: provider.metadata.name ?? null,
    };
  }

  private log(
    level: "info" | "warn",
    message: string,
    offer: CapacityOffer,
    provider: CloudProvider,
    extra: Record<string, unknown>,
  ): void {
    this.opts.logger?.[level](message, { ...this.fields(offer, provider), ...extra });
  }
}
