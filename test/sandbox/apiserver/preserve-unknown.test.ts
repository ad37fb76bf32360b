/**
 * Pruning follows the structural-schema rules of a real API server (finding 4 of
 * docs/reliability.md): inside a `x-kubernetes-preserve-unknown-fields` node (the
 * TrainingRun's pod spec) undeclared fields are kept — on create, update, merge and JSON
 * patch, server-side apply and a status write — while a nested node that declares its own
 * `properties` without preserving is still validated and pruned.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { parse } from "yaml";
import { type ApiServer, startApiServer } from "../../../operator/sandbox/apiserver/index.ts";
import { ROOT } from "../../helpers/examples.ts";

let server: ApiServer;
const RUNS = "/apis/spillway.dev/v1alpha1/namespaces/default/trainingruns";

/** Pod-level fields Spillway refuses: they must reach the operator, not be pruned. */
const POD_FIELDS = {
  hostNetwork: true,
  hostPID: true,
  nodeName: "node-1",
  volumes: [{ name: "root", hostPath: { path: "/" } }],
};

async function call(
  method: string,
  path: string,
  body?: unknown,
  contentType = "application/json",
): Promise<{ status: number; warning: string; body: Record<string, any> }> {
  const r = await fetch(`${server.url}${path}`, {
    method,
    headers: { "content-type": contentType },
    ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }),
  });
  return { status: r.status, warning: r.headers.get("warning") ?? "", body: (await r.json()) as any };
}

function run(name: string, podSpec: Record<string, unknown> = {}): Record<string, any> {
  return {
    apiVersion: "spillway.dev/v1alpha1",
    kind: "TrainingRun",
    metadata: { name },
    spec: {
      template: { spec: { containers: [{ name: "t", image: "x" }], ...podSpec } },
      resources: { gpu: { type: "H100", count: 8 } },
    },
  };
}

beforeAll(async () => {
  server = await startApiServer({ name: "preserve" });
  const crd = parse(readFileSync(join(ROOT, "crds", "spillway.dev_trainingruns.yaml"), "utf8"));
  expect((await call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)).status).toBe(
    201,
  );
  await call("POST", "/api/v1/namespaces", {
    apiVersion: "v1",
    kind: "Namespace",
    metadata: { name: "default" },
  });
});

afterAll(async () => {
  await server?.close();
});

