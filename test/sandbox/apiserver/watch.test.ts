/**
 * The watch protocol and the write formats over raw HTTP: initial events, resuming from a
 * resourceVersion, bookmarks, 410 Gone as an ERROR event, timeoutSeconds, selectors; merge,
 * JSON and strategic merge patches; server-side apply with field managers; discovery.
 */
import { type ApiServer, startApiServer } from "../../../operator/sandbox/apiserver/index.ts";

let server: ApiServer;
beforeAll(async () => {
  server = await startApiServer({ name: "watch-test", bookmarkIntervalMs: 50 });
});
afterAll(() => server.close());

const CM = "/api/v1/namespaces/default/configmaps";

async function call(method: string, path: string, body?: unknown, contentType = "application/json") {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: { "Content-Type": contentType },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as any };
}

interface WatchEvent {
  type: string;
  object: any;
}

/**
 * Opens a watch (resolves once the server answered, so the watch is registered) and returns
 * a collector: `collect(until)` reads events until `until` holds or the stream ends.
 */
async function openWatch(query: string) {
  const controller = new AbortController();
  const res = await fetch(`${server.url}${CM}?watch=1&${query}`, { signal: controller.signal });
  expect(res.status).toBe(200);
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  return {
    async collect(
      until: (events: WatchEvent[]) => boolean,
    ): Promise<{ events: WatchEvent[]; ended: boolean }> {
      const events: WatchEvent[] = [];
      let buffer = "";
      let ended = false;
      while (!until(events)) {
        const { value, done } = await reader.read();
        if (done) {
          ended = true;
          break;
        }
        buffer += decoder.decode(value, { stream: true });
        let nl = buffer.indexOf("\n");
        while (nl >= 0) {
          events.push(JSON.parse(buffer.slice(0, nl)));
          buffer = buffer.slice(nl + 1);
          nl = buffer.indexOf("\n");
        }
      }
      if (!ended) controller.abort();
      return { events, ended };
    },
  };
}

async function watch(query: string, until: (events: WatchEvent[]) => boolean) {
  return (await openWatch(query)).collect(until);
}

const cm = (name: string, labels: Record<string, string> = {}, data: Record<string, string> = {}) => ({
  apiVersion: "v1",
  kind: "ConfigMap",
  metadata: { name, labels },
  data,
});

