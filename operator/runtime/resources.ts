/**
 * Which REST resource a kind lives at. The runtime addresses resources explicitly (no
 * discovery round-trips per request): Spillway's kinds come from the API registry, the few
 * built-in kinds the operator touches are listed here.
 */
import { API_VERSION, GROUP, KINDS, type KindName, type ObjectMeta, VERSION } from "../api/v1alpha1/index.ts";

export interface ResourceType {
  group: string;
  version: string;
  kind: string;
  plural: string;
  namespaced: boolean;
}

/** The top-level shape every Kubernetes object shares. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
}

export interface KubeList<T> {
  apiVersion?: string;
  kind?: string;
  metadata: { resourceVersion?: string; continue?: string };
  items: T[];
}

const core = (kind: string, plural: string, namespaced = true): ResourceType => ({
  group: "",
  version: "v1",
  kind,
  plural,
  namespaced,
});

export const Resources = {
  Namespace: core("Namespace", "namespaces", false),
  Secret: core("Secret", "secrets"),
  ConfigMap: core("ConfigMap", "configmaps"),
  Service: core("Service", "services"),
  Pod: core("Pod", "pods"),
  Event: core("Event", "events"),
  Lease: { group: "coordination.k8s.io", version: "v1", kind: "Lease", plural: "leases", namespaced: true },
  Job: { group: "batch", version: "v1", kind: "Job", plural: "jobs", namespaced: true },
} as const satisfies Record<string, ResourceType>;

/** The REST resource of a Spillway kind. */
export function spillwayResource(kind: KindName): ResourceType {
  const info = KINDS.find((k) => k.kind === kind);
  if (!info) throw new Error(`unknown Spillway kind ${kind}`);
  return {
    group: GROUP,
    version: VERSION,
    kind,
    plural: info.plural,
    namespaced: info.scope === "Namespaced",
  };
}

export const SpillwayResources = {
  TrainingRun: spillwayResource("TrainingRun"),
  CloudProvider: spillwayResource("CloudProvider"),
  CapacityOffer: spillwayResource("CapacityOffer"),
  DataSet: spillwayResource("DataSet"),
  ProvisionedCluster: spillwayResource("ProvisionedCluster"),
};

export function apiVersionOf(r: ResourceType): string {
  return r.group ? `${r.group}/${r.version}` : r.version;
}

export { API_VERSION };

/** `/api/v1/namespaces/ns/pods/name/status`-style paths. */
export function resourcePath(
  r: ResourceType,
  namespace?: string,
  name?: string,
  subresource?: string,
): string {
  let p = r.group ? `/apis/${r.group}/${r.version}` : `/api/${r.version}`;
  if (r.namespaced && namespace) p += `/namespaces/${encodeURIComponent(namespace)}`;
  p += `/${r.plural}`;
  if (name !== undefined) p += `/${encodeURIComponent(name)}`;
  if (subresource) p += `/${subresource}`;
  return p;
}

/** The cache/queue key of an object: `namespace/name`, or `name` when cluster-scoped. */
export function objectKey(obj: { metadata: { name?: string; namespace?: string } }): string {
  const { name = "", namespace } = obj.metadata;
  return namespace ? `${namespace}/${name}` : name;
}

export function splitKey(key: string): { namespace: string | undefined; name: string } {
  const i = key.indexOf("/");
  return i < 0 ? { namespace: undefined, name: key } : { namespace: key.slice(0, i), name: key.slice(i + 1) };
}
