/**
 * What the server serves: a static table of built-in resources (stored generically, no
 * per-kind validation beyond metadata) plus the resources CRDs define at run time.
 */
import type { ResourceType } from "./types.ts";

interface BuiltinRow {
  gv: string;
  kind: string;
  plural: string;
  namespaced: boolean;
  short?: string[];
  categories?: string[];
  status?: boolean;
}

const ALL = ["all"];

const BUILTINS: BuiltinRow[] = [
  { gv: "v1", kind: "Namespace", plural: "namespaces", namespaced: false, short: ["ns"], status: true },
  { gv: "v1", kind: "Secret", plural: "secrets", namespaced: true },
  { gv: "v1", kind: "ConfigMap", plural: "configmaps", namespaced: true, short: ["cm"] },
  { gv: "v1", kind: "Event", plural: "events", namespaced: true, short: ["ev"] },
  {
    gv: "v1",
    kind: "Service",
    plural: "services",
    namespaced: true,
    short: ["svc"],
    categories: ALL,
    status: true,
  },
  { gv: "v1", kind: "ServiceAccount", plural: "serviceaccounts", namespaced: true, short: ["sa"] },
  { gv: "v1", kind: "Pod", plural: "pods", namespaced: true, short: ["po"], categories: ALL, status: true },
  { gv: "v1", kind: "Node", plural: "nodes", namespaced: false, short: ["no"], status: true },
  { gv: "v1", kind: "Endpoints", plural: "endpoints", namespaced: true, short: ["ep"] },
  {
    gv: "v1",
    kind: "PersistentVolumeClaim",
    plural: "persistentvolumeclaims",
    namespaced: true,
    short: ["pvc"],
    status: true,
  },
  {
    gv: "v1",
    kind: "PersistentVolume",
    plural: "persistentvolumes",
    namespaced: false,
    short: ["pv"],
    status: true,
  },
  {
    gv: "v1",
    kind: "ResourceQuota",
    plural: "resourcequotas",
    namespaced: true,
    short: ["quota"],
    status: true,
  },
  { gv: "v1", kind: "LimitRange", plural: "limitranges", namespaced: true, short: ["limits"] },
  {
    gv: "apps/v1",
    kind: "Deployment",
    plural: "deployments",
    namespaced: true,
    short: ["deploy"],
    categories: ALL,
    status: true,
  },
  {
    gv: "apps/v1",
    kind: "StatefulSet",
    plural: "statefulsets",
    namespaced: true,
    short: ["sts"],
    categories: ALL,
    status: true,
  },
  {
    gv: "apps/v1",
    kind: "DaemonSet",
    plural: "daemonsets",
    namespaced: true,
    short: ["ds"],
    categories: ALL,
    status: true,
  },
  {
    gv: "apps/v1",
    kind: "ReplicaSet",
    plural: "replicasets",
    namespaced: true,
    short: ["rs"],
    categories: ALL,
    status: true,
  },
  { gv: "batch/v1", kind: "Job", plural: "jobs", namespaced: true, categories: ALL, status: true },
  {
    gv: "batch/v1",
    kind: "CronJob",
    plural: "cronjobs",
    namespaced: true,
    short: ["cj"],
    categories: ALL,
    status: true,
  },
  { gv: "coordination.k8s.io/v1", kind: "Lease", plural: "leases", namespaced: true },
  { gv: "events.k8s.io/v1", kind: "Event", plural: "events", namespaced: true, short: ["ev"] },
  { gv: "rbac.authorization.k8s.io/v1", kind: "Role", plural: "roles", namespaced: true },
  { gv: "rbac.authorization.k8s.io/v1", kind: "RoleBinding", plural: "rolebindings", namespaced: true },
  { gv: "rbac.authorization.k8s.io/v1", kind: "ClusterRole", plural: "clusterroles", namespaced: false },
  {
    gv: "rbac.authorization.k8s.io/v1",
    kind: "ClusterRoleBinding",
    plural: "clusterrolebindings",
    namespaced: false,
  },
  {
    gv: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    plural: "networkpolicies",
    namespaced: true,
    short: ["netpol"],
  },
  {
    gv: "networking.k8s.io/v1",
    kind: "Ingress",
    plural: "ingresses",
    namespaced: true,
    short: ["ing"],
    status: true,
  },
  {
    gv: "policy/v1",
    kind: "PodDisruptionBudget",
    plural: "poddisruptionbudgets",
    namespaced: true,
    short: ["pdb"],
    status: true,
  },
  {
    gv: "autoscaling/v2",
    kind: "HorizontalPodAutoscaler",
    plural: "horizontalpodautoscalers",
    namespaced: true,
    short: ["hpa"],
    categories: ALL,
    status: true,
  },
  {
    gv: "scheduling.k8s.io/v1",
    kind: "PriorityClass",
    plural: "priorityclasses",
    namespaced: false,
    short: ["pc"],
  },
  {
    gv: "admissionregistration.k8s.io/v1",
    kind: "ValidatingWebhookConfiguration",
    plural: "validatingwebhookconfigurations",
    namespaced: false,
  },
  {
    gv: "admissionregistration.k8s.io/v1",
    kind: "MutatingWebhookConfiguration",
    plural: "mutatingwebhookconfigurations",
    namespaced: false,
  },
  {
    gv: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    plural: "customresourcedefinitions",
    namespaced: false,
    short: ["crd", "crds"],
    categories: ["api-extensions"],
    status: true,
  },
  // Not built in on a real cluster (the Prometheus operator's CRDs), but charts commonly
  // ship a ServiceMonitor; serving them lets `helm install` of such charts work unchanged.
  {
    gv: "monitoring.coreos.com/v1",
    kind: "ServiceMonitor",
    plural: "servicemonitors",
    namespaced: true,
    short: ["smon"],
  },
  {
    gv: "monitoring.coreos.com/v1",
    kind: "PodMonitor",
    plural: "podmonitors",
    namespaced: true,
    short: ["pmon"],
  },
];