describe("watch", () => {
  it("starts with ADDED events for existing objects, then streams changes", async () => {
    await call("POST", CM, cm("w-existing"));
    const w = await openWatch("labelSelector=");
    await call("POST", CM, cm("w-new"));
    const { events } = await w.collect((evs) => evs.some((e) => e.object.metadata?.name === "w-new"));
    expect(events[0]).toMatchObject({ type: "ADDED", object: { metadata: { name: "w-existing" } } });
    expect(events.at(-1)).toMatchObject({ type: "ADDED", object: { metadata: { name: "w-new" } } });
  });

  it("resumes from a resourceVersion with exactly the changes after it, filtered by label", async () => {
    const start = (await call("GET", CM)).body.metadata.resourceVersion;
    await call("POST", CM, cm("r-1", { app: "x" }));
    await call("POST", CM, cm("r-2", { app: "y" }));
    await call("PATCH", `${CM}/r-1`, { data: { v: "2" } }, "application/merge-patch+json");
    await call("DELETE", `${CM}/r-1`);
    const { events } = await watch(
      `resourceVersion=${start}&labelSelector=app%3Dx`,
      (evs) => evs.length >= 3,
    );
    expect(events.map((e) => `${e.type} ${e.object.metadata.name}`)).toEqual([
      "ADDED r-1",
      "MODIFIED r-1",
      "DELETED r-1",
    ]);
    const rvs = events.map((e) => Number(e.object.metadata.resourceVersion));
    expect([...rvs].sort((a, b) => a - b)).toEqual(rvs);
  });

  it("shows an object entering a label selector as ADDED and leaving it as DELETED", async () => {
    const start = (await call("GET", CM)).body.metadata.resourceVersion;
    await call("POST", CM, cm("mover", { app: "other" }));
    const relabel = (app: string) =>
      call("PATCH", `${CM}/mover`, { metadata: { labels: { app } } }, "application/merge-patch+json");
    await relabel("picked");
    await call("PATCH", `${CM}/mover`, { data: { v: "1" } }, "application/merge-patch+json");
    await relabel("other");
    await relabel("elsewhere");
    const { events } = await watch(
      `resourceVersion=${start}&labelSelector=app%3Dpicked`,
      (evs) => evs.length >= 3,
    );
    expect(events.map((e) => `${e.type} ${e.object.metadata.labels.app}`)).toEqual([
      "ADDED picked",
      "MODIFIED picked",
      "DELETED other",
    ]);
  });

  it("sends BOOKMARK events carrying the current resourceVersion when allowed", async () => {
    const rv = (await call("GET", CM)).body.metadata.resourceVersion;
    const { events } = await watch(`resourceVersion=${rv}&allowWatchBookmarks=true`, (evs) =>
      evs.some((e) => e.type === "BOOKMARK"),
    );
    const bookmark = events.find((e) => e.type === "BOOKMARK")!;
    expect(bookmark.object).toMatchObject({ kind: "ConfigMap", apiVersion: "v1" });
    expect(Number(bookmark.object.metadata.resourceVersion)).toBeGreaterThanOrEqual(Number(rv));
  });

  it("answers a watch from an expired resourceVersion with a 410 Expired ERROR event and ends it", async () => {
    const rv = (await call("GET", CM)).body.metadata.resourceVersion;
    server.expireWatches();
    const { events, ended } = await watch(`resourceVersion=${rv}`, () => false);
    expect(ended).toBe(true);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      type: "ERROR",
      object: { kind: "Status", status: "Failure", reason: "Expired", code: 410 },
    });
    // A fresh list gives a version that can be watched again.
    const fresh = (await call("GET", CM)).body.metadata.resourceVersion;
    await call("POST", CM, cm("after-expiry"));
    const again = await watch(`resourceVersion=${fresh}`, (evs) => evs.length >= 1);
    expect(again.events[0]).toMatchObject({ type: "ADDED", object: { metadata: { name: "after-expiry" } } });
  });

  it("streams Table rows to `kubectl get -w` style watches, with column definitions first", async () => {
    const rv = (await call("GET", CM)).body.metadata.resourceVersion;
    const res = await fetch(`${server.url}${CM}?watch=1&resourceVersion=${rv}`, {
      headers: { Accept: "application/json;as=Table;g=meta.k8s.io;v=v1" },
    });
    await call("POST", CM, cm("t-1", {}, { a: "1", b: "2" }));
    await call("POST", CM, cm("t-2"));
    const reader = res.body!.getReader();
    let text = "";
    while (text.split("\n").length < 3) text += new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    const [first, second] = text.split("\n").map((l) => JSON.parse(l || "null"));
    expect(first.object.kind).toBe("Table");
    expect(first.object.columnDefinitions.map((c: any) => c.name)).toEqual(["Name", "Data", "Age"]);
    expect(first.object.rows[0].cells.slice(0, 2)).toEqual(["t-1", 2]);
    expect(second.object.columnDefinitions).toEqual([]);
    expect(second.object.rows[0].cells[0]).toBe("t-2");
  });

  it("ends the stream after timeoutSeconds", async () => {
    const rv = (await call("GET", CM)).body.metadata.resourceVersion;
    const { ended } = await watch(`resourceVersion=${rv}&timeoutSeconds=1`, () => false);
    expect(ended).toBe(true);
  });
});

