/**
 * Secrets stay secret. Recognisable values are planted in every credential Secret the
 * sandbox uses — the Azure service principal's clientSecret (the ARM emulator is told to
 * accept only it, so a run accepted by Azure proves the operator really used it), bearer
 * tokens in both clusters' kubeconfigs, storage keys and connection strings — and a full
 * flow runs: one run accepted by Azure and one declined and dispatched to the alternative.
 * Then everything the operator emitted is searched: its JSON log lines (debug level), every
 * Event (core and events.k8s.io), every Spillway object with its status, the /metrics text,
 * and every remote object it created (Jobs with their pod templates and env, Services,
 * Secrets, Pods). None may contain a planted value, raw or base64-encoded.
 *
 * Also: remote objects only ever live in the run's namespace, and a CloudProvider that points
 * at a Secret outside the operator's namespace is not read (the run waits, saying why).
 */
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { parse, stringify } from "yaml";
import type { CloudProvider } from "../../operator/api/v1alpha1/index.ts";
import type { Manager } from "../../operator/manager.ts";
import type { KubeClient } from "../../operator/runtime/client.ts";
import { KubeClient as Client } from "../../operator/runtime/client.ts";
import { createLogger } from "../../operator/runtime/logging.ts";
import { type KubeObject, Resources, SpillwayResources } from "../../operator/runtime/resources.ts";
import { SimulatedCluster } from "../../operator/sandbox/cluster/index.ts";
import { OPERATOR_NAMESPACE } from "../../operator/sandbox/wiring.ts";
import { AZURE_SKU, type E2E, eventually, getRun, type Run, startE2E, trainingRun } from "../e2e/harness.ts";

/** Planted values: long, unique, and never something the code could produce by itself. */
const PLANTED = {
  spClientSecret: "PLANTED-sp-secret-7f3a9c1e5b2d4f60",
  aksToken: "PLANTED-aks-token-a81b2c3d4e5f6071",
  ociToken: "PLANTED-oci-token-0c9d8e7f6a5b4c3d",
  storageKey: "PLANTED-storage-key-5e4d3c2b1a098f7e",
  s3Secret: "PLANTED-s3-secret-1122334455667788",
  foreignToken: "PLANTED-foreign-token-99aa88bb77cc66dd",
};

let e: E2E;
let oci: SimulatedCluster;
let manager: Manager;
const logLines: string[] = [];
/** Every remote object seen while the runs were live (Jobs are deleted when a run ends). */
const remoteSeen = new Map<string, KubeObject>();
let polling = true;
let poller: Promise<void> | undefined;
/** Needles: the planted values plus the emulators' fixed keys, each raw and base64-encoded. */
let needles: string[] = [];

function withToken(kubeconfig: string, token: string): string {
  const kc = parse(kubeconfig) as { users: Array<{ user: Record<string, unknown> }> };
  for (const u of kc.users) u.user = { ...u.user, token };
  return stringify(kc);
}

async function setSecret(name: string, data: Record<string, string>, namespace = OPERATOR_NAMESPACE) {
  const current = await e.client.tryGet<KubeObject>(Resources.Secret, name, namespace);
  const obj = { metadata: { name, namespace }, stringData: data } as KubeObject;
  if (!current) await e.client.create(Resources.Secret, obj);
  else
    await e.client.update(Resources.Secret, {
      ...obj,
      metadata: { ...obj.metadata, resourceVersion: current.metadata.resourceVersion },
    });
}

/** Remote kinds Spillway creates or causes (Pods come from its Jobs). */
const REMOTE_KINDS = [Resources.Job, Resources.Service, Resources.Secret, Resources.Pod, Resources.ConfigMap];

async function snapshotRemote(label: string, client: KubeClient): Promise<void> {
  for (const r of REMOTE_KINDS) {
    const items = (await client.list<KubeObject>(r, {})).items;
    for (const o of items)
      remoteSeen.set(`${label}/${r.plural}/${o.metadata.namespace}/${o.metadata.name}`, o);
  }
}

