// A management cluster for the DataSet controller: the sandbox API server with the Spillway
// CRDs, the operator's caches over it, an OperatorContext, and two clouds whose object stores
// are the real emulators (Azurite for the Azure primary, s3rver for OCI).
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import type { CloudProvider, DataSet, TrainingRun } from "../../../operator/api/v1alpha1/index.ts";
import {
  type Caches,
  DEFAULT_SETTINGS,
  type EventType,
  type OperatorContext,
} from "../../../operator/controllers/context.ts";
import { RemoteClusters } from "../../../operator/controllers/remote/clusters.ts";
import { KubeClient } from "../../../operator/runtime/client.ts";
import { Informer } from "../../../operator/runtime/informer.ts";
import { silentLogger } from "../../../operator/runtime/logging.ts";
import { RuntimeMetrics } from "../../../operator/runtime/metrics.ts";
import { type KubeObject, Resources, SpillwayResources } from "../../../operator/runtime/resources.ts";
import { type ApiServer, startApiServer } from "../../../operator/sandbox/apiserver/index.ts";
import { AzuriteEmulator, S3rverEmulator } from "../../../operator/sandbox/emulators/index.ts";
import { ROOT } from "../../helpers/examples.ts";

export const NAMESPACE = "spillway-system";
export const TEAM = "ml-team";

const CRD = {
  group: "apiextensions.k8s.io",
  version: "v1",
  kind: "CustomResourceDefinition",
  plural: "customresourcedefinitions",
  namespaced: false,
};

export interface RecordedEvent {
  name: string;
  type: EventType;
  reason: string;
  message: string;
}

export interface Harness {
  server: ApiServer;
  client: KubeClient;
  ctx: OperatorContext;
  events: RecordedEvent[];
  azurite: AzuriteEmulator;
  s3: S3rverEmulator;
  /** With `{ remote: true }`: the Azure provider's cluster (its kubeconfig in `azure-kubeconfig`). */
  aks?: ApiServer;
  close(): Promise<void>;
}

export async function startHarness(opts: { remote?: boolean } = {}): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), "spillway-ds-"));
  const [server, azurite, s3, aks] = await Promise.all([
    startApiServer({ name: "mgmt" }),
    AzuriteEmulator.start({ dir: join(dir, "azurite"), containers: ["datasets"] }),
    S3rverEmulator.start({ dir: join(dir, "s3rver"), buckets: ["spillway-datasets"] }),
    opts.remote ? startApiServer({ name: "aks" }) : undefined,
  ]);
  const client = KubeClient.fromKubeconfig(server.kubeconfig(), { rateLimit: { qps: 1000, burst: 1000 } });
  for (const file of readdirSync(join(ROOT, "crds")).filter((f) => f.endsWith(".yaml"))) {
    for (const doc of parseAllDocuments(readFileSync(join(ROOT, "crds", file), "utf8"))) {
      const obj = doc.toJS() as KubeObject | null;
      if (obj) await client.create(CRD, obj);
    }
  }
  await client.create(Resources.Namespace, { metadata: { name: NAMESPACE } });
  await client.create(Resources.Namespace, { metadata: { name: TEAM } });
  if (aks)
    await client.create(Resources.Secret, secret("azure-kubeconfig", { kubeconfig: aks.kubeconfig() }));
  const inf = <T extends KubeObject>(r: typeof Resources.Secret, namespace?: string) =>
    new Informer<T>(client, r, namespace ? { namespace } : {});
  const caches = {
    runs: inf<TrainingRun & KubeObject>(SpillwayResources.TrainingRun),
    offers: inf(SpillwayResources.CapacityOffer),
    providers: inf<CloudProvider & KubeObject>(SpillwayResources.CloudProvider),
    datasets: inf<DataSet & KubeObject>(SpillwayResources.DataSet),
    clusters: inf(SpillwayResources.ProvisionedCluster),
    secrets: inf(Resources.Secret, NAMESPACE),
  } as Caches;
  const informers = Object.values(caches) as Informer<KubeObject>[];
  for (const i of informers) i.start();
  await Promise.all(informers.map((i) => i.waitForSync()));
  const events: RecordedEvent[] = [];
  const remote = aks
    ? new RemoteClusters({
        origin: "test",
        qps: 1000,
        burst: 1000,
        now: () => Date.now(),
        log: silentLogger(),
        onJobEvent: () => undefined,
      })
    : ({} as RemoteClusters);
  const ctx: OperatorContext = {
    mgmt: client,
    caches,
    remote,
    responderFor: () => undefined,
    provisionerFor: () => undefined,
    events: {
      record: (obj, type, reason, message) =>
        events.push({ name: obj.metadata.name ?? "", type, reason, message }),
    },
    metrics: new RuntimeMetrics(),
    log: silentLogger(),
    now: () => new Date(),
    settings: { ...DEFAULT_SETTINGS, namespace: NAMESPACE, origin: "test" },
    enqueue: () => undefined,
  };
  return {
    server,
    client,
    ctx,
    events,
    azurite,
    s3,
    ...(aks ? { aks } : {}),
    async close() {
      await Promise.all(informers.map((i) => i.stop()));
      if (aks) await remote.stop();
      await Promise.all([server.close(), azurite.stop(), s3.stop(), aks?.close()]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The two clouds of the demo, their stores pointing at the emulators. */
export function providers(h: Harness): (CloudProvider & KubeObject)[] {
  const base = {
    apiVersion: "spillway.dev/v1alpha1",
    kind: "CloudProvider",
  } as const;
  return [
    {
      ...base,
      metadata: { name: "azure-eastus" },
      spec: {
        type: "azure",
        role: "alternative",
        region: "eastus",
        jurisdiction: "US",
        cluster: { existing: { kubeconfigSecretRef: { name: "azure-kubeconfig", namespace: NAMESPACE } } },
        capacity: { gpus: [{ type: "H100", sku: "Standard_ND96isr_H100_v5", gpusPerNode: 8, maxNodes: 4 }] },
        storage: {
          azureBlob: {
            account: h.azurite.accountName,
            container: "datasets",
            endpoint: h.azurite.blobEndpoint,
          },
          credentialsSecretRef: { name: "azure-storage", namespace: NAMESPACE },
        },
      },
    },
    {
      ...base,
      metadata: { name: "oci-ashburn" },
      spec: {
        type: "oci",
        role: "alternative",
        region: "us-ashburn-1",
        jurisdiction: "US",
        cluster: { existing: { kubeconfigSecretRef: { name: "oci-kubeconfig", namespace: NAMESPACE } } },
        capacity: { gpus: [{ type: "H100", sku: "BM.GPU.H100.8", gpusPerNode: 8, maxNodes: 4 }] },
        storage: {
          s3: { bucket: "spillway-datasets", endpoint: h.s3.endpoint, region: h.s3.region },
          credentialsSecretRef: { name: "oci-s3-credentials", namespace: NAMESPACE },
        },
      },
    },
  ] as (CloudProvider & KubeObject)[];
}

export function secret(name: string, data: Record<string, string>): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name, namespace: NAMESPACE },
    data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString("base64")])),
  } as KubeObject;
}

/** Polls `probe` until it returns a value (not undefined/false); fails after `timeoutMs`. */
export async function eventually<T>(
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline)
      throw new Error(`condition not met in time${last ? `: ${(last as Error).message}` : ""}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