function fromRow(row: BuiltinRow): ResourceType {
  const [group, version] = row.gv.includes("/") ? (row.gv.split("/") as [string, string]) : ["", row.gv];
  return {
    group,
    versions: [version],
    kind: row.kind,
    listKind: `${row.kind}List`,
    plural: row.plural,
    singular: row.kind.toLowerCase(),
    namespaced: row.namespaced,
    shortNames: row.short ?? [],
    categories: row.categories ?? [],
    statusSubresource: row.status ?? false,
  };
}

export const VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/** Resources by group, then plural. Discovery iterates it in insertion order (core first). */
export class ResourceRegistry {
  private readonly byGroup = new Map<string, Map<string, ResourceType>>();
  /** Bumped on every change, so discovery and OpenAPI documents can be cached by it. */
  revision = 0;

  constructor() {
    for (const row of BUILTINS) this.add(fromRow(row));
  }

  add(rt: ResourceType): void {
    let plurals = this.byGroup.get(rt.group);
    if (!plurals) {
      plurals = new Map();
      this.byGroup.set(rt.group, plurals);
    }
    plurals.set(rt.plural, rt);
    this.revision++;
  }

  remove(group: string, plural: string): void {
    const plurals = this.byGroup.get(group);
    if (!plurals?.delete(plural)) return;
    if (plurals.size === 0) this.byGroup.delete(group);
    this.revision++;
  }

  /** The resource served at group/version/plural, if that version is served. */
  lookup(group: string, version: string, plural: string): ResourceType | undefined {
    const rt = this.byGroup.get(group)?.get(plural);
    return rt?.versions.includes(version) ? rt : undefined;
  }

  byKind(group: string, kind: string): ResourceType | undefined {
    for (const rt of this.byGroup.get(group)?.values() ?? []) if (rt.kind === kind) return rt;
    return undefined;
  }

  groups(): string[] {
    return [...this.byGroup.keys()];
  }

  inGroup(group: string): ResourceType[] {
    return [...(this.byGroup.get(group)?.values() ?? [])];
  }

  all(): ResourceType[] {
    return [...this.byGroup.values()].flatMap((m) => [...m.values()]);
  }

  /** Versions of a group, preferred first (the first version of its first resource). */
  groupVersions(group: string): string[] {
    const versions: string[] = [];
    for (const rt of this.inGroup(group))
      for (const v of rt.versions) if (!versions.includes(v)) versions.push(v);
    return versions;
  }
}