describe("writes", () => {
  it("applies JSON patch, and strategic merge patch merging containers by name", async () => {
    await call("POST", CM, cm("jp", {}, { a: "1" }));
    const jp = await call(
      "PATCH",
      `${CM}/jp`,
      [
        { op: "add", path: "/data/b", value: "2" },
        { op: "remove", path: "/data/a" },
      ],
      "application/json-patch+json",
    );
    expect(jp.body.data).toEqual({ b: "2" });
    const failing = await call(
      "PATCH",
      `${CM}/jp`,
      [{ op: "test", path: "/data/b", value: "x" }],
      "application/json-patch+json",
    );
    expect(failing.status).toBe(422);

    const pods = "/api/v1/namespaces/default/pods";
    await call("POST", pods, {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "p" },
      spec: {
        containers: [
          { name: "a", image: "a:1" },
          { name: "b", image: "b:1" },
        ],
      },
    });
    const smp = await call(
      "PATCH",
      `${pods}/p`,
      { spec: { containers: [{ name: "b", image: "b:2" }] } },
      "application/strategic-merge-patch+json",
    );
    expect(smp.body.spec.containers).toEqual([
      { name: "a", image: "a:1" },
      { name: "b", image: "b:2" },
    ]);
    expect(smp.body.status.phase).toBe("Pending");
  });

  it("server-side apply: creates, records the manager, conflicts with another manager unless forced", async () => {
    const path = `${CM}/ssa?fieldManager=alice`;
    const yaml = (v: string) =>
      `apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  owned: "${v}"\n`;
    const created = await call("PATCH", path, yaml("1"), "application/apply-patch+yaml");
    expect(created.status).toBe(201);
    expect(created.body.data).toEqual({ owned: "1" });
    expect(created.body.metadata.managedFields[0]).toMatchObject({ manager: "alice", operation: "Apply" });

    const conflict = await call(
      "PATCH",
      `${CM}/ssa?fieldManager=bob`,
      yaml("2"),
      "application/apply-patch+yaml",
    );
    expect(conflict.status).toBe(409);
    expect(conflict.body.reason).toBe("Conflict");
    expect(conflict.body.message).toContain("alice");

    const forced = await call(
      "PATCH",
      `${CM}/ssa?fieldManager=bob&force=true`,
      yaml("2"),
      "application/apply-patch+yaml",
    );
    expect(forced.status).toBe(200);
    expect(forced.body.data).toEqual({ owned: "2" });
  });

  it("rejects a stale resourceVersion on update with 409, and a missing namespace with 404", async () => {
    const created = await call("POST", CM, cm("stale"));
    await call("PATCH", `${CM}/stale`, { data: { x: "1" } }, "application/merge-patch+json");
    const stale = await call("PUT", `${CM}/stale`, { ...created.body, data: { x: "2" } });
    expect(stale.status).toBe(409);
    expect(stale.body).toMatchObject({ kind: "Status", reason: "Conflict", code: 409 });
    const missingNs = await call("POST", "/api/v1/namespaces/nope/configmaps", cm("x"));
    expect(missingNs.status).toBe(404);
  });
});

describe("discovery", () => {
  it("serves a CRD's group in /apis, its resources, and its OpenAPI v3 document once it is created", async () => {
    const crd = {
      apiVersion: "apiextensions.k8s.io/v1",
      kind: "CustomResourceDefinition",
      metadata: { name: "widgets.example.com" },
      spec: {
        group: "example.com",
        scope: "Namespaced",
        names: { kind: "Widget", plural: "widgets", singular: "widget", listKind: "WidgetList" },
        versions: [
          {
            name: "v1",
            served: true,
            storage: true,
            subresources: { status: {} },
            schema: {
              openAPIV3Schema: {
                type: "object",
                properties: {
                  spec: { type: "object", properties: { size: { type: "integer", default: 3 } } },
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
    const groups = (await call("GET", "/apis")).body.groups.map((g: any) => g.name);
    expect(groups).toContain("example.com");
    const resources = (await call("GET", "/apis/example.com/v1")).body.resources.map((r: any) => r.name);
    expect(resources).toEqual(["widgets", "widgets/status"]);
    const root = (await call("GET", "/openapi/v3")).body.paths;
    const doc = (await call("GET", root["apis/example.com/v1"].serverRelativeURL)).body;
    expect(doc.components.schemas["com.example.v1.Widget"]["x-kubernetes-group-version-kind"]).toEqual([
      { group: "example.com", version: "v1", kind: "Widget" },
    ]);
    const widget = await call("POST", "/apis/example.com/v1/namespaces/default/widgets", {
      apiVersion: "example.com/v1",
      kind: "Widget",
      metadata: { name: "w" },
      spec: {},
    });
    expect(widget.body.spec).toEqual({ size: 3 });
  });
});
