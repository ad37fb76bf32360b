/**
 * Object lifecycle over HTTP: finalizers hold a deletion, owners take their dependents with
 * them, state survives a restart from the state directory, several servers share a process.
 */
import { appendFileSync, mkdtempSync, rmSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { type ApiServer, startApiServer } from "../../../operator/sandbox/apiserver/index.ts";
import { ROOT } from "../../helpers/examples.ts";
import { waitFor } from "./helpers.ts";

/** A tiny JSON client for one server (the raw HTTP view of the API). */
function client(server: ApiServer) {
  const call = async (method: string, path: string, body?: unknown, contentType = "application/json") => {
    const res = await fetch(`${server.url}${path}`, {
      method,
      headers: { "Content-Type": contentType, Accept: "application/json" },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as any };
  };
  return {
    call,
    get: (path: string) => call("GET", path),
    post: (path: string, body: unknown) => call("POST", path, body),
    merge: (path: string, body: unknown) => call("PATCH", path, body, "application/merge-patch+json"),
    del: (path: string, body?: unknown) => call("DELETE", path, body),
  };
}

function configMap(name: string, extra: Record<string, unknown> = {}) {
  return { apiVersion: "v1", kind: "ConfigMap", metadata: { name, ...extra }, data: { k: name } };
}

const CM = "/api/v1/namespaces/default/configmaps";

describe("finalizers", () => {
  let server: ApiServer;
  beforeAll(async () => {
    server = await startApiServer({ name: "finalizers" });
  });
  afterAll(() => server.close());

  it("hold a deletion (deletionTimestamp set, object kept) until the last one is removed", async () => {
    const api = client(server);
    await api.post(CM, configMap("held", { finalizers: ["spillway.dev/cleanup", "example.com/other"] }));
    const dryRun = await api.del(`${CM}/held?dryRun=All`);
    expect(dryRun.status).toBe(200);
    expect((await api.get(`${CM}/held`)).body.metadata.deletionTimestamp).toBeUndefined();
    const deleting = await api.del(`${CM}/held`);
    expect(deleting.status).toBe(202);
    expect(deleting.body.metadata.deletionTimestamp).toEqual(expect.any(String));

    const still = await api.get(`${CM}/held`);
    expect(still.status).toBe(200);
    expect(still.body.metadata.deletionTimestamp).toBe(deleting.body.metadata.deletionTimestamp);
    // No new finalizer can be added while deleting.
    const add = await api.merge(`${CM}/held`, {
      metadata: { finalizers: ["spillway.dev/cleanup", "example.com/other", "late/one"] },
    });
    expect(add.status).toBe(403);

    await api.merge(`${CM}/held`, { metadata: { finalizers: ["example.com/other"] } });
    expect((await api.get(`${CM}/held`)).status).toBe(200);
    await api.merge(`${CM}/held`, { metadata: { finalizers: null } });
    const gone = await api.get(`${CM}/held`);
    expect(gone.status).toBe(404);
    expect(gone.body).toMatchObject({ kind: "Status", reason: "NotFound", code: 404 });
  });
});

describe("owner references", () => {
  let server: ApiServer;
  beforeAll(async () => {
    server = await startApiServer({ name: "gc" });
  });
  afterAll(() => server.close());

  async function ownerWithDependents(api: ReturnType<typeof client>, owner: string, n: number) {
    const created = await api.post(CM, configMap(owner));
    const ref = { apiVersion: "v1", kind: "ConfigMap", name: owner, uid: created.body.metadata.uid };
    for (let i = 0; i < n; i++) {
      const dep = await api.post(CM, configMap(`${owner}-dep-${i}`, { ownerReferences: [ref] }));
      expect(dep.status).toBe(201);
    }
  }

  async function names(api: ReturnType<typeof client>) {
    return (await api.get(CM)).body.items.map((o: any) => o.metadata.name) as string[];
  }

  it("deleting an owner removes its dependents (background)", async () => {
    const api = client(server);
    await ownerWithDependents(api, "bg", 3);
    expect(await names(api)).toEqual(["bg", "bg-dep-0", "bg-dep-1", "bg-dep-2"]);
    expect((await api.del(`${CM}/bg`)).status).toBe(200);
    expect(await names(api)).toEqual([]);
  });

  it("foreground deletion removes the dependents before the owner", async () => {
    const api = client(server);
    await ownerWithDependents(api, "fg", 2);
    // A finalizer on a dependent keeps the owner waiting, as `foregroundDeletion` requires.
    await api.merge(`${CM}/fg-dep-0`, { metadata: { finalizers: ["example.com/hold"] } });
    const r = await api.del(`${CM}/fg`, { propagationPolicy: "Foreground" });
    expect(r.status).toBe(202);
    expect(r.body.metadata.finalizers).toEqual(["foregroundDeletion"]);
    expect(await names(api)).toEqual(["fg", "fg-dep-0"]);
    await api.merge(`${CM}/fg-dep-0`, { metadata: { finalizers: null } });
    expect(await names(api)).toEqual([]);
  });

  it("orphan deletion keeps the dependents and drops their reference", async () => {
    const api = client(server);
    await ownerWithDependents(api, "orph", 1);
    await api.del(`${CM}/orph`, { propagationPolicy: "Orphan" });
    const dep = await api.get(`${CM}/orph-dep-0`);
    expect(dep.status).toBe(200);
    expect(dep.body.metadata.ownerReferences).toBeUndefined();
    await api.del(`${CM}/orph-dep-0`);
  });
});

describe("persistence", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "spillway-apiserver-state-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("keeps objects, custom resource definitions and the resourceVersion sequence across a restart", async () => {
    const first = await startApiServer({ name: "persist", stateDir: dir });
    const api = client(first);
    const crdText = await readFile(join(ROOT, "crds", "spillway.dev_cloudproviders.yaml"), "utf8");
    const crd = parseAllDocuments(crdText)[0]!.toJS();
    expect((await api.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)).status).toBe(201);
    const cpDoc = parseAllDocuments(
      await readFile(join(ROOT, "examples", "10-cloudprovider-azure.yaml"), "utf8"),
    )
      .map((d) => d.toJS())
      .find((d) => d?.kind === "CloudProvider");
    expect((await api.post("/apis/spillway.dev/v1alpha1/cloudproviders", cpDoc)).status).toBe(201);
    for (let i = 0; i < 50; i++) await api.post(CM, configMap(`cm-${i}`));
    await api.del(`${CM}/cm-7`);
    const before = await api.get(`${CM}/cm-3`);
    await first.close();

    const second = await startApiServer({ name: "persist", stateDir: dir });
    try {
      const api2 = client(second);
      const after = await api2.get(`${CM}/cm-3`);
      expect(after.body).toEqual(before.body);
      const list = await api2.get(CM);
      expect(list.body.items).toHaveLength(49);
      expect(list.body.items.map((o: any) => o.metadata.name)).not.toContain("cm-7");
      const cp = await api2.get(`/apis/spillway.dev/v1alpha1/cloudproviders/${cpDoc.metadata.name}`);
      expect(cp.status).toBe(200);
      expect(cp.body.spec).toEqual(expect.objectContaining(cpDoc.spec));
      // New writes continue the sequence: no resourceVersion is ever reused.
      const created = await api2.post(CM, configMap("after-restart"));
      expect(Number(created.body.metadata.resourceVersion)).toBeGreaterThan(
        Number(before.body.metadata.resourceVersion),
      );
      await second.flush();
    } finally {
      await second.close();
    }
    const third = await startApiServer({ name: "persist", stateDir: dir });
    try {
      expect((await client(third).get(`${CM}/after-restart`)).status).toBe(200);
    } finally {
      await third.close();
    }
  });
});

