/**
 * Where a placed run executes: the provider's existing cluster, or a ProvisionedCluster the
 * run shares or has created (placement step 5's hand-off to provisioning). Pure functions over
 * the caches plus the one write that creates a ProvisionedCluster.
 */
import { createHash } from "node:crypto";
import type { CloudProvider, ProvisionedCluster, TrainingRun } from "../../api/v1alpha1/index.ts";
import { skuFor } from "../../rofr/index.ts";
import { isAlreadyExists } from "../../runtime/client.ts";
import { SpillwayResources } from "../../runtime/resources.ts";
import type { OperatorContext } from "../context.ts";
import { readSecret } from "../context.ts";
import { clusterId } from "../remote/clusters.ts";
import type { PendingPlacement, PendingPlacements } from "./capacity.ts";

/** The cluster name recorded in `status.placement.cluster` for a provider's existing cluster. */
export const EXISTING_CLUSTER = "existing";
/** Index of the run cache: runs by `provider/cluster` of their placement. */
export const RUNS_BY_CLUSTER = "placement-cluster";

export const LABEL_PC_PROVIDER = "spillway.dev/provider";
export const LABEL_PC_CREATED_FOR = "spillway.dev/created-for-run-uid";

const FINISHED = new Set(["Succeeded", "Failed"]);

export function runGpus(run: TrainingRun): number {
  return (run.spec.resources.nodes ?? 1) * run.spec.resources.gpu.count;
}

export function isFinished(run: TrainingRun): boolean {
  return FINISHED.has(run.status?.phase ?? "");
}

/** GPUs of a ProvisionedCluster's node pools for one GPU type. */
export function clusterGpus(pc: ProvisionedCluster, gpuType: string): number {
  return pc.spec.nodePools
    .filter((p) => p.gpuType === gpuType)
    .reduce((sum, p) => sum + p.nodes * p.gpusPerNode, 0);
}

/** GPUs held on a cluster by runs placed there (other than `except`) that have not finished. */
export function gpusInUse(
  runs: readonly TrainingRun[],
  provider: string,
  cluster: string,
  exceptUid?: string,
): number {
  return runs
    .filter(
      (r) =>
        r.metadata.uid !== exceptUid &&
        !isFinished(r) &&
        !r.metadata.deletionTimestamp &&
        r.status?.placement?.provider === provider &&
        r.status.placement.cluster === cluster,
    )
    .reduce((sum, r) => sum + runGpus(r), 0);
}

/** A deterministic ProvisionedCluster name for the cluster created for a run's attempt. */
export function provisionedClusterName(provider: string, runUid: string, attempt: number): string {
  const h = createHash("sha256").update(`${runUid}/${attempt}`).digest("hex").slice(0, 10);
  const base = provider.slice(0, 63 - h.length - 1).replace(/-+$/, "");
  return `${base}-${h}`;
}

export type ClusterChoice =
  | { kind: "existing" }
  | { kind: "reuse"; cluster: ProvisionedCluster }
  | { kind: "create"; name: string }
  | { kind: "full"; message: string };

/**
 * Picks the cluster for a run placed on `provider`: its existing cluster; else a live
 * ProvisionedCluster of that provider with room for the run; else a new one when the
 * provider's `maxClusters` allows. `pending` are placements this process has written that
 * the caches may not show yet: they count as GPUs in use and (new clusters) as clusters.
 * The run cache must carry the `RUNS_BY_CLUSTER` index.
 */
export function chooseCluster(
  ctx: OperatorContext,
  run: TrainingRun,
  provider: CloudProvider,
  attempt: number,
  pending?: PendingPlacements,
): ClusterChoice {
  if (provider.spec.cluster.existing) {
    const lostFor = ctx.remote.unreachableForMs(`${provider.metadata.name}/${EXISTING_CLUSTER}`);
    if (lostFor > 0) {
      return { kind: "full", message: `its cluster has not answered for ${Math.round(lostFor / 1000)}s` };
    }
    return { kind: "existing" };
  }
  const provision = provider.spec.cluster.provision;
  if (!provision) return { kind: "full", message: `${provider.metadata.name} has no cluster source` };
  const name = provider.metadata.name ?? "";
  const gpuType = run.spec.resources.gpu.type;
  const mine = provisionedClusterName(name, run.metadata.uid ?? "", attempt);
  const all = ctx.caches.clusters.list().filter((pc) => pc.spec.provider === name);
  const created = all.find((pc) => pc.metadata.name === mine);
  if (created && !created.metadata.deletionTimestamp) return { kind: "reuse", cluster: created };
  const claims = pending?.on(name, run.metadata.uid) ?? [];
  const inUse = (cluster: string) =>
    gpusInUse(
      ctx.caches.runs.byIndex(RUNS_BY_CLUSTER, clusterId(name, cluster)),
      name,
      cluster,
      run.metadata.uid,
    ) + claims.filter((c) => c.cluster === cluster).reduce((sum, c) => sum + c.gpus, 0);
  // A cluster that is not answering takes no new runs (the runs on it are moving away).
  const answering = (pc: ProvisionedCluster) =>
    ctx.remote.unreachableForMs(`${name}/${pc.metadata.name}`) === 0;
  const live = all.filter(
    (pc) =>
      !pc.metadata.deletionTimestamp && pc.status?.phase !== "Failed" && pc.status?.phase !== "Destroying",
  );
  const usable = live.filter(answering);
  const fitting = usable
    .filter((pc) => clusterGpus(pc, gpuType) - inUse(pc.metadata.name ?? "") >= runGpus(run))
    .sort((a, b) => (a.metadata.name ?? "").localeCompare(b.metadata.name ?? ""));
  const ready = fitting.find((pc) => pc.status?.phase === "Ready");
  if (ready ?? fitting[0]) return { kind: "reuse", cluster: (ready ?? fitting[0])! };
  const { count, max } = clusterCount(ctx, provider, claims);
  if (count >= max) {
    return {
      kind: "full",
      message: `${name} has ${count} of at most ${max} provisioned clusters and none has ${runGpus(run)} free ${gpuType} GPUs`,
    };
  }
  return { kind: "create", name: mine };
}

