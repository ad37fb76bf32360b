/**
 * Waiting for room on an alternative, and being woken when room may have appeared.
 *
 * A run whose primary said no and whose alternatives have no room (every provisioned cluster
 * of the provider is busy and `maxClusters` is reached, or its existing cluster is not
 * answering) waits in `Pending` with `Placed=False, reason NoClusterCapacity`. It keeps its
 * attempt and that attempt's one offer: when room appears it is placed on the alternative in
 * the same attempt. Room appears when a run placed on one of the provider's clusters finishes,
 * is deleted or leaves the cluster, or when one of its ProvisionedClusters changes (Ready,
 * Failed, freeGpus, being deleted, deleted); those events enqueue the runs waiting on that
 * provider, found through an index of the run cache (no API LIST). The re-offer backoff stays
 * as the fallback: a run nobody wakes offers the primary again when it expires.
 *
 * Runs woken together are reconciled in parallel, and each reads the caches; a placement this
 * process has just written is not in the cache yet. `PendingPlacements` holds those
 * placements until the cache shows them, so two runs never both take the same free GPUs or
 * the same last cluster slot.
 */
import type { ProvisionedCluster, TrainingRun } from "../../api/v1alpha1/index.ts";
import { runPolicy } from "../../rofr/index.ts";
import type { Informer } from "../../runtime/informer.ts";
import type { KubeObject } from "../../runtime/resources.ts";
import { EXISTING_CLUSTER, isFinished } from "./targets.ts";

type Run = TrainingRun & KubeObject;

/** The `Placed` reason of a run waiting for room on its alternatives. */
export const NO_CLUSTER_CAPACITY = "NoClusterCapacity";

/** Index of the run cache: runs waiting for room, by each alternative they may use. */
export const RUNS_AWAITING_CAPACITY = "awaiting-capacity";
/** The index value of runs whose policy allows every alternative. */
const ANY_ALTERNATIVE = "*";

/** Index function: a waiting run is filed under its explicit alternatives, or under "any". */
export function awaitingCapacityKeys(run: TrainingRun): string[] {
  if (run.status?.placement || isFinished(run) || run.metadata.deletionTimestamp) return [];
  const placed = run.status?.conditions?.find((c) => c.type === "Placed");
  if (placed?.status !== "False" || placed.reason !== NO_CLUSTER_CAPACITY) return [];
  const alternatives = runPolicy(run).alternatives;
  return alternatives.length > 0 ? alternatives : [ANY_ALTERNATIVE];
}

/** The runs waiting for room that `provider` could take. */
export function runsAwaitingCapacity(runs: Informer<Run>, provider: string): Run[] {
  return [
    ...runs.byIndex(RUNS_AWAITING_CAPACITY, provider),
    ...runs.byIndex(RUNS_AWAITING_CAPACITY, ANY_ALTERNATIVE),
  ];
}

/**
 * The provisioned cluster (`provider/cluster`) whose GPUs the run holds, if any. A provider's
 * existing cluster is not counted: runs are placed there whatever else runs on it.
 */
export function heldCluster(run: TrainingRun): string | undefined {
  const p = run.status?.placement;
  if (!p?.cluster || p.cluster === EXISTING_CLUSTER) return undefined;
  if (isFinished(run) || run.metadata.deletionTimestamp) return undefined;
  return `${p.provider}/${p.cluster}`;
}

/** What about a ProvisionedCluster decides whether a run fits on it or beside it. */
export function capacitySignature(pc: ProvisionedCluster & KubeObject): string {
  return JSON.stringify([
    pc.status?.phase ?? "",
    pc.metadata.deletionTimestamp ?? "",
    pc.status?.freeGpus ?? null,
    pc.spec.nodePools.map((p) => [p.gpuType, p.nodes, p.gpusPerNode]),
  ]);
}

export interface PendingPlacement {
  provider: string;
  cluster: string;
  gpus: number;
  /** The placement creates this cluster (it counts against `maxClusters` before it exists). */
  creates: boolean;
}

/**
 * Placements written by this process that the caches may not show yet, by run uid. A claim
 * ends when the run cache shows the placement (and, for a new cluster, the cluster cache shows
 * the cluster), when the run finishes or goes, or after `ttlMs` at the latest.
 */
export class PendingPlacements {
  private readonly claims = new Map<string, PendingPlacement & { at: number }>();

  constructor(
    private readonly runs: Informer<Run>,
    private readonly clusters: Informer<ProvisionedCluster & KubeObject>,
    private readonly now: () => number,
    private readonly ttlMs = 30_000,
  ) {}

  /** Records a placement about to be written; the returned function withdraws it (write failed). */
  claim(run: TrainingRun, placement: PendingPlacement): () => void {
    const uid = run.metadata.uid ?? "";
    const claim = { ...placement, at: this.now() };
    this.claims.set(uid, claim);
    return () => {
      if (this.claims.get(uid) === claim) this.claims.delete(uid);
    };
  }

  /** Claims on `provider` by runs other than `exceptUid` that the caches do not show yet. */
  on(provider: string, exceptUid?: string): PendingPlacement[] {
    const out: PendingPlacement[] = [];
    for (const [uid, claim] of this.claims) {
      if (this.settled(uid, claim)) {
        this.claims.delete(uid);
        continue;
      }
      if (claim.provider === provider && uid !== exceptUid) out.push(claim);
    }
    return out;
  }

  get size(): number {
    return this.claims.size;
  }

  private settled(uid: string, claim: PendingPlacement & { at: number }): boolean {
    if (this.now() - claim.at > this.ttlMs) return true;
    const run = this.runs.getByUid(uid);
    if (!run || isFinished(run) || run.metadata.deletionTimestamp) return true;
    const p = run.status?.placement;
    const shown = p?.provider === claim.provider && p.cluster === claim.cluster;
    return shown && (!claim.creates || this.clusters.get(claim.cluster) !== undefined);
  }
}