beforeAll(async () => {
  e = await startE2E();
  oci = await SimulatedCluster.start({
    name: "oci-sec",
    pools: [{ name: "gpu", nodes: 2, gpusPerNode: 8, gpuType: "H100" }],
    podStartupMs: 100,
    jobDurationMs: 1500,
  });
  // The ARM emulator accepts only the planted client secret from now on.
  (e.arm.config as { auth?: { clientSecret?: string } }).auth!.clientSecret = PLANTED.spClientSecret;
  const creds = await e.client.get<KubeObject & { data: Record<string, string> }>(
    Resources.Secret,
    "azure-eastus-credentials",
    OPERATOR_NAMESPACE,
  );
  const credData = Object.fromEntries(
    Object.entries(creds.data).map(([k, v]) => [k, Buffer.from(v, "base64").toString("utf8")]),
  );
  await setSecret("azure-eastus-credentials", { ...credData, clientSecret: PLANTED.spClientSecret });
  await setSecret("azure-eastus-kubeconfig", {
    kubeconfig: withToken(e.sandbox.aks.kubeconfig(), PLANTED.aksToken),
  });
  await setSecret("azure-eastus-storage", {
    connectionString: `${e.sandbox.azureStorage.connectionString};SharedAccessSignature=${PLANTED.storageKey}`,
    accountKey: PLANTED.storageKey,
  });
  await setSecret("oci-ashburn-s3", {
    accessKeyId: e.sandbox.s3Storage.accessKeyId,
    secretAccessKey: PLANTED.s3Secret,
  });
  await setSecret("oci-sec-kubeconfig", { kubeconfig: withToken(oci.kubeconfig(), PLANTED.ociToken) });
  const p = await e.client.get<CloudProvider & KubeObject>(SpillwayResources.CloudProvider, "oci-ashburn");
  p.spec.cluster = {
    existing: { kubeconfigSecretRef: { name: "oci-sec-kubeconfig", namespace: OPERATOR_NAMESPACE } },
  };
  await e.client.update(SpillwayResources.CloudProvider, p);

  const raw = [
    ...Object.values(PLANTED),
    e.sandbox.azureStorage.accountKey,
    // s3rver's fixed secret is the short word "S3RVER": searched case-sensitively it is still specific.
    e.sandbox.s3Storage.secretAccessKey,
  ];
  needles = [...raw, ...raw.map((s) => Buffer.from(s).toString("base64"))];

  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split("\n")) if (l.trim()) logLines.push(l);
      done();
    },
  });
  manager = await e.startOperator({
    logger: createLogger({ level: "debug", stream: sink }),
    metricsAddress: "127.0.0.1:0",
  });
  const aks = Client.fromKubeconfig(e.sandbox.aks.kubeconfig());
  const ociClient = Client.fromKubeconfig(oci.kubeconfig());
  poller = (async () => {
    while (polling) {
      await snapshotRemote("aks", aks).catch(() => undefined);
      await snapshotRemote("oci", ociClient).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 150));
    }
  })();
}, 120_000);

afterAll(async () => {
  polling = false;
  await poller;
  await e?.stop();
  await oci?.stop();
}, 60_000);

function leaks(where: string, text: string): string[] {
  return needles.filter((n) => text.includes(n)).map((n) => `${where} contains ${n.slice(0, 24)}…`);
}

