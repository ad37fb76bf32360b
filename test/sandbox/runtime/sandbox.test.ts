/**
 * `startSandbox` in-process, as the demo and the end-to-end tests use it: what it exposes
 * works with the real clients (kubeconfigs, Blob and S3 credentials, the provisioner), and
 * there is one sandbox per state directory. (Restarts: sandbox-cli.test.ts.)
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { BlobServiceClient } from "@azure/storage-blob";
import { ApiextensionsV1Api, CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import { type Sandbox, startSandbox } from "../../../operator/sandbox/sandbox.ts";
import { DEFAULT_SCENARIO, type Scenario } from "../../../operator/sandbox/scenario.ts";

let dir: string;
let sandbox: Sandbox | undefined;

function scenario(): Scenario {
  const s = structuredClone(DEFAULT_SCENARIO);
  s.clouds.oci.provisioning = { latency: "20ms", destroyLatency: "10ms" };
  return s;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "spillway-sandbox-"));
});
afterEach(async () => {
  await sandbox?.stop();
  sandbox = undefined;
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function kubeConfigFile(path: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(path);
  return kc;
}

describe("startSandbox", () => {
  it("exposes a management cluster with the CRDs, the AKS cluster, both stores and the provisioner", async () => {
    const stateDir = join(dir, "exposed");
    sandbox = await startSandbox({ stateDir, scenario: scenario() });
    const s = sandbox;

    expect(s.management.kubeconfigPath).toBe(join(stateDir, "kubeconfig"));
    const crds = await kubeConfigFile(s.management.kubeconfigPath)
      .makeApiClient(ApiextensionsV1Api)
      .listCustomResourceDefinition();
    expect(crds.items.map((c) => c.metadata?.name).sort()).toEqual([
      "capacityoffers.spillway.dev",
      "cloudproviders.spillway.dev",
      "datasets.spillway.dev",
      "provisionedclusters.spillway.dev",
      "trainingruns.spillway.dev",
    ]);
    const aksNodes = await kubeConfigFile(s.aks.kubeconfigPath).makeApiClient(CoreV1Api).listNode();
    expect(aksNodes.items.map((n) => n.status?.allocatable?.["nvidia.com/gpu"])).toEqual(["8", "8"]);

    const containers: string[] = [];
    for await (const c of BlobServiceClient.fromConnectionString(
      s.azureStorage.connectionString,
    ).listContainers())
      containers.push(c.name);
    expect(containers).toContain(s.azureStorage.container);

    const s3 = new S3Client({
      endpoint: s.s3Storage.endpoint,
      region: s.s3Storage.region,
      forcePathStyle: true,
      credentials: { accessKeyId: s.s3Storage.accessKeyId, secretAccessKey: s.s3Storage.secretAccessKey },
    });
    const listed = await s3.send(new ListObjectsV2Command({ Bucket: s.s3Storage.bucket }));
    expect(listed.KeyCount ?? 0).toBe(0);
    s3.destroy();

    const out = await s.provisioner.up({
      stackName: "oke-1",
      program: "oci",
      provider: s.scenario.clouds.oci.name,
      region: s.scenario.clouds.oci.region,
      nodePools: [],
      config: {},
      secretConfig: {},
    });
    expect(out.s3Endpoint).toBe(s.s3Storage.endpoint);
    expect(out.bucket).toBe(s.s3Storage.bucket);
    const okc = new KubeConfig();
    okc.loadFromString(out.kubeconfig);
    expect((await okc.makeApiClient(CoreV1Api).listNode()).items).toHaveLength(2);

    // One sandbox per state directory: a second start while this one runs is refused.
    await expect(startSandbox({ stateDir, scenario: scenario() })).rejects.toThrow(
      `another sandbox (pid ${process.pid}) is using ${stateDir}`,
    );
    // and the refused start took nothing of the running one down.
    expect(
      (await kubeConfigFile(s.aks.kubeconfigPath).makeApiClient(CoreV1Api).listNode()).items,
    ).toHaveLength(2);
  });
});
