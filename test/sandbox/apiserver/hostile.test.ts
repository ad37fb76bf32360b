/**
 * Inputs the fuzz suite found answered with a 500 or a reset: a unicode unknown field (its
 * name goes into a `Warning` header) and a body over the size limit (the 413 must arrive).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import { parse } from "yaml";
import { type ApiServer, startApiServer } from "../../../operator/sandbox/apiserver/index.ts";
import { ROOT } from "../../helpers/examples.ts";

let server: ApiServer;
const RUNS = "/apis/spillway.dev/v1alpha1/namespaces/default/trainingruns";

beforeAll(async () => {
  server = await startApiServer({ name: "hostile" });
  const crd = parse(readFileSync(join(ROOT, "crds", "spillway.dev_trainingruns.yaml"), "utf8"));
  const r = await fetch(`${server.url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(crd),
  });
  expect(r.status).toBe(201);
  await fetch(`${server.url}/api/v1/namespaces`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ apiVersion: "v1", kind: "Namespace", metadata: { name: "default" } }),
  });
});

afterAll(async () => {
  await server?.close();
});

function run(name: string): Record<string, any> {
  return {
    apiVersion: "spillway.dev/v1alpha1",
    kind: "TrainingRun",
    metadata: { name },
    spec: {
      template: { spec: { containers: [{ name: "t", image: "x" }] } },
      resources: { gpu: { type: "H100", count: 8 } },
    },
  };
}

test("a unicode unknown field is pruned with an ASCII Warning header, not a 500", async () => {
  const body = run("unicode");
  body.spec.placement = { "🚀": "x" };
  const r = await fetch(`${server.url}${RUNS}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  expect(r.status).toBe(201);
  const warning = r.headers.get("warning") ?? "";
  expect(warning).toMatch(/unknown field/);
  expect(warning).toMatch(/\\ud83d\\ude80/);
  const stored = (await r.json()) as { spec: { placement?: Record<string, unknown> } };
  expect(stored.spec.placement?.["🚀"]).toBeUndefined();
});

test("a body over the limit gets 413, not a reset connection", async () => {
  const body = run("huge");
  body.metadata.annotations = { big: "x".repeat(4 * 1024 * 1024) };
  const r = await fetch(`${server.url}${RUNS}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  expect(r.status).toBe(413);
  // The server goes on serving.
  const ok = await fetch(`${server.url}${RUNS}`);
  expect(ok.status).toBe(200);
});

test("an object nested 2,000 levels deep is a 400 naming the limit, for a create and for a patch", async () => {
  let deep: unknown = "x";
  for (let i = 0; i < 2_000; i++) deep = { a: deep };
  const body = run("deep");
  body.spec.template.spec.containers[0].deep = deep;
  const created = await fetch(`${server.url}${RUNS}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  expect(created.status).toBe(400);
  expect(await created.text()).toMatch(/nested more than 200 levels/);
  const ok = await fetch(`${server.url}${RUNS}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(run("shallow")),
  });
  expect(ok.status).toBe(201);
  const patched = await fetch(`${server.url}${RUNS}/shallow`, {
    method: "PATCH",
    headers: { "content-type": "application/merge-patch+json" },
    body: JSON.stringify({
      metadata: { annotations: { a: "b" } },
      spec: { template: { spec: { x: deep } } },
    }),
  });
  expect(patched.status).toBe(400);
});
