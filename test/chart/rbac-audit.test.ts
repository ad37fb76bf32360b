/** The RBAC decision the operator audit relies on, on requests with known answers. */
import { render } from "./helm.ts";
import { allowed, requestAttributes } from "./rbac-audit.ts";

const NS = "spillway-system";
const rbac = render({ namespace: NS }).filter((d) => d.kind === "ClusterRole" || d.kind === "Role");
const may = (method: string, url: string) => allowed(rbac, requestAttributes(method, url)!);

test("requests map to RBAC attributes as the API server maps them", () => {
  expect(
    requestAttributes("GET", "/apis/spillway.dev/v1alpha1/trainingruns?watch=true&resourceVersion=5"),
  ).toEqual({
    verb: "watch",
    group: "spillway.dev",
    resource: "trainingruns",
  });
  expect(
    requestAttributes("PUT", "/apis/spillway.dev/v1alpha1/namespaces/ml/trainingruns/r1/status"),
  ).toEqual({
    verb: "update",
    group: "spillway.dev",
    resource: "trainingruns",
    subresource: "status",
    namespace: "ml",
    name: "r1",
  });
  expect(requestAttributes("GET", "/api/v1/namespaces/x/secrets")).toMatchObject({
    verb: "list",
    namespace: "x",
  });
  expect(requestAttributes("DELETE", "/api/v1/namespaces/x/secrets")).toMatchObject({
    verb: "deletecollection",
  });
  expect(requestAttributes("GET", "/version")).toBeUndefined();
  expect(requestAttributes("GET", "/apis/spillway.dev/v1alpha1")).toBeUndefined();
});

test("the chart's RBAC allows the operator's Secrets and Leases in its namespace only", () => {
  expect(may("GET", `/api/v1/namespaces/${NS}/secrets?watch=true`)).toBe(true);
  expect(may("GET", "/api/v1/namespaces/kube-system/secrets/x")).toBe(false);
  expect(may("GET", "/api/v1/secrets")).toBe(false);
  expect(may("PUT", `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases/spillway-operator`)).toBe(true);
  expect(may("PUT", "/apis/coordination.k8s.io/v1/namespaces/default/leases/spillway-operator")).toBe(false);
});

test("the chart's RBAC allows the spillway.dev verbs it lists and nothing more", () => {
  expect(may("PATCH", "/apis/spillway.dev/v1alpha1/namespaces/ml/trainingruns/r1")).toBe(true);
  expect(may("POST", "/apis/spillway.dev/v1alpha1/namespaces/ml/capacityoffers")).toBe(true);
  expect(may("PATCH", "/apis/spillway.dev/v1alpha1/namespaces/ml/capacityoffers/o1")).toBe(false);
  expect(may("DELETE", "/apis/spillway.dev/v1alpha1/cloudproviders/azure")).toBe(false);
  expect(may("POST", "/api/v1/namespaces")).toBe(false);
});
