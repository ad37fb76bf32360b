/**
 * The sandbox API server as @kubernetes/client-node sees it: informers (list + watch) see
 * changes in order and survive a forced watch expiry by relisting; optimistic concurrency
 * gives exactly one 409 to two writers of the same version.
 */
import {
  ApiException,
  CoreV1Api,
  KubeConfig,
  makeInformer,
  PatchStrategy,
  setHeaderOptions,
  type V1ConfigMap,
  type V1ConfigMapList,
} from "@kubernetes/client-node";
import { type ApiServer, startApiServer } from "../../../operator/sandbox/apiserver/index.ts";
import { waitFor } from "./helpers.ts";

let server: ApiServer;
let core: CoreV1Api;
let kc: KubeConfig;

beforeAll(async () => {
  server = await startApiServer({ name: "client-node-test" });
  kc = new KubeConfig();
  kc.loadFromString(server.kubeconfig());
  core = kc.makeApiClient(CoreV1Api);
});
afterAll(() => server.close());

function configMap(name: string, data: Record<string, string>): V1ConfigMap {
  return { apiVersion: "v1", kind: "ConfigMap", metadata: { name }, data };
}

describe("client-node against the sandbox API server", () => {
  it("serves a kubeconfig whose context is named after the server", () => {
    expect(kc.getCurrentContext()).toBe("client-node-test");
    expect(kc.getCurrentCluster()?.server).toBe(server.url);
  });

  it("lets an informer see adds, updates and deletes in order", async () => {
    const namespace = "informer-order";
    await core.createNamespace({ body: { metadata: { name: namespace } } });
    const informer = makeInformer<V1ConfigMap>(kc, `/api/v1/namespaces/${namespace}/configmaps`, () =>
      core.listNamespacedConfigMap({ namespace }),
    );
    const seen: string[] = [];
    informer.on("add", (o) => seen.push(`add ${o.metadata?.name} ${o.data?.v}`));
    informer.on("update", (o) => seen.push(`update ${o.metadata?.name} ${o.data?.v}`));
    informer.on("delete", (o) => seen.push(`delete ${o.metadata?.name}`));
    await informer.start();
    try {
      await core.createNamespacedConfigMap({ namespace, body: configMap("a", { v: "1" }) });
      await core.patchNamespacedConfigMap(
        { name: "a", namespace, body: { data: { v: "2" } } },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      );
      await core.createNamespacedConfigMap({ namespace, body: configMap("b", { v: "1" }) });
      await core.deleteNamespacedConfigMap({ name: "a", namespace });
      await waitFor(() => seen.length >= 4);
      expect(seen).toEqual(["add a 1", "update a 2", "add b 1", "delete a"]);
    } finally {
      await informer.stop();
    }
  });

  it("gives one of two conflicting updates a 409 Conflict", async () => {
    await core.createNamespacedConfigMap({ namespace: "default", body: configMap("contended", { v: "0" }) });
    const current = await core.readNamespacedConfigMap({ name: "contended", namespace: "default" });
    const attempts = await Promise.allSettled(
      ["x", "y"].map((v) =>
        core.replaceNamespacedConfigMap({
          name: "contended",
          namespace: "default",
          body: { ...current, data: { v } },
        }),
      ),
    );
    const ok = attempts.filter((a) => a.status === "fulfilled");
    const failed = attempts.filter((a): a is PromiseRejectedResult => a.status === "rejected");
    expect(ok).toHaveLength(1);
    expect(failed).toHaveLength(1);
    expect(failed[0]!.reason).toBeInstanceOf(ApiException);
    expect((failed[0]!.reason as ApiException<unknown>).code).toBe(409);
    const after = await core.readNamespacedConfigMap({ name: "contended", namespace: "default" });
    expect(Number(after.metadata?.resourceVersion)).toBeGreaterThan(
      Number(current.metadata?.resourceVersion),
    );
  });

  it("makes an informer relist after its watch version expired (410 Gone) and keep going", async () => {
    const namespace = "informer-expiry";
    await core.createNamespace({ body: { metadata: { name: namespace } } });
    await core.createNamespacedConfigMap({ namespace, body: configMap("before", { v: "1" }) });
    let lists = 0;
    const informer = makeInformer<V1ConfigMap>(
      kc,
      `/api/v1/namespaces/${namespace}/configmaps`,
      (): Promise<V1ConfigMapList> => {
        lists++;
        return core.listNamespacedConfigMap({ namespace });
      },
    );
    const added: string[] = [];
    const errors: unknown[] = [];
    informer.on("add", (o) => added.push(o.metadata!.name!));
    informer.on("error", (e) => errors.push(e));
    await informer.start();
    try {
      await waitFor(() => added.includes("before"));
      expect(lists).toBe(1);
      server.expireWatches();
      // The re-watch from the informer's version is answered with 410; it relists.
      await waitFor(() => lists === 2);
      await core.createNamespacedConfigMap({ namespace, body: configMap("after", { v: "1" }) });
      await waitFor(() => added.includes("after"));
      expect(added).toEqual(["before", "after"]);
      expect(informer.list().map((o) => o.metadata?.name)).toEqual(["before", "after"]);
      expect(errors).toEqual([]);
    } finally {
      await informer.stop();
    }
  });
});