describe("no secret value is ever emitted", () => {
  test("a full flow (accepted on Azure, declined and run on the alternative) leaks nothing", async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 1);
    await e.client.create(SpillwayResources.TrainingRun, trainingRun("sec-azure"));
    const first = await eventually(
      () => getRun(e, "sec-azure"),
      (r) => r.status?.phase === "Succeeded" || r.status?.phase === "Failed",
      "the Azure run to finish",
      90_000,
    );
    // Accepted by Azure: the responder authenticated with the planted client secret.
    expect(first.status?.phase).toBe("Succeeded");
    expect(first.status?.placement?.provider).toBe("azure-eastus");

    // The reservation given back after the first run returns its node: wait for that, then empty the pool.
    await eventually(
      () => e.arm.reservations(),
      (rs) => rs.every((x) => !x.name.includes("sec-azure")),
      "the first run's reservation released",
    );
    e.arm.setCapacity("eastus", AZURE_SKU, 0);
    await e.client.create(SpillwayResources.TrainingRun, trainingRun("sec-oci"));
    const second = await eventually(
      () => getRun(e, "sec-oci"),
      (r) => r.status?.phase === "Succeeded" || r.status?.phase === "Failed",
      "the alternative's run to finish",
      90_000,
    );
    expect(second.status?.phase).toBe("Succeeded");
    expect(second.status?.placement?.provider).toBe("oci-ashburn");

    // Both clusters held the runs' Jobs while they ran (the poller saw them).
    const seen = [...remoteSeen.keys()];
    expect(seen.some((k) => k.startsWith("aks/jobs/ml-team/sec-azure"))).toBe(true);
    expect(seen.some((k) => k.startsWith("oci/jobs/ml-team/sec-oci"))).toBe(true);

    // The search does find the planted values where they legitimately are (the Secrets).
    const stored = await e.client.list<KubeObject & { data?: Record<string, string> }>(Resources.Secret, {
      namespace: OPERATOR_NAMESPACE,
    });
    const decoded = stored.items.flatMap((x) =>
      Object.values(x.data ?? {}).map((v) => Buffer.from(v, "base64").toString("utf8")),
    );
    expect(leaks("Secrets", decoded.join("\n")).length).toBeGreaterThanOrEqual(6);

    const found: string[] = [];
    expect(logLines.length).toBeGreaterThan(10);
    found.push(...leaks("operator logs", logLines.join("\n")));
    const core = await e.client.list<KubeObject>(Resources.Event, {});
    expect(core.items.length).toBeGreaterThan(0);
    found.push(...leaks("core Events", JSON.stringify(core.items)));
    const modern = await e.client.request<{ items: unknown[] }>(
      "list",
      Resources.Event,
      "GET",
      "/apis/events.k8s.io/v1/events",
    );
    found.push(...leaks("events.k8s.io Events", JSON.stringify(modern.items)));
    for (const r of Object.values(SpillwayResources)) {
      const list = await e.client.list<KubeObject>(r, {});
      found.push(...leaks(`${r.plural} (spec and status)`, JSON.stringify(list.items)));
    }
    const metrics = await (await fetch(`http://${manager.addresses.metrics}/metrics`)).text();
    expect(metrics).toContain("# HELP");
    found.push(...leaks("/metrics", metrics));
    for (const [key, obj] of remoteSeen) found.push(...leaks(`remote ${key}`, JSON.stringify(obj)));
    expect(found).toEqual([]);
  }, 200_000);

  test("remote objects are created only in the run's namespace", async () => {
    const spillway = [...remoteSeen.entries()].filter(
      ([, o]) =>
        o.metadata.labels?.["app.kubernetes.io/managed-by"] === "spillway" ||
        o.metadata.labels?.["spillway.dev/run-uid"] !== undefined,
    );
    expect(spillway.length).toBeGreaterThan(0);
    const outside = spillway.filter(([, o]) => o.metadata.namespace !== "ml-team").map(([k]) => k);
    expect(outside).toEqual([]);
    // Nothing Spillway made anywhere carries a credential: no remote Secret exists for runs without data.
    const secrets = spillway.filter(([k]) => k.includes("/secrets/")).map(([k]) => k);
    expect(secrets).toEqual([]);
  });

  test("a CloudProvider pointing at a Secret in another namespace is not read: the run waits and says why", async () => {
    // A valid kubeconfig, but in a team namespace: the operator must refuse to read it.
    await setSecret(
      "stolen-kubeconfig",
      { kubeconfig: withToken(oci.kubeconfig(), PLANTED.foreignToken) },
      "ml-team",
    );
    const p = await e.client.get<CloudProvider & KubeObject>(SpillwayResources.CloudProvider, "oci-ashburn");
    p.spec.cluster = {
      existing: { kubeconfigSecretRef: { name: "stolen-kubeconfig", namespace: "ml-team" } },
    };
    await e.client.update(SpillwayResources.CloudProvider, p);
    await eventually(
      () => manager.ctx.caches.providers.get("oci-ashburn"),
      (pr) => pr?.spec.cluster.existing?.kubeconfigSecretRef?.namespace === "ml-team",
      "the cache to see the foreign reference",
    );
    e.arm.setCapacity("eastus", AZURE_SKU, 0);
    await e.client.create(SpillwayResources.TrainingRun, trainingRun("sec-foreign"));
    const waiting = await eventually(
      () => getRun(e, "sec-foreign"),
      (r: Run) =>
        (r.status?.conditions ?? []).some((c) =>
          c.message?.includes(`Secret ${OPERATOR_NAMESPACE}/stolen-kubeconfig`),
        ),
      "the run to wait for a Secret in the operator's namespace",
      90_000,
    );
    expect(waiting.status?.phase).not.toBe("Running");
    expect(waiting.status?.phase).not.toBe("Succeeded");
    const jobs = (await Client.fromKubeconfig(oci.kubeconfig()).list<KubeObject>(Resources.Job, {})).items;
    expect(jobs.some((j) => j.metadata.name === "sec-foreign")).toBe(false);
    expect(logLines.join("\n")).not.toContain(PLANTED.foreignToken);
  }, 120_000);
});
