/**
 * The TrainingRun controller: the placement flow of the spec (steps 1–4, 6, 7, 9).
 *
 * One reconcile looks at the run and the world through the caches and takes the next step:
 *
 *   validate → finalizer → attempt → (offer to the primary → decision) → placement locked in
 *   status → cluster (existing, shared or provisioned) → data staged → dispatch → mirror →
 *   finish (remote objects deleted) — or a new attempt when the cluster is lost.
 *
 * Crash safety comes from ordering and determinism, not from memory: the attempt number is
 * written before its offer is created, the offer's name is derived from the run and the
 * attempt (a retried create is AlreadyExists), the placement is written before any cluster
 * is provisioned or any Job created, and the remote Job is named after the run and labelled
 * with its uid and attempt, so a restarted operator finds everything it already did.
 */

import { Counter } from "prom-client";
import { formatFieldError } from "../../api/schema/types.ts";
import {
  type CapacityOffer,
  type CloudProvider,
  conflictingPrimaries,
  type DataSet,
  type ProvisionedCluster,
  type TrainingRun,
  type TrainingRunStatus,
  validateObject,
} from "../../api/v1alpha1/index.ts";
import type { CheckpointPlanner, DataStager } from "../../ports/index.ts";
import {
  buildFailbackOffer,
  buildOffer,
  collectQuotes,
  consecutiveDeclines,
  decideFailback,
  decidePlacement,
  evaluateEligibility,
  failbackOfferName,
  ineligibleSummary,
  isFailbackOffer,
  NO_CHECKPOINTS,
  noEligibleProviderMessage,
  offerName,
  type Placement,
  placeWithoutPrimary,
  runPolicy,
  withdrawnStatus,
} from "../../rofr/index.ts";
import { isAlreadyExists, isConflict, isNotFound } from "../../runtime/client.ts";
import { setStatusCondition, timestamp } from "../../runtime/conditions.ts";
import { Controller, type ReconcileContext, type ReconcileResult } from "../../runtime/controller.ts";
import type { EventHandler } from "../../runtime/informer.ts";
import { type KubeObject, SpillwayResources, splitKey } from "../../runtime/resources.ts";
import type { OperatorContext } from "../context.ts";
import { readSecret } from "../context.ts";
import { clusterId } from "../remote/clusters.ts";
import { remoteJobName, remoteNamespace, renderStoreSecret } from "../remote/manifests.ts";
import {
  awaitingCapacityKeys,
  capacitySignature,
  heldCluster,
  NO_CLUSTER_CAPACITY,
  PendingPlacements,
  RUNS_AWAITING_CAPACITY,
  runsAwaitingCapacity,
} from "./capacity.ts";
import {
  deleteRemote,
  dispatch,
  jobAttempt,
  jobState,
  podsLeft,
  type RemoteCluster,
  remoteJobOf,
} from "./remote.ts";
import {
  chooseCluster,
  clusterCount,
  clusterKubeconfig,
  createProvisionedCluster,
  EXISTING_CLUSTER,
  isFinished,
  provisionedClusterName,
  RUNS_BY_CLUSTER,
  runGpus,
} from "./targets.ts";

export { RUNS_BY_CLUSTER };
export const RUN_FINALIZER = "spillway.dev/remote-cleanup";
/** Index of the run cache: unplaced runs by `namespace/dataset` they train on. */
const UNPLACED_RUNS_BY_DATASET = "unplaced-dataset";
const MAX_OFFERS_LISTED = 64;

type Run = TrainingRun & KubeObject;
type Offer = CapacityOffer & KubeObject;
type Status = TrainingRunStatus;

/**
 * Failback checks by outcome (`spillway_failback_checks_total{provider,outcome}`): counted by
 * the run controller when it acts on a check's answer. The offers themselves are also in
 * `spillway_offers_total`, whose labels cannot tell a failback check from a placement offer.
 */
function failbackCounter(ctx: OperatorContext): Counter<"provider" | "outcome"> {
  const name = "spillway_failback_checks_total";
  const existing = ctx.metrics.registry.getSingleMetric(name);
  if (existing) return existing as Counter<"provider" | "outcome">;
  return new Counter({
    name,
    help: "Failback offers to the primary (runs on an alternative with failback: WhenPrimaryAccepts), by provider and outcome.",
    labelNames: ["provider", "outcome"],
    registers: [ctx.metrics.registry],
  });
}

export interface TrainingRunControllerOptions {
  concurrency?: number;
  stager?: DataStager;
  checkpoints?: CheckpointPlanner;
}

/**
 * How often a Running run is looked at when nothing happens: its remote Job's events (and the
 * remote Job informer's own resync) enqueue it, so this is only a safety net. Stretched by up
 * to 20 % at random so runs started together do not come back together.
 */
export const RUNNING_RESYNC_MS = 10 * 60_000;

/**
 * The TrainingRun controller plus a cluster watchdog: a lost cluster sends no Job events, so
 * every `remotePollMs` the watchdog looks at each connected cluster (O(clusters), not O(runs))
 * and enqueues the runs placed on one that has not answered for longer than
 * `clusterLostTimeoutMs`. This is what lets running runs go without a poll timer of their own
 * (reliability finding 8: a timer per run was O(runs) reconciles per poll period).
 *
 * It also wakes runs waiting for room on an alternative (`NoClusterCapacity`, see
 * capacity.ts) when room may have appeared there: a run leaves one of the provider's
 * clusters (finished, deleted, moved), a ProvisionedCluster of the provider changes in a way
 * that matters for capacity or goes, or a cluster that was not answering answers again.
 */
class RunController extends Controller {
  private watchdog?: ReturnType<typeof setInterval>;
  private unsubscribe: Array<() => void> = [];
  /** Clusters the watchdog last saw not answering (their recovery frees room). */
  private silent = new Set<string>();

  constructor(
    opts: ConstructorParameters<typeof Controller>[0],
    private readonly ctx: OperatorContext,
  ) {
    super(opts);
  }

  override start(): void {
    super.start();
    if (this.unsubscribe.length === 0) this.subscribeCapacity();
    if (this.watchdog) return;
    const every = Math.max(
      100,
      Math.min(this.ctx.settings.remotePollMs, this.ctx.settings.clusterLostTimeoutMs),
    );
    this.watchdog = setInterval(() => this.enqueueRunsOnLostClusters(), every);
    this.watchdog.unref?.();
  }

  override async stop(timeoutMs?: number): Promise<boolean> {
    clearInterval(this.watchdog);
    this.watchdog = undefined;
    for (const off of this.unsubscribe) off();
    this.unsubscribe = [];
    return super.stop(timeoutMs);
  }

  private enqueueRunsOnLostClusters(): void {
    if (!this.running) return;
    for (const id of this.ctx.remote.ids()) {
      const silentFor = this.ctx.remote.unreachableForMs(id);
      if (silentFor > 0) this.silent.add(id);
      else if (this.silent.delete(id)) this.wakeRunsAwaiting(id.slice(0, id.indexOf("/")));
      if (silentFor <= this.ctx.settings.clusterLostTimeoutMs) continue;
      for (const run of this.ctx.caches.runs.byIndex(RUNS_BY_CLUSTER, id)) {
        if (!isFinished(run)) this.enqueue(keyOf(run));
      }
    }
  }

  /**
   * Informer handlers of their own (not `watch`): whether room appeared depends on the old
   * and the new object together (a run that held a cluster and no longer does), which a
   * per-object map cannot tell. Every status write of a running run would otherwise wake
   * the waiting runs.
   */
  private subscribeCapacity(): void {
    const runs: EventHandler<Run> = {
      update: (before, after) => {
        const held = heldCluster(before);
        if (held && held !== heldCluster(after)) this.wakeRunsAwaiting(before.status!.placement!.provider);
      },
      delete: (run) => {
        if (heldCluster(run)) this.wakeRunsAwaiting(run.status!.placement!.provider);
      },
    };
    const clusters: EventHandler<ProvisionedCluster & KubeObject> = {
      add: (pc) => this.wakeRunsAwaiting(pc.spec.provider),
      update: (before, after) => {
        if (capacitySignature(before) !== capacitySignature(after))
          this.wakeRunsAwaiting(after.spec.provider);
      },
      delete: (pc) => this.wakeRunsAwaiting(pc.spec.provider),
    };
    this.unsubscribe = [this.ctx.caches.runs.addHandler(runs), this.ctx.caches.clusters.addHandler(clusters)];
  }

