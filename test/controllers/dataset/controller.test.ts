/**
 * The DataSet controller and the data stager against a real (sandbox) API server and the real
 * emulators: what a user sees in `kubectl get ds -o yaml` and in the replica's bucket.
 */
import type { CloudProvider, DataSet, TrainingRun } from "../../../operator/api/v1alpha1/index.ts";
import { dataSetController } from "../../../operator/controllers/dataset/controller.ts";
import { readAll } from "../../../operator/dataplane/manifest.ts";
import { DatasetSyncs } from "../../../operator/dataplane/stager.ts";
import { openStore } from "../../../operator/dataplane/store.ts";
import type { Controller } from "../../../operator/runtime/controller.ts";
import { type KubeObject, Resources, SpillwayResources } from "../../../operator/runtime/resources.ts";
import { eventually, type Harness, providers, secret, startHarness, TEAM } from "./harness.ts";

type DS = DataSet & KubeObject;

let h: Harness;
let syncs: DatasetSyncs;
let controller: Controller;

beforeAll(async () => {
  h = await startHarness();
  for (const p of providers(h)) await h.client.create(SpillwayResources.CloudProvider, p);
  // A provider whose bucket does not exist.
  const broken = providers(h)[1]!;
  broken.metadata.name = "oci-broken";
  (broken.spec.storage!.s3 as { bucket: string }).bucket = "no-such-bucket";
  await h.client.create(SpillwayResources.CloudProvider, broken);
  await h.client.create(Resources.Secret, secret("azure-storage", { accountKey: h.azurite.accountKey }));
  syncs = new DatasetSyncs({
    sync: { retry: { attempts: 2, baseDelayMs: 1, maxDelayMs: 5 } },
    retryBaseMs: 200,
    retryMaxMs: 1_000,
  });
  controller = dataSetController(h.ctx, syncs, { progressIntervalMs: 200 });
  controller.start();
});
afterAll(async () => {
  await controller?.stop(5_000);
  await syncs?.cancel();
  await h?.close();
});

const azure = () =>
  openStore(
    {
      kind: "azblob",
      account: h.azurite.accountName,
      container: "datasets",
      prefix: "",
      endpoint: h.azurite.blobEndpoint,
    },
    { azure: { accountKey: h.azurite.accountKey } },
  );
const oci = (prefix: string) =>
  openStore(
    { kind: "s3", bucket: "spillway-datasets", prefix, endpoint: h.s3.endpoint, region: h.s3.region },
    { s3: { accessKeyId: h.s3.accessKeyId, secretAccessKey: h.s3.secretAccessKey } },
  );

function dataset(name: string, spec: Partial<DataSet["spec"]> = {}): DS {
  return {
    apiVersion: "spillway.dev/v1alpha1",
    kind: "DataSet",
    metadata: { name, namespace: TEAM },
    spec: {
      source: { provider: "azure-eastus", prefix: `corpora/${name}/` },
      replicas: [{ provider: "oci-ashburn", prefix: `replicas/${name}/` }],
      syncPolicy: { mode: "Continuous", interval: "1h" },
      ...spec,
    },
  } as DS;
}

const get = (name: string) => h.client.get<DS>(SpillwayResources.DataSet, name, TEAM);

