/**
 * The sandbox's side of the operator: the objects a platform team would create (namespaces,
 * credential Secrets, the two CloudProviders) made from the scenario, and the adapters the
 * operator uses there — the real Azure responder over the ARM emulator's HTTPS endpoints, the
 * sandbox provisioner (new simulated clusters) behind the real ProvisionedCluster controller.
 */

import type { CloudProvider } from "../api/v1alpha1/index.ts";
import { StoreCheckpointPlanner } from "../checkpoints/index.ts";
import { AzureResponder } from "../clouds/azure/index.ts";
import { storeResolver } from "../controllers/context.ts";
import { dataSetController } from "../controllers/dataset/controller.ts";
import { provisionedClusterController } from "../controllers/provisionedcluster/index.ts";
import { DatasetSyncs } from "../dataplane/stager.ts";
import type { ManagerOptions } from "../manager.ts";
import type { KubeClient } from "../runtime/client.ts";
import { isAlreadyExists } from "../runtime/client.ts";
import { type KubeObject, Resources, SpillwayResources } from "../runtime/resources.ts";
import { type ArmEmulator, startArmEmulator } from "./arm/index.ts";
import type { ArmEmulatorHandle, ArmEmulatorLaunch, Sandbox } from "./sandbox.ts";

export const OPERATOR_NAMESPACE = "spillway-system";
/** Entra ID service principal the ARM emulator accepts (sandbox-only values). */
const SANDBOX_SP = {
  tenantId: "00000000-0000-0000-0000-00000000a2be",
  clientId: "spillway-sandbox",
  clientSecret: "sandbox-only-secret",
};

const emulators = new Map<string, ArmEmulator>();

/** The sandbox's `startArm`: the ARM emulator, remembered so the responder can trust its CA. */
// The emulator picks its own free port (launch.port is a preference the emulator does not take).
export async function startSandboxArm(launch: ArmEmulatorLaunch): Promise<ArmEmulatorHandle> {
  const arm = await startArmEmulator({
    ...launch.scenario,
    location: launch.region,
    auth: { ...SANDBOX_SP },
  });
  emulators.set(arm.url, arm);
  return {
    url: arm.url,
    close: async () => {
      emulators.delete(arm.url);
      await arm.close();
    },
  };
}

export function armEmulator(sandbox: Sandbox): ArmEmulator | undefined {
  return sandbox.armUrl ? emulators.get(sandbox.armUrl) : undefined;
}

async function ensure<T extends KubeObject>(
  client: KubeClient,
  r: Parameters<KubeClient["create"]>[0],
  obj: T,
): Promise<void> {
  try {
    await client.create(r, obj);
  } catch (err) {
    if (!isAlreadyExists(err)) throw err;
    const current = await client.get<T>(r, obj.metadata.name!, obj.metadata.namespace);
    await client.update(r, {
      ...obj,
      metadata: { ...obj.metadata, resourceVersion: current.metadata.resourceVersion },
    });
  }
}

function secret(
  name: string,
  data: Record<string, string>,
): KubeObject & { stringData: Record<string, string> } {
  return { metadata: { name, namespace: OPERATOR_NAMESPACE }, stringData: data };
}