  /** Enqueues the runs waiting for room that `provider` could take (from the cache's index). */
  private wakeRunsAwaiting(provider: string): void {
    if (!this.running) return;
    for (const run of runsAwaitingCapacity(this.ctx.caches.runs, provider)) this.enqueue(keyOf(run));
  }
}

export function trainingRunController(
  ctx: OperatorContext,
  opts: TrainingRunControllerOptions = {},
): Controller {
  const r = new RunReconciler(ctx, opts);
  const controller = new RunController(
    {
      name: "trainingrun",
      reconcile: (key, rc) => r.reconcile(key, rc),
      concurrency: opts.concurrency ?? 8,
      logContext: (key) => ({ run: key }),
      logger: ctx.log,
      metrics: ctx.metrics,
    },
    ctx,
  );
  const runs = ctx.caches.runs;
  runs.addIndex(RUNS_BY_CLUSTER, (run) => {
    const p = run.status?.placement;
    return p?.cluster ? [clusterId(p.provider, p.cluster)] : [];
  });
  runs.addIndex(RUNS_AWAITING_CAPACITY, awaitingCapacityKeys);
  runs.addIndex(UNPLACED_RUNS_BY_DATASET, (run) =>
    run.spec.data && !run.status?.placement ? [`${run.metadata.namespace}/${run.spec.data.dataset}`] : [],
  );
  controller.watch(runs);
  // A DataSet appearing unblocks the runs waiting for it (only unplaced ones: a placed run's
  // staging is driven by its own reconciles, not by every progress update of the DataSet).
  controller.watch(ctx.caches.datasets, (ds) => runs.byIndex(UNPLACED_RUNS_BY_DATASET, keyOf(ds)).map(keyOf));
  // An offer's answer moves its run on.
  controller.watch(ctx.caches.offers, (o) =>
    o.metadata.namespace ? [`${o.metadata.namespace}/${o.spec.run.name}`] : [],
  );
  // A cluster becoming ready (or failing) moves the runs placed on it.
  controller.watch(ctx.caches.clusters, (pc) =>
    runs.byIndex(RUNS_BY_CLUSTER, clusterId(pc.spec.provider, pc.metadata.name ?? "")).map(keyOf),
  );
  // A provider appearing or changing can unblock runs that found no eligible provider.
  controller.watch(ctx.caches.providers, () =>
    runs
      .list()
      .filter((run) => !run.status?.placement && !isFinished(run))
      .map(keyOf),
  );
  // Secrets (kubeconfigs, credentials) arriving unblock runs waiting for them.
  controller.watch(ctx.caches.secrets, () =>
    runs
      .list()
      .filter((run) => !isFinished(run) && run.status?.phase !== "Running")
      .map(keyOf),
  );
  return controller;
}

const keyOf = (o: KubeObject) => `${o.metadata.namespace}/${o.metadata.name}`;

/**
 * How long a fresh offer may go unanswered before the run's status says AwaitingPrimary
 * (creationTimestamp has a resolution of one second, so this is at least 1–2 s in practice).
 */
const AWAIT_STATUS_GRACE_MS = 2_000;

class RunReconciler {
  private readonly failbackChecks: Counter<"provider" | "outcome">;
  /** Placements written but maybe not yet in the caches (capacity.ts). */
  private readonly pending: PendingPlacements;

  constructor(
    private readonly ctx: OperatorContext,
    private readonly opts: TrainingRunControllerOptions,
  ) {
    this.failbackChecks = failbackCounter(ctx);
    this.pending = new PendingPlacements(ctx.caches.runs, ctx.caches.clusters, () => ctx.now().getTime());
  }

  async reconcile(key: string, rc: ReconcileContext): Promise<ReconcileResult | undefined> {
    let run = this.ctx.caches.runs.get(key);
    if (!run) return undefined;
    if (run.metadata.deletionTimestamp) return this.finalize(run, rc);

    const errors = validateObject(run);
    if (errors.length > 0) {
      await this.writeStatus(run, (s, obj) => {
        s.phase ??= "Pending";
        setStatusCondition(obj, {
          type: "SpecValid",
          status: "False",
          reason: "SpecInvalid",
          message: errors.map(formatFieldError).join("; "),
        });
      });
      this.ctx.events.record(run, "Warning", "SpecInvalid", errors.map(formatFieldError).join("; "));
      return undefined; // Not retried: the next edit of the run enqueues it again.
    }
    if (!(run.metadata.finalizers ?? []).includes(RUN_FINALIZER)) {
      // Conditional on the version we read; the stored object comes back and the reconcile
      // goes on with it (no extra round through the queue).
      run = await this.ctx.mgmt.patch<Run>(
        SpillwayResources.TrainingRun,
        run.metadata.name!,
        run.metadata.namespace,
        {
          metadata: {
            finalizers: [...(run.metadata.finalizers ?? []), RUN_FINALIZER],
            resourceVersion: run.metadata.resourceVersion,
          },
        },
      );
    }
    if (isFinished(run)) return this.cleanupFinished(run, rc);
    if (run.spec.runPolicy?.suspend) return this.suspend(run);

    // The first attempt's status is not written on its own: it goes out with the first real
    // change (the offer, or the placement). Attempt 1 is implied by an absent attempt, so a
    // crash before that write loses nothing (the offer's name is derived from the attempt).
    const current = run.status?.attempt
      ? run
      : this.derive(run, (s, obj) => {
          s.attempt = 1;
          s.phase = "Offering";
          s.gpus = runGpus(run);
          s.moves ??= 0;
          setStatusCondition(obj, { type: "SpecValid", status: "True", reason: "Valid", message: "" });
        });
    const attempt = current.status!.attempt!;
    const placement = current.status?.placement;
    if (!placement || placement.attempt !== attempt) return this.place(current, attempt, rc);
    const accepted = this.failbackOffer(current);
    if (accepted?.status?.outcome === "Accepted" && accepted.spec.attempt === attempt + 1) {
      return this.failBack(current, placement, accepted, rc);
    }
    return this.runPlaced(current, placement, rc);
  }

  // ---- placement (steps 1–4) ------------------------------------------------------------

