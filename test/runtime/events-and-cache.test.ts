/**
 * The runtime's per-run cost savers (docs/performance.md): Events posted by controllers are
 * written in the background, repeats folded into one write; the informer's cache does not
 * keep managedFields; the Azure responder is loaded on first use.
 */

import { lazyResponder } from "../../operator/adapters.ts";
import type { CapacityOffer, CloudProvider } from "../../operator/api/v1alpha1/index.ts";
import type { PrimaryResponder } from "../../operator/ports/index.ts";
import { KubeClient } from "../../operator/runtime/client.ts";
import { type EventObject, EventRecorder } from "../../operator/runtime/events.ts";
import { Informer } from "../../operator/runtime/informer.ts";
import { RuntimeMetrics } from "../../operator/runtime/metrics.ts";
import { type KubeObject, Resources } from "../../operator/runtime/resources.ts";
import { type ApiServer, startApiServer } from "../../operator/sandbox/apiserver/index.ts";

let server: ApiServer;
let client: KubeClient;

beforeAll(async () => {
  server = await startApiServer({ name: "runtime" });
  client = KubeClient.fromKubeconfig(server.kubeconfig(), { rateLimit: { qps: 1000, burst: 1000 } });
  await client.create(Resources.Namespace, { metadata: { name: "team" } });
});

afterAll(async () => {
  await server.close();
});

async function eventsAbout(name: string): Promise<EventObject[]> {
  const list = await client.listAll<EventObject>(Resources.Event, { namespace: "team" });
  return list.items.filter((e) => e.involvedObject.name === name);
}

async function counter(metrics: RuntimeMetrics, outcome: string): Promise<number> {
  const m = await metrics.events.get();
  return m.values.find((v) => v.labels.outcome === outcome)?.value ?? 0;
}

test("posted Events are written in the background; repeats waiting are folded into one Event", async () => {
  const metrics = new RuntimeMetrics();
  // A slow writer (1 QPS after the first) so the repeats arrive while the Event still waits.
  const recorder = new EventRecorder(client, { metrics, rateLimit: { qps: 1, burst: 1 }, writers: 1 });
  const cm = await client.create<KubeObject>(Resources.ConfigMap, {
    metadata: { name: "cm-a", namespace: "team" },
  });
  recorder.post(Resources.ConfigMap, cm, "Normal", "First", "the first");
  for (let i = 0; i < 5; i++) recorder.post(Resources.ConfigMap, cm, "Warning", "Again", "the same message");
  expect(recorder.backlog).toBeGreaterThan(0);
  await recorder.flush(10_000);
  expect(recorder.backlog).toBe(0);

  const events = await eventsAbout("cm-a");
  expect(events.map((e) => [e.reason, e.count]).sort()).toEqual([
    ["Again", 5],
    ["First", 1],
  ]);
  expect(events.find((e) => e.reason === "Again")!.involvedObject.uid).toBe(cm.metadata.uid);
  expect(await counter(metrics, "written")).toBe(2);
  expect(await counter(metrics, "aggregated")).toBe(4);
});

test("past the pending limit, Events are dropped and counted, never queued without bound", async () => {
  const metrics = new RuntimeMetrics();
  const recorder = new EventRecorder(client, {
    metrics,
    maxPending: 2,
    writers: 1,
    rateLimit: { qps: 1000, burst: 1000 },
  });
  const cm = await client.create<KubeObject>(Resources.ConfigMap, {
    metadata: { name: "cm-b", namespace: "team" },
  });
  // The first is taken by the writer at once; two wait; the fourth finds the queue full.
  for (let i = 0; i < 4; i++) recorder.post(Resources.ConfigMap, cm, "Normal", `Reason${i}`, "m");
  await recorder.flush(10_000);
  expect(await counter(metrics, "dropped")).toBe(1);
  expect((await eventsAbout("cm-b")).length).toBe(3);
});

test("the informer's cache keeps objects without managedFields", async () => {
  await client.apply(
    Resources.ConfigMap,
    { metadata: { name: "cm-c", namespace: "team" }, data: { k: "v" } } as KubeObject,
    { force: true },
  );
  const stored = await client.get<KubeObject & { metadata: { managedFields?: unknown[] } }>(
    Resources.ConfigMap,
    "cm-c",
    "team",
  );
  expect(stored.metadata.managedFields?.length).toBeGreaterThan(0);
  const inf = new Informer<KubeObject & { data?: Record<string, string> }>(client, Resources.ConfigMap, {
    namespace: "team",
  });
  inf.start();
  try {
    await inf.waitForSync();
    const cached = inf.get("team/cm-c")!;
    expect(cached.data).toEqual({ k: "v" });
    expect(cached.metadata.uid).toBe(stored.metadata.uid);
    expect("managedFields" in cached.metadata).toBe(false);
  } finally {
    await inf.stop();
  }
});

test("a lazy responder loads its implementation on the first call only, and again after a failed load", async () => {
  const calls: string[] = [];
  let loads = 0;
  const real: PrimaryResponder = {
    respond: async (offer) => {
      calls.push(`respond ${offer.metadata?.name}`);
      return { outcome: "Declined", reason: "NoCapacity", message: "none" };
    },
    release: async () => {
      calls.push("release");
    },
  };
  const responder = lazyResponder(async () => {
    loads++;
    if (loads === 1) throw new Error("module failed to load");
    return real;
  });
  expect(loads).toBe(0);
  const offer = { metadata: { name: "o-1" } } as CapacityOffer;
  const provider = {} as CloudProvider;
  await expect(responder.respond(offer, provider, {})).rejects.toThrow("module failed to load");
  await expect(responder.respond(offer, provider, {})).resolves.toMatchObject({ reason: "NoCapacity" });
  await responder.release(offer, provider, {});
  expect(await responder.managedReservations!(provider, {})).toEqual([]);
  expect(loads).toBe(2);
  expect(calls).toEqual(["respond o-1", "release"]);
});
