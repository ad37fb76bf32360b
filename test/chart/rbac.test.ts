import { type Doc, FULL_VALUES, ofKind, render } from "./helm.ts";

const NS = "spillway-system";
const setups = [
  { name: "default values", docs: render({ namespace: NS }) },
  { name: "the full example values", docs: render({ namespace: NS, files: [FULL_VALUES] }) },
];

type Rule = { apiGroups?: string[]; resources?: string[]; verbs: string[]; nonResourceURLs?: string[] };
const rulesOf = (docs: Doc[], kind: "ClusterRole" | "Role"): Rule[] =>
  ofKind(docs, kind).flatMap((r) => r.rules as Rule[]);
/** One line per (group, resource): verbs sorted, for comparison with the contract. */
const table = (rules: Rule[]) =>
  Object.fromEntries(
    rules.flatMap((r) =>
      (r.resources ?? []).map((res) => [`${r.apiGroups?.[0] || "core"}/${res}`, [...r.verbs].sort()]),
    ),
  );
const sorted = (...v: string[]) => v.sort();

describe.each(setups)("rendered RBAC with $name", ({ docs }) => {
  test("no wildcard verb, resource or API group, and no non-resource URLs", () => {
    for (const r of [...rulesOf(docs, "ClusterRole"), ...rulesOf(docs, "Role")]) {
      expect(r.verbs).not.toContain("*");
      expect(r.resources ?? []).not.toContain("*");
      expect(r.apiGroups ?? []).not.toContain("*");
      expect(r.nonResourceURLs).toBeUndefined();
      expect((r.resources ?? []).length).toBeGreaterThan(0);
    }
  });

  test("no cluster-wide access to Secrets", () => {
    const clusterResources = rulesOf(docs, "ClusterRole").flatMap((r) => r.resources ?? []);
    expect(clusterResources).not.toContain("secrets");
    expect(clusterResources.filter((r) => r.startsWith("secrets"))).toEqual([]);
  });

  test("Secrets only through a Role in the operator's namespace, bound to the operator", () => {
    const roles = ofKind(docs, "Role").filter((r) =>
      (r.rules as Rule[]).some((rule) => rule.resources?.includes("secrets")),
    );
    expect(roles).toHaveLength(1);
    expect(roles[0]!.metadata.namespace).toBe(NS);
    const binding = ofKind(docs, "RoleBinding").find((b) => b.roleRef.name === roles[0]!.metadata.name)!;
    expect(binding.metadata.namespace).toBe(NS);
    expect(binding.roleRef.kind).toBe("Role");
    const sa = ofKind(docs, "ServiceAccount")[0]!;
    expect(binding.subjects).toEqual([{ kind: "ServiceAccount", name: sa.metadata.name, namespace: NS }]);
  });

  test("the ClusterRole grants exactly the spillway.dev kinds, events and namespaces the operator uses", () => {
    expect(table(rulesOf(docs, "ClusterRole"))).toEqual({
      "spillway.dev/trainingruns": sorted("get", "list", "watch", "update", "patch"),
      "spillway.dev/trainingruns/status": sorted("get", "update", "patch"),
      "spillway.dev/trainingruns/finalizers": ["update"],
      "spillway.dev/capacityoffers": sorted("get", "list", "watch", "create", "delete"),
      "spillway.dev/capacityoffers/status": sorted("get", "update", "patch"),
      "spillway.dev/cloudproviders": sorted("get", "list", "watch"),
      "spillway.dev/cloudproviders/status": sorted("get", "update", "patch"),
      "spillway.dev/datasets": sorted("get", "list", "watch", "update", "patch"),
      "spillway.dev/datasets/status": sorted("get", "update", "patch"),
      "spillway.dev/provisionedclusters": sorted(
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
      ),
      "spillway.dev/provisionedclusters/status": sorted("get", "update", "patch"),
      "spillway.dev/provisionedclusters/finalizers": ["update"],
      "core/events": sorted("create", "patch"),
      "core/namespaces": sorted("get", "list", "watch"),
    });
  });

  test("the CapacityOffer ledger cannot be rewritten: the operator may create and expire offers, not update their spec", () => {
    const offers = table(rulesOf(docs, "ClusterRole"))["spillway.dev/capacityoffers"];
    expect(offers).not.toContain("update");
    expect(offers).not.toContain("patch");
  });

  test("the namespaced Role grants Secrets and leader-election Leases only", () => {
    expect(table(rulesOf(docs, "Role"))).toEqual({
      "core/secrets": sorted("get", "list", "watch", "create", "update", "patch", "delete"),
      "coordination.k8s.io/leases": sorted("get", "list", "watch", "create", "update", "patch", "delete"),
    });
  });

  test("the ClusterRoleBinding binds the ClusterRole to the operator's ServiceAccount only", () => {
    const [crb] = ofKind(docs, "ClusterRoleBinding");
    const [cr] = ofKind(docs, "ClusterRole");
    const [sa] = ofKind(docs, "ServiceAccount");
    expect(crb!.roleRef).toEqual({
      apiGroup: "rbac.authorization.k8s.io",
      kind: "ClusterRole",
      name: cr!.metadata.name,
    });
    expect(crb!.subjects).toEqual([{ kind: "ServiceAccount", name: sa!.metadata.name, namespace: NS }]);
    const [deploy] = ofKind(docs, "Deployment");
    expect(deploy!.spec.template.spec.serviceAccountName).toBe(sa!.metadata.name);
  });
});

test("rbac.namespaceJobs (the sandbox) adds Jobs to the namespaced Role, never to the ClusterRole", () => {
  const docs = render({ namespace: NS, setJson: ["rbac.namespaceJobs=true"] });
  expect(table(rulesOf(docs, "Role"))["batch/jobs"]).toEqual(
    sorted("get", "list", "watch", "create", "delete"),
  );
  expect(table(rulesOf(docs, "ClusterRole"))["batch/jobs"]).toBeUndefined();
});

test("rbac.create=false renders no RBAC objects", () => {
  const docs = render({ setJson: ["rbac.create=false"] });
  for (const kind of ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]) {
    expect(ofKind(docs, kind)).toEqual([]);
  }
});