  private async place(run: Run, attempt: number, rc: ReconcileContext): Promise<ReconcileResult | undefined> {
    const now = this.ctx.now();
    // A run whose DataSet does not exist cannot start anywhere: it waits before any offer is
    // made or any cluster provisioned (reliability finding 9). The DataSet's creation enqueues it.
    if (
      run.spec.data &&
      !this.ctx.caches.datasets.get(`${run.metadata.namespace}/${run.spec.data.dataset}`)
    ) {
      await this.setWaiting(
        run,
        "Pending",
        "DataSetMissing",
        `DataSet ${run.spec.data.dataset} does not exist in ${run.metadata.namespace}; the run waits for it before it is offered or placed`,
      );
      return { requeueAfter: 60_000 };
    }
    const providers = this.ctx.caches.providers.list();
    const primaries = conflictingPrimaries(providers);
    if (primaries.length > 1) {
      await this.setWaiting(
        run,
        "Pending",
        "ConflictingPrimaries",
        `more than one primary CloudProvider: ${primaries.join(", ")}; mark exactly one as role primary`,
      );
      return { requeueAfter: 60_000 };
    }
    const failed = new Set(run.status?.failedProviders ?? []);
    const eligibility = evaluateEligibility(run, providers, failed);
    // The offer's competing quote is the best eligible alternative's, room or not: whether a
    // cluster is free is for this attempt's placement to find out, not a price.
    const quotes = collectQuotes(run, eligibility.alternatives, now);
    const serving = runPolicy(run).workloadClass === "serving";
    // Alternatives without room right now: skipped by this decision, not failed for the
    // attempt, so the run is placed there in this attempt as soon as room appears.
    const full = serving
      ? new Map<string, string>()
      : this.alternativesWithoutRoom(run, eligibility.alternatives, attempt);
    const placeable = full.size > 0 ? quotes.filter((q) => !full.has(q.provider)) : quotes;
    const roomless = [...full].map(([p, why]) => `${p}: ${why}`).join("; ");

    if (!eligibility.primary) {
      const direct = serving ? undefined : placeWithoutPrimary(placeable, attempt, now);
      if (!direct) {
        const others = ineligibleSummary(eligibility);
        if (full.size > 0) {
          // Waiting for room (capacity.ts wakes it); without a primary there is no offer.
          await this.setWaiting(
            run,
            "Pending",
            NO_CLUSTER_CAPACITY,
            `no room for attempt ${attempt} (${roomless}${others ? `; ${others}` : ""}); the run is placed as soon as a cluster frees up`,
          );
        } else {
          const message =
            eligibility.alternatives.length === 0 && failed.size === 0
              ? noEligibleProviderMessage(eligibility)
              : `no eligible provider for attempt ${attempt}: ${others || "every alternative failed"}`;
          await this.setWaiting(run, "Pending", "NoEligibleProvider", message);
        }
        if (failed.size > 0) return this.newAttemptLater(run, attempt, 60_000, "alternatives failed");
        return { requeueAfter: 60_000 };
      }
      return this.lockPlacement(run, direct, rc);
    }

    // An accepted (or still open) failback check asked the primary for this very attempt: it is
    // the attempt's offer, so the primary is not asked twice and its reservation is used. A
    // declined check is not: a new attempt (e.g. after a cluster loss) asks the primary afresh.
    const checked = this.failbackOffer(run);
    const reuse =
      checked?.spec.attempt === attempt &&
      checked.spec.provider === eligibility.primary.metadata.name &&
      (checked.status?.outcome === undefined || checked.status.outcome === "Accepted")
        ? checked
        : undefined;
    const ensured = reuse
      ? { offer: reuse as CapacityOffer, run }
      : await this.ensureOffer(run, attempt, eligibility.primary, quotes, rc);
    const offer = ensured.offer;
    run = ensured.run;
    const offersNewestFirst = this.offersOf(run);
    const decision = decidePlacement({
      run,
      offer,
      quotes: placeable,
      now,
      declines: consecutiveDeclines(offersNewestFirst.filter((o) => !isFailbackOffer(o))),
      backoff: { baseMs: this.ctx.settings.reofferBaseMs, maxMs: this.ctx.settings.reofferMaxMs },
    });
    if (decision.action !== "await" && decision.offerStatus) {
      await this.answerOffer(offer, decision.offerStatus);
    }
    switch (decision.action) {
      case "await": {
        // The primary's responder usually answers within milliseconds (the CapacityOffer
        // controller runs in this process and its answer enqueues the run at once). The
        // AwaitingPrimary write is held back for a short grace period, so the common path
        // writes the run's status once (with the placement) instead of twice. Nothing is lost
        // if the operator dies meanwhile: the offer's name is derived from the attempt, and
        // the offer list goes out with the next status write. An answer that takes longer
        // than the grace period gets the AwaitingPrimary condition as before.
        const offeredAt = Date.parse(offer.metadata?.creationTimestamp ?? "");
        const graceLeft = AWAIT_STATUS_GRACE_MS - (now.getTime() - offeredAt);
        const listed = (this.ctx.caches.runs.get(keyOf(run))?.status?.offers ?? []).includes(
          offer.metadata?.name ?? "",
        );
        if (!listed && Number.isFinite(offeredAt) && graceLeft > 0) {
          return { requeueAfter: Math.max(Math.min(graceLeft, decision.retryAfterMs), 250) };
        }
        await this.setWaiting(
          run,
          "Offering",
          "AwaitingPrimary",
          `offered to ${offer.spec.provider} as ${offer.metadata.name}; answer due by ${offer.spec.deadline}`,
        );
        return { requeueAfter: Math.max(decision.retryAfterMs, 250) };
      }
      case "wait": {
        const answered = Date.parse(
          offer.status?.respondedAt ?? decision.offerStatus?.respondedAt ?? offer.spec.deadline,
        );
        const due = answered + decision.retryAfterMs - now.getTime();
        if (due <= 0) return this.newAttempt(run, attempt, "re-offering to the primary");
        // Say why each alternative is out (e.g. a name that is not a CloudProvider).
        const out = eligibility.ineligible.filter((i) => i.provider !== eligibility.primary?.metadata.name);
        const others = out.length > 0 ? ` (${out.map((i) => `${i.provider}: ${i.reason}`).join("; ")})` : "";
        if (decision.reason === "NoEligibleAlternative" && full.size > 0) {
          // Waiting for room, in this attempt: a cluster freeing up on one of these providers
          // wakes the run (capacity.ts); the re-offer below is the fallback.
          const answer = offer.status ?? decision.offerStatus;
          await this.setWaiting(
            run,
            "Pending",
            NO_CLUSTER_CAPACITY,
            `${offer.spec.provider} answered ${answer?.outcome ?? "no"}${answer?.reason ? ` (${answer.reason})` : ""} and no alternative has room (${roomless})${others}; the run is placed as soon as a cluster frees up, or offered to ${offer.spec.provider} again in ${Math.round(decision.retryAfterMs / 1000)}s`,
          );
          return { requeueAfter: due };
        }
        const message =
          decision.reason === "NoEligibleAlternative" ? `${decision.message}${others}` : decision.message;
        await this.setWaiting(run, "Pending", decision.reason, message);
        return { requeueAfter: due };
      }
      case "place":
        if (serving && decision.target !== "primary") {
          // Defence in depth: serving runs never leave the primary, whatever the decision says.
          await this.setWaiting(
            run,
            "Pending",
            "ServingWaitsForPrimary",
            "serving runs are primary-exclusive",
          );
          return { requeueAfter: this.ctx.settings.reofferBaseMs };
        }
        return this.lockPlacement(run, decision.placement, rc);
    }
  }

  /**
   * The eligible alternatives that cannot take the run right now, and why: every cluster
   * busy with `maxClusters` reached, or the existing cluster not answering.
   */
  private alternativesWithoutRoom(
    run: Run,
    alternatives: readonly CloudProvider[],
    attempt: number,
  ): Map<string, string> {
    const full = new Map<string, string>();
    for (const provider of alternatives) {
      const choice = chooseCluster(this.ctx, run, provider, attempt, this.pending);
      if (choice.kind === "full") full.set(provider.metadata.name ?? "", choice.message);
    }
    return full;
  }

  private offersOf(run: Run): CapacityOffer[] {
    const names = run.status?.offers ?? [];
    return names
      .map((n) => this.ctx.caches.offers.get(`${run.metadata.namespace}/${n}`))
      .filter((o): o is CapacityOffer & KubeObject => o !== undefined && o.spec.run.uid === run.metadata.uid);
  }

