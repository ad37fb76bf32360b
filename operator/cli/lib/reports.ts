/**
 * The ledger and status reports of `spillway offers` and `spillway status` (also printed at
 * the end of the sandbox demo). Pure renderers over listed objects.
 */
import type {
  CapacityOffer,
  CloudProvider,
  ProvisionedCluster,
  TrainingRun,
} from "../../api/v1alpha1/index.ts";
import type { KubeClient } from "../../runtime/client.ts";
import { type KubeObject, SpillwayResources } from "../../runtime/resources.ts";
import { age, price, renderTable } from "./table.ts";

export function offersTable(offers: readonly CapacityOffer[], now = Date.now()): string {
  const sorted = [...offers].sort(
    (a, b) =>
      (a.metadata.creationTimestamp ?? "").localeCompare(b.metadata.creationTimestamp ?? "") ||
      (a.metadata.name ?? "").localeCompare(b.metadata.name ?? ""),
  );
  return renderTable(
    [
      "NAMESPACE",
      "OFFER",
      "RUN",
      "ATTEMPT",
      "PROVIDER",
      "GPUS",
      "COMPETING",
      "OUTCOME",
      "REASON",
      "PRICE",
      "AGE",
    ],
    sorted.map((o) => [
      o.metadata.namespace ?? "",
      o.metadata.name ?? "",
      o.spec.run.name,
      String(o.spec.attempt),
      o.spec.provider,
      `${o.spec.request.nodes * o.spec.request.gpusPerNode}x${o.spec.request.gpuType}`,
      o.spec.competingQuote
        ? `${price(o.spec.competingQuote.pricePerHour)} ${o.spec.competingQuote.provider}`
        : "-",
      o.status?.outcome ?? "Open",
      o.status?.reason ?? "-",
      price(o.status?.acceptedPricePerHour),
      age(o.metadata.creationTimestamp, now),
    ]),
  );
}

export function runsTable(runs: readonly TrainingRun[], now = Date.now()): string {
  const sorted = [...runs].sort((a, b) =>
    `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`),
  );
  return renderTable(
    ["NAMESPACE", "RUN", "CLASS", "PHASE", "PROVIDER", "CLUSTER", "GPUS", "ATTEMPT", "MOVES", "WHY", "AGE"],
    sorted.map((r) => {
      const placed = r.status?.conditions?.find((c) => c.type === "Placed");
      const why = r.status?.placement?.reason ?? (placed?.status === "False" ? placed.reason : "-");
      return [
        r.metadata.namespace ?? "",
        r.metadata.name ?? "",
        r.spec.workloadClass ?? "training",
        r.status?.phase ?? "Pending",
        r.status?.placement?.provider ?? "-",
        r.status?.placement?.cluster ?? "-",
        String((r.spec.resources.nodes ?? 1) * r.spec.resources.gpu.count),
        String(r.status?.attempt ?? 0),
        String(r.status?.moves ?? 0),
        why ?? "-",
        age(r.metadata.creationTimestamp, now),
      ];
    }),
  );
}

export function providersTable(
  providers: readonly CloudProvider[],
  clusters: readonly ProvisionedCluster[],
  now = Date.now(),
): string {
  const p = renderTable(
    ["PROVIDER", "TYPE", "ROLE", "REGION", "JURISDICTION", "CLUSTER"],
    [...providers]
      .sort((a, b) => (a.metadata.name ?? "").localeCompare(b.metadata.name ?? ""))
      .map((x) => [
        x.metadata.name ?? "",
        x.spec.type,
        x.spec.role ?? "alternative",
        x.spec.region,
        x.spec.jurisdiction,
        x.spec.cluster.existing ? "existing" : "provisioned",
      ]),
  );
  if (clusters.length === 0) return p;
  const c = renderTable(
    ["PROVISIONED CLUSTER", "PROVIDER", "PHASE", "GPUS", "AGE"],
    clusters.map((x) => [
      x.metadata.name ?? "",
      x.spec.provider,
      x.status?.phase ?? "Pending",
      String(x.spec.nodePools.reduce((s, n) => s + n.nodes * n.gpusPerNode, 0)),
      age(x.metadata.creationTimestamp, now),
    ]),
  );
  return `${p}\n\n${c}`;
}

export async function listOffers(client: KubeClient, namespace?: string): Promise<CapacityOffer[]> {
  const list = await client.listAll<CapacityOffer & KubeObject>(SpillwayResources.CapacityOffer, {
    ...(namespace ? { namespace } : {}),
  });
  return list.items;
}

export async function statusReport(client: KubeClient, namespace?: string): Promise<string> {
  const ns = namespace ? { namespace } : {};
  const [runs, providers, clusters] = await Promise.all([
    client.listAll<TrainingRun & KubeObject>(SpillwayResources.TrainingRun, ns),
    client.listAll<CloudProvider & KubeObject>(SpillwayResources.CloudProvider),
    client.listAll<ProvisionedCluster & KubeObject>(SpillwayResources.ProvisionedCluster),
  ]);
  return `${runsTable(runs.items)}\n\n${providersTable(providers.items, clusters.items)}`;
}
