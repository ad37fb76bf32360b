/**
 * Sync workers end to end: a DataSet above its `workerThresholdBytes` is synced from Azure
 * (Azurite) to OCI (s3rver) by an Indexed Job of 3 `spillway sync --shard` workers on the
 * primary's AKS cluster. The sandbox kubelet runs each worker as the real CLI, with the Job's
 * Secret as its environment; the operator merges the shard manifests, checks the result
 * against the source and reports the version; the Job and its Secret are gone afterwards. A
 * run placed on OCI is staged through the same workers and trains on their version.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import type { DataSet, TrainingRun } from "../../operator/api/v1alpha1/index.ts";
import { dataSetController } from "../../operator/controllers/dataset/controller.ts";
import { LABEL_DATASET_UID, WORKERS_FINALIZER } from "../../operator/controllers/dataset/worker-objects.ts";
import { provisionedClusterController } from "../../operator/controllers/provisionedcluster/index.ts";
import { loadManifest, manifestDigest, manifestKey } from "../../operator/dataplane/manifest.ts";
import { DatasetSyncs, SourceIndex } from "../../operator/dataplane/stager.ts";
import { openStore } from "../../operator/dataplane/store.ts";
import { KubeClient } from "../../operator/runtime/client.ts";
import { type KubeObject, Resources, SpillwayResources } from "../../operator/runtime/resources.ts";
import { AZURE_SKU, type E2E, eventually, getRun, phaseIs, startE2E, trainingRun } from "./harness.ts";

type DS = DataSet & KubeObject;
const NS = "ml-team";
const OBJECTS = 15;

let e: E2E;

beforeAll(async () => {
  e = await startE2E();
  const datasets = new DatasetSyncs();
  await e.startOperator({
    stager: datasets,
    extraControllers: (ctx) => [
      provisionedClusterController(ctx, { progressIntervalMs: 500 }),
      dataSetController(ctx, datasets, { progressIntervalMs: 300, workers: { pollMs: 300 } }),
    ],
  });
}, 120_000);
afterAll(async () => {
  await e?.stop();
});

describe("DataSet sync workers in the sandbox", () => {
  test("3 workers run by the kubelet as the real CLI sync Azure to S3; the version is at the replica; Job and Secret are gone", async () => {
    const { azureStorage, s3Storage, scenario } = e.sandbox;
    const src = await openStore(
      {
        kind: "azblob",
        account: azureStorage.accountName,
        container: azureStorage.container,
        prefix: "corpora/workers/",
        endpoint: azureStorage.blobEndpoint,
      },
      { azure: { connectionString: azureStorage.connectionString } },
    );
    for (let i = 0; i < OBJECTS; i++)
      await src.put(`shard ${i % 4}/part-${i}.jsonl`, Buffer.from(`{"i":${i}}\n`.repeat(i + 1)));
    const sourceVersion = (await new SourceIndex().compute(src)).version;

    const ds: DS = {
      apiVersion: "spillway.dev/v1alpha1",
      kind: "DataSet",
      metadata: { name: "pretrain-big", namespace: NS },
      spec: {
        source: { provider: scenario.clouds.azure.name, prefix: "corpora/workers/" },
        replicas: [{ provider: scenario.clouds.oci.name, prefix: "replicas/workers/" }],
        // A tiny threshold: this dataset counts as large.
        syncPolicy: { mode: "OnDemand", workerThresholdBytes: 64, workers: 3 },
      },
    } as DS;
    const applied = await e.kubectl(["apply", "-f", "-"], JSON.stringify(ds));
    expect(applied.code).toBe(0);

    const aks = KubeClient.fromKubeconfig(e.sandbox.aks.kubeconfig());
    const synced = await eventually(
      () => e.client.get<DS>(SpillwayResources.DataSet, "pretrain-big", NS),
      (d) => d.status?.replicasSynced === 1,
      "the replica synced by the workers",
      180_000,
    );
    expect(synced.status?.version?.digest).toBe(sourceVersion);
    expect(synced.status?.version?.objects).toBe(OBJECTS);
    expect(synced.status?.replicas?.[0]).toMatchObject({
      provider: scenario.clouds.oci.name,
      phase: "Synced",
      version: sourceVersion,
      objectsSynced: OBJECTS,
    });
    expect(synced.status?.replicas?.[0]?.message).toContain(
      `3 sync workers on ${scenario.clouds.azure.name}/existing`,
    );
    expect(synced.metadata.finalizers).toContain(WORKERS_FINALIZER);

    // At the replica: each worker committed its shard's manifest, the operator the merged one.
    const dst = await openStore(
      {
        kind: "s3",
        bucket: s3Storage.bucket,
        prefix: "replicas/workers/",
        endpoint: s3Storage.endpoint,
        region: s3Storage.region,
      },
      { s3: { accessKeyId: s3Storage.accessKeyId, secretAccessKey: s3Storage.secretAccessKey } },
    );
    let shardObjects = 0;
    for (let index = 0; index < 3; index++) {
      const shard = await loadManifest(dst, manifestKey({ index, count: 3 }));
      expect(shard).toBeDefined();
      shardObjects += shard!.size;
    }
    expect(shardObjects).toBe(OBJECTS);
    const merged = await loadManifest(dst, manifestKey());
    expect(manifestDigest(merged!)).toBe(sourceVersion);
    expect((await dst.head("shard 2/part-14.jsonl"))?.size).toBe(`{"i":14}\n`.length * 15);

    // Job and Secret removed from the AKS cluster.
    const sel = { namespace: "spillway-sync", labelSelector: `${LABEL_DATASET_UID}=${synced.metadata.uid}` };
    await eventually(
      async () => [
        ...(await aks.list<KubeObject>(Resources.Job, sel)).items,
        ...(await aks.list<KubeObject>(Resources.Secret, sel)).items,
      ],
      (left) => left.length === 0,
      "the worker Job and Secret deleted",
      60_000,
    );
    // No credential in what a user can read.
    const shown = await e.kubectl(["get", "datasets.spillway.dev", "pretrain-big", "-n", NS, "-o", "yaml"]);
    expect(shown.stdout).toContain(sourceVersion);
    expect(shown.stdout).not.toContain(azureStorage.accountKey);
    expect(shown.stdout).not.toContain(s3Storage.secretAccessKey);

    // Deleting the DataSet releases its finalizer (nothing left to clean).
    const deleted = await e.kubectl([
      "delete",
      "datasets.spillway.dev",
      "pretrain-big",
      "-n",
      NS,
      "--wait=true",
    ]);
    expect(deleted.code).toBe(0);
    expect(await e.client.tryGet(SpillwayResources.DataSet, "pretrain-big", NS)).toBeUndefined();
  }, 240_000);

  test("a run placed on OCI is staged by the workers and trains on the version they put there", async () => {
    const { azureStorage, scenario } = e.sandbox;
    e.arm.setCapacity("eastus", AZURE_SKU, 0); // the primary declines: the run goes to OCI
    const src = await openStore(
      {
        kind: "azblob",
        account: azureStorage.accountName,
        container: azureStorage.container,
        prefix: "corpora/for-run/",
        endpoint: azureStorage.blobEndpoint,
      },
      { azure: { connectionString: azureStorage.connectionString } },
    );
    for (let i = 0; i < 6; i++) await src.put(`f${i}.jsonl`, Buffer.from(`{"row":${i}}\n`.repeat(20)));
    const sourceVersion = (await new SourceIndex().compute(src)).version;
    const ds = {
      apiVersion: "spillway.dev/v1alpha1",
      kind: "DataSet",
      metadata: { name: "run-corpus", namespace: NS },
      // No listed replica: the provider the run is placed on becomes one.
      spec: {
        source: { provider: scenario.clouds.azure.name, prefix: "corpora/for-run/" },
        syncPolicy: { mode: "OnDemand", workerThresholdBytes: 64, workers: 2 },
      },
    };
    expect((await e.kubectl(["apply", "-f", "-"], JSON.stringify(ds))).code).toBe(0);
    const run: TrainingRun & KubeObject = trainingRun("trains-on-big-data");
    run.spec.data = { dataset: "run-corpus", mountPath: "/data" };
    expect((await e.kubectl(["apply", "-f", "-"], JSON.stringify(run))).code).toBe(0);

    const running = await eventually(
      () => getRun(e, "trains-on-big-data"),
      phaseIs("Running", "Succeeded"),
      "the run started on OCI",
      180_000,
    );
    expect(running.status?.placement?.provider).toBe(scenario.clouds.oci.name);
    expect(running.status?.data).toMatchObject({
      dataset: "run-corpus",
      phase: "Ready",
      version: sourceVersion,
    });
    const replica = (
      await e.client.get<DS>(SpillwayResources.DataSet, "run-corpus", NS)
    ).status?.replicas?.find((r) => r.provider === scenario.clouds.oci.name);
    expect(replica?.message).toContain(`2 sync workers on ${scenario.clouds.azure.name}/existing`);
    await e.client.delete(SpillwayResources.TrainingRun, "trains-on-big-data", NS);
  }, 240_000);
});