  /**
   * The attempt's offer: from the cache, or created. The name is derived from the run and the
   * attempt, so a create retried after a crash finds the first one (AlreadyExists). Should an
   * older run of the same name have left an offer under that name (offers outlive runs), the
   * name is qualified with the run's uid.
   */
  private async ensureOffer(
    run: Run,
    attempt: number,
    primary: CloudProvider,
    quotes: ReturnType<typeof collectQuotes>,
    rc: ReconcileContext,
  ): Promise<{ offer: CapacityOffer; run: Run }> {
    const ns = run.metadata.namespace!;
    const uid = run.metadata.uid!;
    const plain = offerName(run.metadata.name!, attempt);
    const byPlain = this.ctx.caches.offers.get(`${ns}/${plain}`);
    const name =
      byPlain && byPlain.spec.run.uid !== uid
        ? offerName(`${run.metadata.name}-${uid.slice(0, 8)}`, attempt)
        : plain;
    let offer: CapacityOffer | undefined = this.ctx.caches.offers.get(`${ns}/${name}`);
    if (!offer) {
      const built = buildOffer({ run, attempt, primary, quotes, now: this.ctx.now() });
      built.metadata.name = name;
      try {
        offer = await this.ctx.mgmt.create(
          SpillwayResources.CapacityOffer,
          built as CapacityOffer & KubeObject,
        );
        rc.with({ offer: name, provider: primary.metadata.name });
        rc.log.info("offered to the primary", {
          competingQuote: built.spec.competingQuote?.pricePerHour,
          deadline: built.spec.deadline,
        });
        this.ctx.events.record(
          run,
          "Normal",
          "Offered",
          `offered ${runGpus(run)} ${run.spec.resources.gpu.type} GPUs to ${primary.metadata.name} as ${name}${
            built.spec.competingQuote
              ? ` with competing quote $${built.spec.competingQuote.pricePerHour}/h from ${built.spec.competingQuote.provider}`
              : ""
          }; answer due by ${built.spec.deadline}`,
        );
      } catch (err) {
        if (!isAlreadyExists(err)) throw err;
        offer = await this.ctx.mgmt.get<CapacityOffer & KubeObject>(
          SpillwayResources.CapacityOffer,
          name,
          ns,
        );
      }
    }
    if (!(run.status?.offers ?? []).includes(name)) {
      // Recorded with the next status write (the decision's), not on its own.
      run = this.derive(run, (s) => {
        s.offers = [name, ...(s.offers ?? []).filter((n) => n !== name)].slice(0, MAX_OFFERS_LISTED);
      });
    }
    return { offer: offer!, run };
  }

  /** Writes an offer's answer (the TimedOut rule). Written once: a conflict means someone answered. */
  private async answerOffer(
    offer: CapacityOffer,
    status: NonNullable<CapacityOffer["status"]>,
  ): Promise<void> {
    try {
      await this.ctx.mgmt.updateStatus(SpillwayResources.CapacityOffer, {
        ...offer,
        status,
      } as CapacityOffer & KubeObject);
      this.ctx.metrics.recordOffer(offer.spec.provider, status.outcome ?? "", status.reason);
    } catch (err) {
      if (!isConflict(err)) throw err;
    }
  }

  private async lockPlacement(
    run: Run,
    placement: Placement,
    rc: ReconcileContext,
  ): Promise<ReconcileResult | undefined> {
    const provider = this.ctx.caches.providers.get(placement.provider);
    if (!provider) return { requeueAfter: 1_000 };
    const attempt = placement.attempt ?? run.status?.attempt ?? 1;
    const name = provider.metadata.name ?? "";
    const choice = chooseCluster(this.ctx, run, provider, attempt, this.pending);
    if (choice.kind === "full") {
      // The primary accepted but its cluster cannot take the run: its acceptance is spent.
      if (placement.reason === "PrimaryAccepted" || provider.spec.role === "primary")
        return this.providerFailed(run, name, NO_CLUSTER_CAPACITY, choice.message);
      // An alternative filled up since the decision (another run took the room): this
      // attempt decides again, and waits for room if there is none anywhere.
      await this.setWaiting(run, "Pending", NO_CLUSTER_CAPACITY, `${name}: ${choice.message}`);
      return { requeueAfter: 1_000 };
    }
    let cluster = EXISTING_CLUSTER;
    if (choice.kind === "reuse") cluster = choice.cluster.metadata.name ?? "";
    if (choice.kind === "create") cluster = choice.name;
    // Claimed before the write, with no await in between: a run decided in parallel sees it.
    const release =
      choice.kind === "existing"
        ? undefined
        : this.pending.claim(run, {
            provider: name,
            cluster,
            gpus: runGpus(run),
            creates: choice.kind === "create",
          });
    let updated: Run;
    try {
      updated = await this.writeStatus(run, (s, obj) => {
        s.placement = { ...placement, cluster };
        s.phase =
          choice.kind === "create" ? "Provisioning" : s.phase === "Migrating" ? "Migrating" : "Provisioning";
        s.data = undefined;
        s.remote = undefined;
        setStatusCondition(obj, {
          type: "Placed",
          status: "True",
          reason: placement.reason?.split(":")[0] ?? "Placed",
          message: `placed on ${placement.provider}/${cluster}${placement.pricePerHour !== undefined ? ` at $${placement.pricePerHour}/h` : ""} (${placement.reason ?? "placed"})`,
        });
      });
    } catch (err) {
      release?.();
      throw err;
    }
    rc.with({ provider: placement.provider });
    rc.log.info("placed", {
      cluster,
      reason: placement.reason,
      pricePerHour: placement.pricePerHour,
      attempt,
    });
    this.ctx.metrics.recordPlacement(
      placement.provider,
      run.metadata.creationTimestamp ?? Date.now(),
      this.ctx.now().getTime(),
    );
    this.ctx.events.record(
      run,
      "Normal",
      "Placed",
      `attempt ${attempt} placed on ${placement.provider}/${cluster}: ${placement.reason ?? ""}`,
    );
    if (choice.kind === "create") {
      await createProvisionedCluster(this.ctx, updated, provider, cluster);
      this.ctx.events.record(
        run,
        "Normal",
        "Provisioning",
        `provisioning cluster ${cluster} on ${placement.provider}`,
      );
    }
    return this.runPlaced(updated, updated.status!.placement!, rc);
  }

  // ---- after placement (steps 5–7) -----------------------------------------------------

  private async runPlaced(
    run: Run,
    placement: Placement,
    rc: ReconcileContext,
  ): Promise<ReconcileResult | undefined> {
    rc.with({ provider: placement.provider });
    const provider = this.ctx.caches.providers.get(placement.provider);
    if (!provider) {
      await this.setWaiting(
        run,
        run.status?.phase ?? "Provisioning",
        "ProviderMissing",
        `CloudProvider ${placement.provider} does not exist`,
      );
      return { requeueAfter: 30_000 };
    }
    const cluster = placement.cluster ?? EXISTING_CLUSTER;
    const lookup = clusterKubeconfig(this.ctx, provider, cluster);
    if ("failed" in lookup)
      return this.providerFailed(run, placement.provider, "ClusterFailed", lookup.failed);
    if ("waiting" in lookup) {
      const resumed = await this.resumeClusterCreation(run, provider, placement, cluster);
      if (resumed && "failed" in resumed)
        return this.providerFailed(run, placement.provider, "ClusterFailed", resumed.failed);
      if (resumed) lookup.waiting = resumed.waiting;
      await this.writeStatus(run, (s, obj) => {
        if (s.phase !== "Migrating") s.phase = "Provisioning";
        setStatusCondition(obj, {
          type: "ClusterReady",
          status: "False",
          reason: "Waiting",
          message: lookup.waiting,
        });
      });
      return { requeueAfter: 15_000 };
    }
    const id = clusterId(placement.provider, cluster);
    const remote = this.ctx.remote.connect(id, lookup.kubeconfig);

    // Cluster lost: it has not answered for longer than the timeout → a new attempt elsewhere.
    const lostFor = this.ctx.remote.unreachableForMs(id);
    if (lostFor > this.ctx.settings.clusterLostTimeoutMs) {
      this.ctx.events.record(
        run,
        "Warning",
        "ClusterLost",
        `${id} has not answered for ${Math.round(lostFor / 1000)}s; moving the run`,
      );
      return this.newAttempt(run, placement.attempt ?? 1, `cluster ${id} lost`, true);
    }
    if (!remote.jobs.hasSynced()) return { requeueAfter: 500 };

    const job = remoteJobOf(remote, run);
    const attempt = placement.attempt ?? 1;
    if (job && jobAttempt(job) !== attempt) {
      // A Job of an earlier attempt on this cluster: remove it before dispatching this one.
      await deleteRemote(remote, run, job);
      return { requeueAfter: 1_000 };
    }
    if (!job) return this.stageAndDispatch(run, provider, placement, remote, rc);
    return this.mirror(run, remote, job, rc);
  }

