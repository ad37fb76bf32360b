/**
 * Kubernetes' RBAC decision for recorded API requests, to check the chart's ClusterRole and
 * Role against what the operator actually does. The request-to-attributes mapping follows
 * the API server's (k8s.io/apiserver RequestInfoFactory): the verb from the method and the
 * path (list/watch for collections, `watch=true`), the group, the resource and subresource,
 * the namespace. Discovery and other non-resource paths are left to the default
 * `system:discovery` binding every authenticated client has.
 */
import type { Doc } from "./helm.ts";

export interface Attributes {
  verb: string;
  group: string;
  resource: string;
  subresource?: string;
  namespace?: string;
  name?: string;
}

interface Rule {
  apiGroups?: string[];
  resources?: string[];
  verbs: string[];
  resourceNames?: string[];
}

/** The attributes of one request, or undefined for a non-resource request (discovery, /version, …). */
export function requestAttributes(method: string, url: string): Attributes | undefined {
  const u = new URL(url, "http://x");
  const parts = u.pathname.split("/").filter((p) => p !== "");
  let rest: string[];
  let group: string;
  if (parts[0] === "api" && parts.length >= 2) {
    group = "";
    rest = parts.slice(2);
  } else if (parts[0] === "apis" && parts.length >= 3) {
    group = parts[1]!;
    rest = parts.slice(3);
  } else {
    return undefined;
  }
  if (rest.length === 0) return undefined; // the group-version's discovery document
  let namespace: string | undefined;
  if (rest[0] === "namespaces" && rest.length >= 3) {
    namespace = rest[1];
    rest = rest.slice(2);
  }
  const [resource, name, subresource] = rest;
  const watch = u.searchParams.get("watch") === "true" || u.searchParams.get("watch") === "1";
  const verbs: Record<string, string> = { POST: "create", PUT: "update", PATCH: "patch" };
  let verb: string;
  if (method === "GET" || method === "HEAD") verb = watch ? "watch" : name ? "get" : "list";
  else if (method === "DELETE") verb = name ? "delete" : "deletecollection";
  else verb = verbs[method] ?? method.toLowerCase();
  return {
    verb,
    group,
    resource: resource!,
    ...(subresource ? { subresource } : {}),
    ...(namespace ? { namespace } : {}),
    ...(name ? { name } : {}),
  };
}

function ruleAllows(rule: Rule, a: Attributes): boolean {
  const resource = a.subresource ? `${a.resource}/${a.subresource}` : a.resource;
  return (
    rule.verbs.includes(a.verb) &&
    (rule.apiGroups ?? []).includes(a.group) &&
    (rule.resources ?? []).includes(resource) &&
    (!rule.resourceNames || (a.name !== undefined && rule.resourceNames.includes(a.name)))
  );
}

/**
 * Whether the chart's rendered RBAC lets the operator's ServiceAccount make this request:
 * a ClusterRole (bound by a ClusterRoleBinding) everywhere, a Role only in its namespace.
 */
export function allowed(rbac: Doc[], a: Attributes): boolean {
  const clusterRules = rbac.filter((d) => d.kind === "ClusterRole").flatMap((r) => r.rules as Rule[]);
  if (clusterRules.some((r) => ruleAllows(r, a))) return true;
  return rbac
    .filter((d) => d.kind === "Role" && d.metadata.namespace === a.namespace)
    .some((role) => (role.rules as Rule[]).some((r) => ruleAllows(r, a)));
}

export const describeRequest = (a: Attributes) =>
  `${a.verb} ${a.group || "core"}/${a.resource}${a.subresource ? `/${a.subresource}` : ""}${
    a.namespace ? ` in ${a.namespace}` : " (cluster-wide)"
  }`;