/**
 * The provisioned clusters `provider` counts against its `maxClusters`: live ones, ones being
 * destroyed (a cloud counts them against the quota that maxClusters mirrors, and a new `up`
 * beside one can be refused: its deletion event wakes the runs waiting for room), and ones
 * `claims` (pending placements of other runs) are creating that the cache does not show yet.
 */
export function clusterCount(
  ctx: OperatorContext,
  provider: CloudProvider,
  claims: readonly PendingPlacement[],
): { count: number; max: number } {
  const name = provider.metadata.name ?? "";
  const all = ctx.caches.clusters.list().filter((pc) => pc.spec.provider === name);
  // Live and being destroyed alike: every cluster but a Failed one.
  const counted = all.filter((pc) => pc.status?.phase !== "Failed");
  const coming = new Set(
    claims
      .filter((c) => c.creates && !all.some((pc) => pc.metadata.name === c.cluster))
      .map((c) => c.cluster),
  );
  return { count: counted.length + coming.size, max: provider.spec.cluster.provision?.maxClusters ?? 1 };
}

/**
 * Creates the ProvisionedCluster for a run's attempt (AlreadyExists is success); whether this
 * call created it.
 */
export async function createProvisionedCluster(
  ctx: OperatorContext,
  run: TrainingRun,
  provider: CloudProvider,
  name: string,
): Promise<boolean> {
  const provision = provider.spec.cluster.provision!;
  const gpuType = run.spec.resources.gpu.type;
  const sku = skuFor(provider, gpuType);
  const gpusPerNode = sku?.gpusPerNode ?? run.spec.resources.gpu.count;
  // Nodes enough for the run: runs needing fewer GPUs per node than the shape has still take a
  // whole node each (one worker pod per node).
  const nodes = Math.max(1, run.spec.resources.nodes ?? 1);
  const pc: ProvisionedCluster = {
    apiVersion: "spillway.dev/v1alpha1",
    kind: "ProvisionedCluster",
    metadata: {
      name,
      labels: {
        [LABEL_PC_PROVIDER]: provider.metadata.name ?? "",
        [LABEL_PC_CREATED_FOR]: run.metadata.uid ?? "",
      },
    },
    spec: {
      provider: provider.metadata.name ?? "",
      stackName: name,
      program: provision.program,
      region: provider.spec.region,
      ...(provision.config ? { config: provision.config } : {}),
      nodePools: [{ name: "gpu", shape: sku?.sku ?? gpuType, gpuType, gpusPerNode, nodes }],
    },
  };
  try {
    await ctx.mgmt.create(SpillwayResources.ProvisionedCluster, pc);
    return true;
  } catch (err) {
    if (!isAlreadyExists(err)) throw err;
    return false;
  }
}

export type KubeconfigLookup = { kubeconfig: string } | { waiting: string } | { failed: string };

/** The kubeconfig of the cluster a run is placed on, or why it is not available yet. */
export function clusterKubeconfig(
  ctx: OperatorContext,
  provider: CloudProvider,
  cluster: string,
): KubeconfigLookup {
  if (cluster === EXISTING_CLUSTER) {
    const ref = provider.spec.cluster.existing?.kubeconfigSecretRef;
    if (!ref) return { failed: `${provider.metadata.name} has no existing cluster` };
    const data = readSecret(ctx, ref);
    const key = ref.key ?? "kubeconfig";
    const text = data?.[key];
    if (!text) {
      return {
        waiting: `Secret ${ctx.settings.namespace}/${ref.name} (key ${key}) with the kubeconfig of ${provider.metadata.name} is missing`,
      };
    }
    return { kubeconfig: text };
  }
  const pc = ctx.caches.clusters.get(cluster);
  if (!pc) return { waiting: `ProvisionedCluster ${cluster} is being created` };
  const phase = pc.status?.phase ?? "Pending";
  if (phase === "Failed") {
    const ready = pc.status?.conditions?.find((c) => c.type === "Ready");
    return { failed: `ProvisionedCluster ${cluster} failed: ${ready?.message ?? "provisioning failed"}` };
  }
  if (pc.metadata.deletionTimestamp || phase === "Destroying") {
    return { failed: `ProvisionedCluster ${cluster} is being destroyed` };
  }
  if (phase !== "Ready") {
    const op = pc.status?.lastOperation?.message;
    return { waiting: `ProvisionedCluster ${cluster} is ${phase}${op ? `: ${op}` : ""}` };
  }
  const ref = pc.status?.outputs?.kubeconfigSecretRef;
  const data = ref ? readSecret(ctx, ref) : undefined;
  const text = ref ? data?.[ref.key ?? "kubeconfig"] : undefined;
  if (!text)
    return { waiting: `ProvisionedCluster ${cluster} is Ready but its kubeconfig Secret is not there yet` };
  return { kubeconfig: text };
}