  /**
   * A placement's cluster that does not exist although its attempt was to create it: the
   * operator stopped between writing the placement and creating the ProvisionedCluster (two
   * writes, no transaction), and nothing else would create it — the run waited "being created"
   * for ever (test/chaos/kill, a clean-clone CI run, 2026-12-08). Created now, under the name
   * its attempt gives it, when the provider has room (`maxClusters`; the claim counts it for
   * other runs until the cache shows it); otherwise the run waits for room. A missing cluster
   * that was not this attempt's to create was another run's, reused: it was in the cache when
   * this run was placed on it, so it is gone, and the run fails over as from a destroyed one.
   * Returns what the run waits for or why it fails, or undefined when there is nothing to
   * resume (the cluster exists, or this process created it a moment ago).
   */
  private async resumeClusterCreation(
    run: Run,
    provider: CloudProvider,
    placement: Placement,
    cluster: string,
  ): Promise<{ waiting: string } | { failed: string } | undefined> {
    const name = provider.metadata.name ?? "";
    const attempt = placement.attempt ?? run.status?.attempt ?? 1;
    if (
      cluster === EXISTING_CLUSTER ||
      !provider.spec.cluster.provision ||
      this.ctx.caches.clusters.get(cluster) ||
      // Created by this process a moment ago (`lockPlacement`), not in the cache yet.
      this.pending.on(name).some((c) => c.cluster === cluster && c.creates)
    )
      return undefined;
    if (cluster !== provisionedClusterName(name, run.metadata.uid ?? "", attempt))
      return { failed: `ProvisionedCluster ${cluster}, which the run was placed on, no longer exists` };
    const { count, max } = clusterCount(this.ctx, provider, this.pending.on(name, run.metadata.uid));
    if (count >= max)
      return {
        waiting: `ProvisionedCluster ${cluster} is to be created when ${name} has room: it has ${count} of at most ${max} provisioned clusters`,
      };
    const release = this.pending.claim(run, { provider: name, cluster, gpus: runGpus(run), creates: true });
    let created: boolean;
    try {
      created = await createProvisionedCluster(this.ctx, run, provider, cluster);
    } catch (err) {
      release();
      throw err;
    }
    if (created)
      this.ctx.events.record(
        run,
        "Normal",
        "Provisioning",
        `provisioning cluster ${cluster} on ${name} (its creation had been interrupted)`,
      );
    return { waiting: `ProvisionedCluster ${cluster} is being created` };
  }

  private async stageAndDispatch(
    run: Run,
    provider: CloudProvider,
    placement: Placement,
    remote: RemoteCluster,
    rc: ReconcileContext,
  ): Promise<ReconcileResult | undefined> {
    let dataset: { uri: string; version: string } | undefined;
    if (run.spec.data) {
      const ds = this.ctx.caches.datasets.get(`${run.metadata.namespace}/${run.spec.data.dataset}`);
      if (!ds) {
        await this.setWaiting(
          run,
          "Staging",
          "DataSetMissing",
          `DataSet ${run.spec.data.dataset} does not exist in ${run.metadata.namespace}`,
        );
        return { requeueAfter: 30_000 };
      }
      if (!this.opts.stager) {
        await this.setWaiting(run, "Staging", "NoDataStager", "this operator has no data stager configured");
        return { requeueAfter: 60_000 };
      }
      const staged = await this.opts.stager.stage(run, ds as DataSet, provider, rc.signal);
      await this.writeStatus(run, (s, obj) => {
        s.phase = s.phase === "Migrating" ? "Migrating" : "Staging";
        s.data = {
          dataset: run.spec.data!.dataset,
          phase: staged.phase,
          ...(staged.version ? { version: staged.version } : {}),
          ...(staged.objectsSynced !== undefined ? { objectsSynced: staged.objectsSynced } : {}),
          ...(staged.objectsTotal !== undefined ? { objectsTotal: staged.objectsTotal } : {}),
          ...(staged.bytesSynced !== undefined ? { bytesSynced: staged.bytesSynced } : {}),
          ...(staged.bytesTotal !== undefined ? { bytesTotal: staged.bytesTotal } : {}),
        };
        setStatusCondition(obj, {
          type: "DataStaged",
          status: staged.phase === "Ready" ? "True" : "False",
          reason: staged.phase,
          message: staged.message,
        });
      });
      if (staged.phase === "Failed")
        return this.providerFailed(run, placement.provider, "DataStagingFailed", staged.message);
      if (staged.phase !== "Ready" || !staged.uri || !staged.version) return { requeueAfter: 2_000 };
      dataset = { uri: staged.uri, version: staged.version };
    }
    let checkpoints: { uri: string; resumeStep?: number } | undefined;
    if (this.opts.checkpoints && run.spec.checkpoints) {
      const loc = await this.opts.checkpoints.prepare(run, provider, rc.signal);
      checkpoints = { uri: loc.uri, ...(loc.resumeStep !== undefined ? { resumeStep: loc.resumeStep } : {}) };
      if (loc.resumeStep !== undefined) {
        await this.writeStatus(run, (s) => {
          s.checkpoint = {
            step: loc.resumeStep!,
            ...(loc.digest ? { digest: loc.digest } : {}),
            ...(loc.committedAt ? { committedAt: loc.committedAt } : {}),
            ...(loc.replicatedTo ? { replicatedTo: loc.replicatedTo } : {}),
          };
        });
      }
    }
    // The pods get the target store's credentials only when they touch a store.
    const storeRef = provider.spec.storage?.credentialsSecretRef;
    const storeData = (dataset || checkpoints) && storeRef ? readSecret(this.ctx, storeRef) : undefined;
    const storeSecret = storeData
      ? renderStoreSecret(run, placement.attempt ?? 1, this.ctx.settings.origin, storeData)
      : undefined;
    const created = await dispatch(
      remote,
      {
        run,
        attempt: placement.attempt ?? 1,
        origin: this.ctx.settings.origin,
        provider: placement.provider,
        ...(dataset ? { dataset } : {}),
        ...(checkpoints ? { checkpoints } : {}),
      },
      storeSecret,
    );
    if (created) {
      rc.log.info("dispatched", { cluster: placement.cluster, job: remoteJobName(run) });
      this.ctx.events.record(
        run,
        "Normal",
        "Dispatched",
        `created Job ${remoteNamespace(run)}/${remoteJobName(run)} on ${placement.provider}/${placement.cluster}${checkpoints?.resumeStep !== undefined ? `, resuming from step ${checkpoints.resumeStep}` : ""}`,
      );
    }
    await this.writeStatus(run, (s, obj) => {
      if (s.phase !== "Migrating") s.phase = "Staging";
      s.remote = {
        namespace: remoteNamespace(run),
        job: remoteJobName(run),
        lastSeen: timestamp(this.ctx.now().getTime()),
      };
      setStatusCondition(obj, {
        type: "ClusterReady",
        status: "True",
        reason: "Ready",
        message: `${placement.provider}/${placement.cluster}`,
      });
      setStatusCondition(obj, {
        type: "Dispatched",
        status: "True",
        reason: "JobCreated",
        message: `Job ${remoteNamespace(run)}/${remoteJobName(run)} on ${placement.provider}/${placement.cluster}`,
      });
    });
    return { requeueAfter: this.ctx.settings.remotePollMs };
  }