describe("persistence after a crash", () => {
  it("loads the snapshot and the change log, ignoring a torn last line", async () => {
    const dir = mkdtempSync(join(tmpdir(), "spillway-apiserver-torn-"));
    try {
      const first = await startApiServer({ name: "torn", stateDir: dir });
      await client(first).post(CM, configMap("kept"));
      await first.close();
      // A crash mid-append leaves half a line behind.
      appendFileSync(join(dir, "changes.jsonl"), '{"rv":999,"type":"ADDED","resource":"/configmaps","obj');
      const second = await startApiServer({ name: "torn", stateDir: dir });
      try {
        expect((await client(second).get(`${CM}/kept`)).status).toBe(200);
        expect((await client(second).post(CM, configMap("more"))).status).toBe(201);
      } finally {
        await second.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("several servers in one process", () => {
  it("are independent, each with its own kubeconfig", async () => {
    const [a, b] = await Promise.all([
      startApiServer({ name: "mgmt" }),
      startApiServer({ name: "azure-eastus" }),
    ]);
    try {
      expect(a.url).not.toBe(b.url);
      await client(a).post(CM, configMap("only-in-a"));
      expect((await client(a).get(`${CM}/only-in-a`)).status).toBe(200);
      expect((await client(b).get(`${CM}/only-in-a`)).status).toBe(404);
      expect(a.kubeconfig()).toContain("current-context: mgmt");
      expect(b.kubeconfig()).toContain(`server: ${b.url}`);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it("require the bearer token of their kubeconfig when given one", async () => {
    const s = await startApiServer({ name: "locked", token: "t0ken" });
    try {
      expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
      const anonymous = await fetch(`${s.url}${CM}`);
      expect(anonymous.status).toBe(401);
      expect(await anonymous.json()).toMatchObject({ kind: "Status", reason: "Unauthorized", code: 401 });
      const authorized = await fetch(`${s.url}${CM}`, { headers: { Authorization: "Bearer t0ken" } });
      expect(authorized.status).toBe(200);
      expect(s.kubeconfig()).toContain("token: t0ken");
    } finally {
      await s.close();
    }
  });

  it("close promptly with watches open and release the port", async () => {
    const s = await startApiServer({ name: "closing" });
    const controller = new AbortController();
    const res = await fetch(`${s.url}${CM}?watch=1`, { signal: controller.signal });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    await s.close();
    // The stream ends from the server side.
    let done = false;
    await waitFor(async () => {
      try {
        const r = await reader.read();
        done = r.done;
      } catch {
        done = true;
      }
      return done;
    });
    expect(done).toBe(true);
    await expect(fetch(`${s.url}/healthz`)).rejects.toThrow();
  });
});