describe("x-kubernetes-preserve-unknown-fields", () => {
  test("pod-level fields are kept on create, with no unknown-field warning", async () => {
    const created = await call("POST", RUNS, run("create", POD_FIELDS));
    expect(created.status).toBe(201);
    expect(created.warning).toBe("");
    expect(created.body.spec.template.spec).toMatchObject(POD_FIELDS);
    const got = await call("GET", `${RUNS}/create`);
    expect(got.body.spec.template.spec).toMatchObject(POD_FIELDS);
  });

  test("they are kept on update, merge patch, JSON patch and server-side apply", async () => {
    const created = await call("POST", RUNS, run("writes"));
    expect(created.status).toBe(201);
    const updated = await call("PUT", `${RUNS}/writes`, {
      ...created.body,
      spec: {
        ...created.body.spec,
        template: { spec: { ...created.body.spec.template.spec, hostPID: true } },
      },
    });
    expect([updated.status, updated.body.spec.template.spec.hostPID]).toEqual([200, true]);
    const merged = await call(
      "PATCH",
      `${RUNS}/writes`,
      { spec: { template: { spec: { hostNetwork: true } } } },
      "application/merge-patch+json",
    );
    expect([merged.status, merged.body.spec.template.spec.hostNetwork]).toEqual([200, true]);
    const patched = await call(
      "PATCH",
      `${RUNS}/writes`,
      [{ op: "add", path: "/spec/template/spec/nodeName", value: "node-1" }],
      "application/json-patch+json",
    );
    expect([patched.status, patched.body.spec.template.spec.nodeName]).toEqual([200, "node-1"]);
    const applied = await call(
      "PATCH",
      `${RUNS}/applied?fieldManager=test`,
      run("applied", { volumes: POD_FIELDS.volumes }),
      "application/apply-patch+yaml",
    );
    expect(applied.status).toBe(201);
    expect(applied.body.spec.template.spec.volumes).toEqual(POD_FIELDS.volumes);
    // A status write (what the operator does) leaves the spec's preserved fields alone.
    const status = await call("PUT", `${RUNS}/writes/status`, {
      ...patched.body,
      status: { phase: "Pending" },
    });
    expect(status.status).toBe(200);
    expect(status.body.spec.template.spec).toMatchObject({
      hostPID: true,
      hostNetwork: true,
      nodeName: "node-1",
    });
  });

  test("fields nested under the preserved node that declare properties are still validated", async () => {
    // containers[].name has a pattern and image is required, inside the preserved pod spec.
    const bad = run("bad-container");
    bad.spec.template.spec.containers = [{ name: "Not_A_DNS_Label", image: "" }];
    const r = await call("POST", RUNS, bad);
    expect(r.status).toBe(422);
    const causes = (r.body.details?.causes ?? []).map((c: { field: string }) => c.field);
    expect(causes).toEqual(
      expect.arrayContaining([
        "spec.template.spec.containers[0].name",
        "spec.template.spec.containers[0].image",
      ]),
    );
  });

  test("outside preserved nodes unknown fields are still pruned, with a warning", async () => {
    const body = run("pruned");
    body.spec.resources.gpu.colour = "blue";
    body.spec.template.spec.containers[0].securityContext = { privileged: true };
    const r = await call("POST", RUNS, body);
    expect(r.status).toBe(201);
    expect(r.warning).toMatch(/unknown field \\"spec\.resources\.gpu\.colour\\"/);
    expect(r.body.spec.resources.gpu.colour).toBeUndefined();
    // The container item preserves unknown fields itself, so its securityContext stays.
    expect(r.body.spec.template.spec.containers[0].securityContext).toEqual({ privileged: true });
  });

  test("the structural rule of the Kubernetes docs: a preserved node keeps its unknown fields, a nested node with properties is pruned", async () => {
    // The example of "Pruning versus preserving unknown fields": json preserves, json.spec
    // declares foo and bar only, so json.extra is kept and json.spec.baz is pruned.
    const crd = {
      apiVersion: "apiextensions.k8s.io/v1",
      kind: "CustomResourceDefinition",
      metadata: { name: "widgets.example.dev" },
      spec: {
        group: "example.dev",
        scope: "Namespaced",
        names: { kind: "Widget", plural: "widgets", singular: "widget", listKind: "WidgetList" },
        versions: [
          {
            name: "v1",
            served: true,
            storage: true,
            schema: {
              openAPIV3Schema: {
                type: "object",
                properties: {
                  json: {
                    type: "object",
                    "x-kubernetes-preserve-unknown-fields": true,
                    properties: {
                      spec: {
                        type: "object",
                        properties: { foo: { type: "string" }, bar: { type: "integer", maximum: 5 } },
                      },
                    },
                  },
                },
              },
            },
          },
        ],
      },
    };
    expect((await call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)).status).toBe(
      201,
    );
    const widgets = "/apis/example.dev/v1/namespaces/default/widgets";
    const ok = await call("POST", widgets, {
      apiVersion: "example.dev/v1",
      kind: "Widget",
      metadata: { name: "w" },
      json: { extra: { deep: [1, 2] }, spec: { foo: "a", bar: 1, baz: true } },
    });
    expect(ok.status).toBe(201);
    expect(ok.body.json).toEqual({ extra: { deep: [1, 2] }, spec: { foo: "a", bar: 1 } });
    expect(ok.warning).toMatch(/json\.spec\.baz/);
    const bad = await call("POST", widgets, {
      apiVersion: "example.dev/v1",
      kind: "Widget",
      metadata: { name: "w2" },
      json: { spec: { bar: 9 } },
    });
    expect(bad.status).toBe(422);
    expect(JSON.stringify(bad.body.details?.causes)).toContain("json.spec.bar");
  });
});