  /** Mirrors the remote Job into the run's status and finishes the run when the Job does. */
  private async mirror(
    run: Run,
    remote: RemoteCluster,
    job: NonNullable<ReturnType<typeof remoteJobOf>>,
    rc: ReconcileContext,
  ): Promise<ReconcileResult | undefined> {
    const { state, message } = jobState(job);
    const now = timestamp(this.ctx.now().getTime());
    const wasRunning = run.status?.phase === "Running";
    let stored = await this.writeStatus(run, (s, obj) => {
      s.remote = {
        namespace: remoteNamespace(run),
        job: remoteJobName(run),
        active: job.status?.active ?? 0,
        succeeded: job.status?.succeeded ?? 0,
        failed: job.status?.failed ?? 0,
        lastSeen:
          s.remote?.lastSeen && s.remote.active === (job.status?.active ?? 0) ? s.remote.lastSeen : now,
      };
      if (state === "Running" || state === "Succeeded") {
        s.startTime ??= job.status?.startTime ?? now;
        setStatusCondition(obj, {
          type: "Running",
          status: state === "Running" ? "True" : "False",
          reason: state,
          message: "",
        });
      }
      if (state === "Running") s.phase = "Running";
      const failingBack = obj.status?.conditions?.find((c) => c.type === "FailingBack");
      if (state === "Running" && failingBack?.status === "True") {
        setStatusCondition(obj, {
          type: "FailingBack",
          status: "False",
          reason: "FailedBack",
          message: `running on ${run.status?.placement?.provider} again`,
        });
      }
      if (state === "Succeeded") {
        s.phase = "Succeeded";
        s.completionTime = job.status?.completionTime ?? now;
        setStatusCondition(obj, {
          type: "Succeeded",
          status: "True",
          reason: "JobComplete",
          message: `all ${run.spec.resources.nodes ?? 1} workers completed`,
        });
      }
      if (state === "Failed") {
        s.phase = "Failed";
        s.completionTime = now;
        setStatusCondition(obj, {
          type: "Failed",
          status: "True",
          reason: "JobFailed",
          message: message ?? "the Job failed",
        });
        setStatusCondition(obj, {
          type: "Running",
          status: "False",
          reason: "Failed",
          message: message ?? "",
        });
      }
    });
    if (state === "Running" && !wasRunning) {
      this.ctx.events.record(
        run,
        "Normal",
        "Running",
        `${job.status?.active ?? 0} workers running on ${run.status?.placement?.provider}`,
      );
    }
    // After the Event: a conflict on the checkpoint's status write ends this reconcile.
    if (state === "Running") stored = await this.mirrorCheckpoint(stored, rc);
    if (state === "Succeeded" || state === "Failed") {
      rc.log.info("finished", { state });
      this.ctx.events.record(
        run,
        state === "Succeeded" ? "Normal" : "Warning",
        state,
        message ?? `the run ${state.toLowerCase()}`,
      );
      await deleteRemote(remote, run, job);
      return undefined;
    }
    // No poll timer per run (reliability finding 8): Job events enqueue the run, the cluster
    // watchdog enqueues it when its cluster is lost, and a long jittered resync is the safety
    // net. Two things still need a clock: copying new checkpoints to the primary's store (a
    // commit in a store sends no event) and the next failback check.
    let next = Math.round(RUNNING_RESYNC_MS * (1 + 0.2 * Math.random()));
    if (state === "Running") {
      if (this.opts.checkpoints?.mirror && run.spec.checkpoints)
        next = Math.min(next, this.ctx.settings.remotePollMs);
      const due = await this.checkFailback(stored, rc);
      if (due !== undefined) next = Math.min(next, due);
    } else next = Math.min(next, this.ctx.settings.remotePollMs); // Pending pods: look again soon.
    return { requeueAfter: next };
  }

  private readonly lastMirror = new Map<string, number>();

  /**
   * While a run is running, its newest committed checkpoint is copied to the primary's store
   * (at most every `remotePollMs`), and status says which step is safe and where.
   */
  private async mirrorCheckpoint(run: Run, rc: ReconcileContext): Promise<Run> {
    const planner = this.opts.checkpoints;
    if (!planner?.mirror || !run.spec.checkpoints) return run;
    const uid = run.metadata.uid ?? "";
    const now = this.ctx.now().getTime();
    if (now - (this.lastMirror.get(uid) ?? 0) < this.ctx.settings.remotePollMs) return run;
    this.lastMirror.set(uid, now);
    let m: Awaited<ReturnType<NonNullable<CheckpointPlanner["mirror"]>>>;
    try {
      m = await planner.mirror(run, rc.signal);
    } catch (err) {
      // A store that cannot be read now is tried again at the next poll; the run goes on.
      rc.log.warn("could not mirror the newest checkpoint", { err });
      return run;
    }
    if (!m || (run.status?.checkpoint?.step === m.step && run.status.checkpoint.digest === m.digest))
      return run;
    try {
      // `run` is usually the stored object of this reconcile's own status write; when that
      // write had nothing to change it is the cache's, which can be behind (e.g. right after
      // a restart, behind what the previous process wrote).
      const updated = await this.writeStatus(run, (s) => {
        s.checkpoint = {
          step: m.step,
          digest: m.digest,
          committedAt: m.committedAt,
          replicatedTo: m.replicatedTo,
        };
      });
      rc.log.info("checkpoint mirrored to the primary", { step: m.step, replicatedTo: m.replicatedTo });
      return updated;
    } catch (err) {
      // 409: an ordinary optimistic-concurrency conflict, not a failure. The copy is done;
      // only its status is not written. Mirror again at the next look, not a poll later: the
      // conflict goes to the controller, which requeues at once (at debug level), and the
      // next reconcile reads the newer run and writes the checkpoint. (The copy is not
      // repeated: the primary's store already holds that checkpoint.)
      this.lastMirror.delete(uid);
      if (isConflict(err)) {
        rc.log.debug("checkpoint status write conflicted; writing it at the next reconcile", {
          step: m.step,
        });
        throw err;
      }
      rc.log.warn("could not record the mirrored checkpoint in status", { err, step: m.step });
      return run;
    }
  }

  // ---- failback (step 8, failback: WhenPrimaryAccepts) -----------------------------------

  /** The run's newest failback offer (status.failback.offer), when it exists and is this run's. */
  private failbackOffer(run: Run): Offer | undefined {
    const name = run.status?.failback?.offer;
    if (!name) return undefined;
    const offer = this.ctx.caches.offers.get(`${run.metadata.namespace}/${name}`);
    return offer && offer.spec.run.uid === run.metadata.uid ? offer : undefined;
  }

  /** The k-th failback offer's name, qualified with the uid when an older same-named run left one. */
  private failbackName(run: Run, check: number): string {
    const plain = failbackOfferName(run.metadata.name!, check);
    const byPlain = this.ctx.caches.offers.get(`${run.metadata.namespace}/${plain}`);
    return byPlain && byPlain.spec.run.uid !== run.metadata.uid
      ? failbackOfferName(`${run.metadata.name}-${run.metadata.uid!.slice(0, 8)}`, check)
      : plain;
  }