/** The CloudProviders of the scenario, pointing at the sandbox's endpoints. */
export function sandboxProviders(sandbox: Sandbox): CloudProvider[] {
  const { azure, oci } = sandbox.scenario.clouds;
  const arm = azure.arm as Record<string, string | undefined>;
  const primary: CloudProvider = {
    apiVersion: "spillway.dev/v1alpha1",
    kind: "CloudProvider",
    metadata: { name: azure.name },
    spec: {
      type: "azure",
      role: "primary",
      region: azure.region,
      jurisdiction: azure.jurisdiction,
      cluster: {
        existing: {
          kubeconfigSecretRef: { name: `${azure.name}-kubeconfig`, namespace: OPERATOR_NAMESPACE },
        },
      },
      capacity: { gpus: azure.capacity },
      pricing: { gpus: azure.pricing },
      storage: {
        azureBlob: {
          account: sandbox.azureStorage.accountName,
          container: sandbox.azureStorage.container,
          endpoint: sandbox.azureStorage.blobEndpoint,
        },
        credentialsSecretRef: { name: `${azure.name}-storage`, namespace: OPERATOR_NAMESPACE },
      },
      azure: {
        subscriptionId: arm.subscriptionId ?? "00000000-0000-0000-0000-000000000000",
        resourceGroup: arm.resourceGroup ?? "spillway-rg",
        aksCluster: arm.aksCluster ?? "spillway-aks",
        nodePool: arm.nodePool ?? "gpuh100",
        capacityReservationGroup: arm.capacityReservationGroup ?? "spillway-crg",
        ...(sandbox.armUrl ? { armEndpoint: sandbox.armUrl } : {}),
        credentialsSecretRef: { name: `${azure.name}-credentials`, namespace: OPERATOR_NAMESPACE },
      },
    },
  };
  const alternative: CloudProvider = {
    apiVersion: "spillway.dev/v1alpha1",
    kind: "CloudProvider",
    metadata: { name: oci.name },
    spec: {
      type: "oci",
      role: "alternative",
      region: oci.region,
      jurisdiction: oci.jurisdiction,
      cluster: {
        provision: {
          program: "oci",
          config: {
            compartmentId: "ocid1.compartment.oc1..sandbox",
            gpuImageId: "ocid1.image.oc1..sandbox",
            s3UserId: "ocid1.user.oc1..sandbox",
          },
          maxClusters: oci.maxClusters ?? 1,
          idleTTL: oci.idleTTL ?? "30m",
        },
      },
      capacity: { gpus: oci.capacity },
      pricing: { gpus: oci.pricing },
      storage: {
        s3: {
          bucket: sandbox.s3Storage.bucket,
          endpoint: sandbox.s3Storage.endpoint,
          region: sandbox.s3Storage.region,
        },
        credentialsSecretRef: { name: `${oci.name}-s3`, namespace: OPERATOR_NAMESPACE },
      },
    },
  };
  return [primary, alternative];
}

/** Creates what a platform team creates after `helm install`: namespaces, Secrets, CloudProviders. */
export async function installSandboxClouds(
  sandbox: Sandbox,
  client: KubeClient,
  namespaces: string[] = [],
): Promise<void> {
  for (const ns of [OPERATOR_NAMESPACE, ...namespaces]) {
    await ensure(client, Resources.Namespace, { metadata: { name: ns } });
  }
  const { azure, oci } = sandbox.scenario.clouds;
  await ensure(
    client,
    Resources.Secret,
    secret(`${azure.name}-kubeconfig`, { kubeconfig: sandbox.aks.kubeconfig() }),
  );
  // The emulator is also the Entra ID authority: the Secret says so, as it would for a sovereign cloud.
  await ensure(
    client,
    Resources.Secret,
    secret(`${azure.name}-credentials`, {
      ...SANDBOX_SP,
      ...(sandbox.armUrl ? { authorityHost: sandbox.armUrl } : {}),
    }),
  );
  await ensure(
    client,
    Resources.Secret,
    secret(`${azure.name}-storage`, { connectionString: sandbox.azureStorage.connectionString }),
  );
  await ensure(
    client,
    Resources.Secret,
    secret(`${oci.name}-s3`, {
      accessKeyId: sandbox.s3Storage.accessKeyId,
      secretAccessKey: sandbox.s3Storage.secretAccessKey,
    }),
  );
  for (const p of sandboxProviders(sandbox)) {
    await ensure(client, SpillwayResources.CloudProvider, p as CloudProvider & KubeObject);
  }
}

/** The operator's adapters in the sandbox. */
export function sandboxAdapters(
  sandbox: Sandbox,
): Pick<
  ManagerOptions,
  "responderFor" | "provisionerFor" | "extraControllers" | "stager" | "checkpointsFor"
> {
  const arm = armEmulator(sandbox);
  const responder = new AzureResponder({ ...(arm ? { ca: arm.ca, authorityHost: arm.url } : {}) });
  const datasets = new DatasetSyncs();
  return {
    responderFor: (p) => (p.spec.type === "azure" && p.spec.role === "primary" ? responder : undefined),
    provisionerFor: (p) => (p.spec.cluster.provision ? sandbox.provisioner : undefined),
    stager: datasets,
    checkpointsFor: (ctx) => new StoreCheckpointPlanner(storeResolver(ctx)),
    extraControllers: (ctx) => [
      provisionedClusterController(ctx, { progressIntervalMs: 500 }),
      dataSetController(ctx, datasets, { progressIntervalMs: 500 }),
    ],
  };
}