describe("DataSet controller", () => {
  it("waits for the replica's credentials Secret, then syncs and reports the version, replica and conditions", async () => {
    const src = await azure();
    await src.put("corpora/pretrain/a.jsonl", Buffer.from('{"t":"a"}\n'));
    await src.put("corpora/pretrain/shards/b.jsonl", Buffer.from('{"t":"b"}\n'));
    await h.client.create(SpillwayResources.DataSet, dataset("pretrain"));

    // No Secret for OCI yet: the replica fails and is retried, without secrets in any message.
    const waiting = await eventually(async () => {
      const ds = await get("pretrain");
      const r = ds.status?.replicas?.[0];
      return r?.phase === "Failed" && ds;
    });
    expect(waiting.status?.replicas?.[0]?.message).toContain("oci-s3-credentials");
    expect(waiting.status?.conditions?.find((c) => c.type === "Ready")).toMatchObject({ status: "False" });

    await h.client.create(
      Resources.Secret,
      secret("oci-s3-credentials", { accessKeyId: h.s3.accessKeyId, secretAccessKey: h.s3.secretAccessKey }),
    );
    const ds = await eventually(async () => {
      const d = await get("pretrain");
      return d.status?.replicasSynced === 1 && d;
    });
    expect(ds.status?.version).toMatchObject({ objects: 2, bytes: 20 });
    expect(ds.status?.version?.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(ds.status?.replicas?.[0]).toMatchObject({
      provider: "oci-ashburn",
      phase: "Synced",
      version: ds.status?.version?.digest,
      objectsSynced: 2,
    });
    expect(ds.status?.replicas?.[0]?.lastSyncTime).toBeDefined();
    expect(ds.status?.observedGeneration).toBe(ds.metadata.generation);
    const cond = (t: string) => ds.status?.conditions?.find((c) => c.type === t);
    expect(cond("Ready")).toMatchObject({ status: "True", reason: "Synced" });
    expect(cond("Reconciling")).toMatchObject({ status: "False" });
    expect(cond("Stalled")).toMatchObject({ status: "False" });
    const replica = await oci("replicas/pretrain/");
    expect((await readAll(await replica.read("shards/b.jsonl"))).toString()).toBe('{"t":"b"}\n');
    expect(h.events.some((e) => e.name === "pretrain" && e.reason === "Synced")).toBe(true);
    // No credential in status or events (the Azure key is the one long secret here).
    expect(JSON.stringify(ds.status)).not.toContain(h.azurite.accountKey);
    for (const e of h.events) expect(e.message).not.toContain(h.azurite.accountKey);
  });

  it("reports a replica whose bucket does not exist as Stalled, with a reason a user can act on", async () => {
    const ds = dataset("nobucket", {
      replicas: [{ provider: "oci-ashburn", prefix: "x/" }],
    });
    ds.spec.replicas = [{ provider: "oci-broken", prefix: "x/" }];
    await h.client.create(SpillwayResources.DataSet, ds);
    const got = await eventually(async () => {
      const d = await get("nobucket");
      return d.status?.conditions?.find((c) => c.type === "Stalled" && c.status === "True") && d;
    });
    expect(got.status?.replicas?.[0]).toMatchObject({ provider: "oci-broken", phase: "Failed" });
    expect(got.status?.replicas?.[0]?.message).toContain("bucket not found");
    expect(
      h.events.some((e) => e.name === "nobucket" && e.type === "Warning" && e.reason === "SyncFailed"),
    ).toBe(true);

    // Fixing the provider is noticed at once (no waiting out a backoff).
    const provider = await h.client.get<CloudProvider & KubeObject>(
      SpillwayResources.CloudProvider,
      "oci-broken",
    );
    (provider.spec.storage!.s3 as { bucket: string }).bucket = "spillway-datasets";
    await h.client.update(SpillwayResources.CloudProvider, provider);
    const fixed = await eventually(async () => {
      const d = await get("nobucket");
      return d.status?.replicasSynced === 1 && d;
    });
    expect(fixed.status?.conditions?.find((c) => c.type === "Stalled")).toMatchObject({ status: "False" });
    // The broken provider again, for the stager's test.
    const again = await h.client.get<CloudProvider & KubeObject>(
      SpillwayResources.CloudProvider,
      "oci-broken",
    );
    (again.spec.storage!.s3 as { bucket: string }).bucket = "no-such-bucket";
    await h.client.update(SpillwayResources.CloudProvider, again);
  });

  it("follows a change at the source at the next interval (Continuous)", async () => {
    const src = await azure();
    await src.put("corpora/live/v.txt", Buffer.from("one"));
    await h.client.create(
      SpillwayResources.DataSet,
      dataset("live", { syncPolicy: { mode: "Continuous", interval: "1s" } }),
    );
    const v1 = await eventually(async () => {
      const d = await get("live");
      return d.status?.replicasSynced === 1 && d.status.version?.digest;
    });
    await src.put("corpora/live/v.txt", Buffer.from("two"));
    const v2 = await eventually(async () => {
      const d = await get("live");
      return d.status?.replicasSynced === 1 && d.status.version?.digest !== v1 && d.status.version?.digest;
    });
    expect(v2).not.toBe(v1);
    expect((await readAll(await (await oci("replicas/live/")).read("v.txt"))).toString()).toBe("two");
  });

  it("repairs a replica that lost an object behind its records at the next interval (the periodic resync lists the destination)", async () => {
    const src = await azure();
    await src.put("corpora/drift/a.txt", Buffer.from("a"));
    await src.put("corpora/drift/b.txt", Buffer.from("b"));
    await h.client.create(
      SpillwayResources.DataSet,
      dataset("drift", { syncPolicy: { mode: "Continuous", interval: "1s" } }),
    );
    const synced = await eventually(async () => {
      const d = await get("drift");
      return d.status?.replicasSynced === 1 && d.status.version?.digest;
    });
    // The replica loses b.txt (a store that lost an acknowledged write, a person with a
    // delete key); the manifest beside the data still lists it. Nothing changes at the source.
    const replica = await oci("replicas/drift/");
    await replica.delete("b.txt");
    await eventually(async () => {
      try {
        return (await readAll(await replica.read("b.txt"))).toString() === "b";
      } catch {
        return false;
      }
    });
    // Same version (the source did not change), the replica whole again.
    const after = await eventually(async () => {
      const d = await get("drift");
      return d.status?.replicasSynced === 1 && d;
    });
    expect(after ? after.status?.version?.digest : undefined).toBe(synced);
  });

  it("adds the provider a run is placed on as a replica and keeps it in sync", async () => {
    const src = await azure();
    await src.put("corpora/finetune/x.txt", Buffer.from("x"));
    await h.client.create(SpillwayResources.DataSet, dataset("finetune", { replicas: [] }));
    await eventually(async () =>
      (await get("finetune")).status?.conditions?.some((c) => c.reason === "NoReplicas"),
    );
    const run = {
      apiVersion: "spillway.dev/v1alpha1",
      kind: "TrainingRun",
      metadata: { name: "ft-1", namespace: TEAM },
      spec: {
        template: { spec: { containers: [{ name: "trainer", image: "trainer:1" }] } },
        resources: { gpu: { type: "H100", count: 8 }, nodes: 1 },
        data: { dataset: "finetune" },
      },
    } as unknown as TrainingRun & KubeObject;
    const created = await h.client.create(SpillwayResources.TrainingRun, run);
    await h.client.updateStatus(SpillwayResources.TrainingRun, {
      ...created,
      status: {
        phase: "Staging",
        attempt: 1,
        placement: {
          provider: "oci-ashburn",
          attempt: 1,
          decidedAt: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
        },
      },
    } as TrainingRun & KubeObject);
    const ds = await eventually(async () => {
      const d = await get("finetune");
      return d.status?.replicasSynced === 1 && d;
    });
    expect(ds.status?.replicas?.map((r) => r.provider)).toEqual(["oci-ashburn"]);
    // The default replica prefix mirrors the source's.
    expect((await readAll(await (await oci("corpora/finetune/")).read("x.txt"))).toString()).toBe("x");
  });
});

describe("DataStager (the TrainingRun controller's gate)", () => {
  it("stages to the placement's cloud: Syncing, then Ready with the same version the source holds", async () => {
    const src = await azure();
    await src.put("corpora/stage/1.bin", Buffer.alloc(1000, 1));
    await src.put("corpora/stage/2.bin", Buffer.alloc(0));
    const ds = await h.client.create(
      SpillwayResources.DataSet,
      dataset("stage", { replicas: [], syncPolicy: { mode: "OnDemand" } }),
    );
    const [azureProvider, ociProvider] = providers(h);
    const run = { metadata: { name: "r", namespace: TEAM } } as TrainingRun;

    const first = await syncs.stage(run, ds, ociProvider!);
    expect(["Pending", "Syncing", "Ready"]).toContain(first.phase);
    const ready = await eventually(async () => {
      const s = await syncs.stage(run, ds, ociProvider!);
      return s.phase === "Ready" && s;
    });
    expect(ready.uri).toMatch(/^s3:\/\/spillway-datasets\/corpora\/stage\//);
    expect(ready).toMatchObject({ objectsSynced: 2, bytesSynced: 1000 });
    // Placed where the data already is: no copy, and the version is the same digest.
    const atSource = await eventually(async () => {
      const s = await syncs.stage(run, ds, azureProvider!);
      return s.phase === "Ready" && s;
    });
    expect(atSource.version).toBe(ready.version);
    expect(atSource.uri).toMatch(/^azblob:\/\/devstoreaccount1\/datasets\/corpora\/stage\//);
  });

  it("fails at once (so placement can move on) when the target's store cannot be reached by configuration", async () => {
    const ds = await h.client.create(SpillwayResources.DataSet, dataset("stage-bad", { replicas: [] }));
    const broken = await h.client.get<CloudProvider & KubeObject>(
      SpillwayResources.CloudProvider,
      "oci-broken",
    );
    const status = await eventually(async () => {
      const s = await syncs.stage({} as TrainingRun, ds, broken);
      return s.phase === "Failed" && s;
    });
    expect(status.message).toContain("bucket not found");
  });
});