  /**
   * While a run with failback on runs on an alternative: offer it to the primary again every
   * `failbackIntervalMs` after the primary last said no (doubling after each decline, at most
   * `failbackMaxIntervalMs`), one check at a time. Returns when to look again, if it matters.
   *
   * Crash safety: check k is recorded in status (`failback.checks`, `failback.offer`) before its
   * offer is created under a name derived from k, so a restarted operator creates that same
   * offer (AlreadyExists) and never a second one for the check.
   */
  private async checkFailback(run: Run, rc: ReconcileContext): Promise<number | undefined> {
    const now = this.ctx.now();
    const providers = this.ctx.caches.providers.list();
    if (conflictingPrimaries(providers).length > 1) return undefined;
    const primary = evaluateEligibility(run, providers).primary;
    const latestName = run.status?.failback?.offer;
    const latest = this.failbackOffer(run);
    const decision = decideFailback({
      run,
      primaryName: primary?.metadata.name,
      ...(latestName ? { latestName } : {}),
      ...(latest ? { latest } : {}),
      offersNewestFirst: this.offersOf(run),
      now,
      timing: {
        intervalMs: this.ctx.settings.failbackIntervalMs,
        maxIntervalMs: this.ctx.settings.failbackMaxIntervalMs,
      },
    });
    const placed = run.status?.placement;
    switch (decision.action) {
      case "none":
        if (decision.why === NO_CHECKPOINTS && placed?.provider !== primary?.metadata.name) {
          // Said once, on the run: failback was asked for but cannot happen.
          await this.writeStatus(run, (_s, obj) => {
            setStatusCondition(obj, {
              type: "FailingBack",
              status: "False",
              reason: "NoCheckpoints",
              message: NO_CHECKPOINTS,
            });
          });
        }
        return undefined;
      case "wait":
        return Math.max(decision.afterMs, 250);
      case "move":
        return 10; // the next reconcile takes the failback path
      case "timeout":
        await this.answerOffer(latest!, decision.offerStatus);
        return 10;
      case "declined": {
        await this.writeStatus(run, (s) => {
          s.failback = { checks: s.failback?.checks ?? 0, ...s.failback, outcome: decision.outcome };
        });
        this.failbackChecks.inc({ provider: latest!.spec.provider, outcome: decision.outcome });
        const st = latest!.status;
        this.ctx.events.record(
          run,
          "Normal",
          "FailbackDeclined",
          `${latest!.spec.provider} answered failback offer ${latest!.metadata.name} ${decision.outcome}${st?.reason ? ` (${st.reason})` : ""}; staying on ${placed?.provider}, next check in ${Math.round(decision.afterMs / 1000)}s`,
        );
        return Math.max(decision.afterMs, 250);
      }
      case "check":
      case "create": {
        if (!primary || !placed) return undefined;
        let name: string;
        if (decision.action === "check") {
          name = this.failbackName(run, decision.check);
          run = await this.writeStatus(run, (s) => {
            s.failback = { checks: decision.check, offer: name };
            s.offers = [name, ...(s.offers ?? []).filter((n) => n !== name)].slice(0, MAX_OFFERS_LISTED);
          });
        } else name = decision.name;
        const built = buildFailbackOffer({
          run,
          primary,
          current: this.ctx.caches.providers.get(placed.provider),
          name,
          now,
        });
        try {
          await this.ctx.mgmt.create(SpillwayResources.CapacityOffer, built as Offer);
          rc.with({ offer: name, provider: primary.metadata.name });
          rc.log.info("failback: offered to the primary again", {
            competingQuote: built.spec.competingQuote?.pricePerHour,
            deadline: built.spec.deadline,
          });
          this.ctx.events.record(
            run,
            "Normal",
            "FailbackOffered",
            `offered ${runGpus(run)} ${run.spec.resources.gpu.type} GPUs to ${primary.metadata.name} as ${name} (failback check ${run.status?.failback?.checks ?? "?"}) against $${built.spec.competingQuote?.pricePerHour ?? "?"}/h on ${placed.provider}; answer due by ${built.spec.deadline}`,
          );
        } catch (err) {
          if (!isAlreadyExists(err)) throw err;
        }
        return Math.max(250, Date.parse(built.spec.deadline) - now.getTime());
      }
    }
  }

  /**
   * The primary accepted a failback check: move back at a checkpoint boundary.
   *
   *   1. phase Migrating, condition FailingBack (written once);
   *   2. the Job on the alternative is deleted and its pods are waited for: each gets SIGTERM
   *      and its checkpoint agent uploads every complete checkpoint before it exits;
   *   3. the newest committed checkpoint is copied from the alternative's store to the
   *      primary's (the same `mirror` the running run uses);
   *   4. the next attempt starts (moves + 1) with the accepted offer as its offer: placed on the
   *      primary with that offer's reservation, dispatched with SPILLWAY_RESUME_STEP.
   *
   * Every step is decided from status and the clusters, so a restart resumes where it stopped.
   * If the alternative's cluster is lost meanwhile, there is nothing to stop: step 4 goes on
   * from the newest copy elsewhere. If the primary fails after step 4, the ordinary path
   * applies (providerFailed → the best alternative; the reservation is released because the
   * attempt's placement is not the offer's provider).
   */
  private async failBack(
    run: Run,
    placement: Placement,
    offer: Offer,
    rc: ReconcileContext,
  ): Promise<ReconcileResult | undefined> {
    const attempt = placement.attempt ?? 1;
    const cluster = placement.cluster ?? EXISTING_CLUSTER;
    const from = `${placement.provider}/${cluster}`;
    rc.with({ provider: placement.provider, offer: offer.metadata.name });
    if (run.status?.phase !== "Migrating") {
      const price = offer.status?.acceptedPricePerHour;
      const message = `${offer.spec.provider} accepted failback offer ${offer.metadata.name}${price !== undefined ? ` at $${price}/h` : ""}; stopping the Job on ${from} at a checkpoint boundary`;
      run = await this.writeStatus(run, (s, obj) => {
        s.phase = "Migrating";
        s.failback = { checks: s.failback?.checks ?? 0, ...s.failback, outcome: "Accepted" };
        setStatusCondition(obj, { type: "FailingBack", status: "True", reason: "PrimaryAccepted", message });
      });
      this.failbackChecks.inc({ provider: offer.spec.provider, outcome: "Accepted" });
      this.ctx.events.record(run, "Normal", "FailbackAccepted", message);
      rc.log.info("failback accepted; stopping the remote Job", { from });
    }

    const provider = this.ctx.caches.providers.get(placement.provider);
    const lookup = provider ? clusterKubeconfig(this.ctx, provider, cluster) : undefined;
    if (lookup && "kubeconfig" in lookup) {
      const id = clusterId(placement.provider, cluster);
      const remote = this.ctx.remote.connect(id, lookup.kubeconfig);
      const lost = this.ctx.remote.unreachableForMs(id) > this.ctx.settings.clusterLostTimeoutMs;
      if (!lost) {
        if (!remote.jobs.hasSynced()) return { requeueAfter: 500 };
        const job = remoteJobOf(remote, run);
        if (job && jobAttempt(job) === attempt) {
          const { state } = jobState(job);
          if (state === "Succeeded" || state === "Failed") {
            // It finished before it could be stopped: the run ends here; the accepted offer's
            // reservation is released because the run finished.
            await this.writeStatus(run, (_s, obj) => {
              setStatusCondition(obj, {
                type: "FailingBack",
                status: "False",
                reason: "RunFinished",
                message: `the Job on ${from} finished before it was stopped`,
              });
            });
            return this.mirror(run, remote, job, rc);
          }
          await deleteRemote(remote, run, job);
          rc.log.info("failback: remote Job deleted; waiting for its pods to drain", { from });
          return { requeueAfter: 1_000 };
        }
        const left = await podsLeft(remote, run, attempt);
        if (left > 0) return { requeueAfter: 1_000 };
        await deleteRemote(remote, run);
      }
    }

    // The checkpoint boundary: the newest committed checkpoint, now final, to the primary's store.
    const planner = this.opts.checkpoints;
    let step = run.status?.checkpoint?.step;
    if (planner?.mirror && run.spec.checkpoints) {
      try {
        const m = await planner.mirror(run, rc.signal);
        if (m) {
          step = m.step;
          run = await this.writeStatus(run, (s) => {
            s.checkpoint = {
              step: m.step,
              digest: m.digest,
              committedAt: m.committedAt,
              replicatedTo: m.replicatedTo,
            };
          });
        }
      } catch (err) {
        // A conflict on the status write is not a store failure: look again at once.
        if (isConflict(err)) throw err;
        const since = Date.parse(
          run.status?.conditions?.find((c) => c.type === "FailingBack")?.lastTransitionTime ?? "",
        );
        const waited = this.ctx.now().getTime() - (Number.isFinite(since) ? since : 0);
        rc.log.warn("failback: could not copy the newest checkpoint to the primary", { err, waited });
        if (waited < this.ctx.settings.clusterLostTimeoutMs) return { requeueAfter: 2_000 };
        // The alternative's store stays unreadable: resume from the newest copy elsewhere
        // (the periodic mirror keeps the primary's store at most one poll behind).
        this.ctx.events.record(
          run,
          "Warning",
          "CheckpointNotReplicated",
          `the store of ${placement.provider} could not be read; resuming from the newest copy elsewhere`,
        );
      }
    }
    this.ctx.events.record(
      run,
      "Normal",
      "FailedBack",
      `moving back from ${from} to ${offer.spec.provider} (failback offer ${offer.metadata.name} accepted)${step !== undefined ? `; resuming from step ${step}` : ""}`,
    );
    return this.newAttempt(
      run,
      attempt,
      `failing back to ${offer.spec.provider} with offer ${offer.metadata.name}`,
      true,
      "FailingBack",
    );
  }

  // ---- attempts, failures, finishing ---------------------------------------------------

  /** The placed provider cannot take the run this attempt: skip it and decide again. */
  private async providerFailed(
    run: Run,
    provider: string,
    reason: string,
    message: string,
  ): Promise<ReconcileResult> {
    const isPrimary = this.ctx.caches.providers.get(provider)?.spec.role === "primary";
    await this.writeStatus(run, (s, obj) => {
      s.placement = undefined;
      s.failedProviders = [...new Set([...(s.failedProviders ?? []), provider])];
      setStatusCondition(obj, {
        type: "Placed",
        status: "False",
        reason,
        message: `${provider}: ${message}`,
      });
      // The primary failing after accepting: its acceptance is spent, the next attempt offers again.
      if (isPrimary) s.phase = "Pending";
    });
    // After the write: a reconcile of a stale cached copy whose write conflicts says nothing.
    this.ctx.events.record(run, "Warning", reason, message);
    return { requeueAfter: 1_000 };
  }

  private async newAttempt(
    run: Run,
    attempt: number,
    why: string,
    moved = false,
    reason?: string,
  ): Promise<ReconcileResult> {
    await this.writeStatus(run, (s, obj) => {
      s.attempt = attempt + 1;
      s.placement = undefined;
      s.failedProviders = undefined;
      s.data = undefined;
      s.remote = undefined;
      s.phase = moved ? "Migrating" : "Offering";
      if (moved) s.moves = (s.moves ?? 0) + 1;
      // The conditions of the attempt that ended say nothing about the new one.
      s.conditions = (s.conditions ?? []).filter(
        (c) => !["Running", "Dispatched", "ClusterReady", "DataStaged"].includes(c.type),
      );
      setStatusCondition(obj, {
        type: "Placed",
        status: "False",
        reason: reason ?? (moved ? "Moving" : "Reoffering"),
        message: `attempt ${attempt + 1}: ${why}`,
      });
    });
    return { requeueAfter: 10 };
  }

  private async newAttemptLater(
    run: Run,
    attempt: number,
    afterMs: number,
    why: string,
  ): Promise<ReconcileResult> {
    const since = Date.parse(
      run.status?.conditions?.find((c) => c.type === "Placed")?.lastTransitionTime ?? "",
    );
    if (Number.isFinite(since) && this.ctx.now().getTime() - since >= afterMs)
      return this.newAttempt(run, attempt, why);
    return { requeueAfter: afterMs };
  }

  private async suspend(run: Run): Promise<ReconcileResult | undefined> {
    for (const offer of this.offersOf(run)) {
      const st = withdrawnStatus(offer, this.ctx.now(), "the run was suspended");
      if (st) await this.answerOffer(offer, st);
    }
    await this.setWaiting(run, run.status?.phase ?? "Pending", "Suspended", "spec.runPolicy.suspend is true");
    return undefined;
  }

  /** A finished run keeps no remote objects. */
  private async cleanupFinished(run: Run, rc: ReconcileContext): Promise<ReconcileResult | undefined> {
    const p = run.status?.placement;
    if (!p?.cluster) return undefined;
    const provider = this.ctx.caches.providers.get(p.provider);
    if (!provider) return undefined;
    const lookup = clusterKubeconfig(this.ctx, provider, p.cluster);
    if (!("kubeconfig" in lookup)) return undefined;
    const remote = this.ctx.remote.connect(clusterId(p.provider, p.cluster), lookup.kubeconfig);
    if (!remote.jobs.hasSynced()) return { requeueAfter: 500 };
    const job = remoteJobOf(remote, run);
    if (job) {
      await deleteRemote(remote, run, job);
      rc.log.info("deleted remote objects of a finished run");
    }
    return undefined;
  }

  /** Deletion: remote objects go (uid preconditions), open offers are withdrawn, offers stay. */
  private async finalize(run: Run, rc: ReconcileContext): Promise<ReconcileResult | undefined> {
    if (!(run.metadata.finalizers ?? []).includes(RUN_FINALIZER)) return undefined;
    for (const offer of this.offersOf(run)) {
      const st = withdrawnStatus(offer, this.ctx.now(), "the run was deleted");
      if (st) await this.answerOffer(offer, st);
    }
    const p = run.status?.placement;
    if (p?.cluster) {
      const provider = this.ctx.caches.providers.get(p.provider);
      const lookup = provider ? clusterKubeconfig(this.ctx, provider, p.cluster) : undefined;
      if (lookup && "kubeconfig" in lookup) {
        const id = clusterId(p.provider, p.cluster);
        const remote = this.ctx.remote.connect(id, lookup.kubeconfig);
        const lost = this.ctx.remote.unreachableForMs(id) > this.ctx.settings.clusterLostTimeoutMs;
        if (!lost) {
          if (!remote.jobs.hasSynced()) return { requeueAfter: 500 };
          await deleteRemote(remote, run);
        } else {
          // The orphan collector removes it once the cluster answers again.
          rc.log.warn("cluster unreachable; leaving remote objects to the orphan collector", { cluster: id });
        }
      }
    }
    const finalizers = (run.metadata.finalizers ?? []).filter((f) => f !== RUN_FINALIZER);
    try {
      await this.ctx.mgmt.patch(SpillwayResources.TrainingRun, run.metadata.name!, run.metadata.namespace, {
        metadata: { finalizers, resourceVersion: run.metadata.resourceVersion },
      });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    rc.log.info("finalized");
    return undefined;
  }

  // ---- status ------------------------------------------------------------------------

  private async setWaiting(
    run: Run,
    phase: NonNullable<Status["phase"]>,
    reason: string,
    message: string,
  ): Promise<Run> {
    const before = run.status?.conditions?.find((c) => c.type === "Placed");
    const updated = await this.writeStatus(run, (s, obj) => {
      s.phase = phase;
      setStatusCondition(obj, { type: "Placed", status: "False", reason, message });
    });
    // AwaitingPrimary needs no Event of its own: the Offered Event says the same.
    if (before?.reason !== reason && reason !== "AwaitingPrimary") {
      this.ctx.events.record(run, "Warning", reason, message);
    }
    return updated;
  }

  /**
   * Applies `mutate` to a copy of the run's status and writes it when it changed, with the
   * run's resourceVersion as precondition (a stale cache yields 409 and a retry, never a
   * lost update). Returns the stored run.
   */
  private async writeStatus(run: Run, mutate: (s: Status, obj: Run) => void): Promise<Run> {
    const next = structuredClone(run);
    next.status ??= {};
    mutate(next.status, next);
    next.status.observedGeneration = run.metadata.generation;
    const stored = this.stored.get(run) ?? JSON.stringify(run.status ?? {});
    if (JSON.stringify(next.status) === stored) return run;
    return this.ctx.mgmt.updateStatus(SpillwayResources.TrainingRun, next);
  }

  /** Status as stored, for runs changed in memory only (see `derive`). */
  private readonly stored = new WeakMap<Run, string>();

  /**
   * A copy of the run with its status changed in memory only; the change is written by the
   * next `writeStatus` that has anything to write.
   */
  private derive(run: Run, mutate: (s: Status, obj: Run) => void): Run {
    const next = structuredClone(run);
    next.status ??= {};
    mutate(next.status, next);
    this.stored.set(next, this.stored.get(run) ?? JSON.stringify(run.status ?? {}));
    return next;
  }
}

export { splitKey };
