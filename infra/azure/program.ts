/**
 * The primary's side on Azure: a resource group with an AKS cluster, a capacity reservation
 * group the GPU agent pool is bound to (the responder reserves capacity in it and scales the
 * pool), a storage account with `datasets` and `checkpoints` containers, and a user-assigned
 * identity for the operator. The cluster's control plane uses its own user-assigned identity,
 * which AKS requires to place nodes in a capacity reservation group (it needs Contributor on
 * the group).
 *
 * The same function runs under the Pulumi CLI (`index.ts`) and inline under the Automation
 * API (`operator/clouds/pulumi`).
 */
import * as authorization from "@pulumi/azure-native/authorization/index.js";
import * as compute from "@pulumi/azure-native/compute/index.js";
import * as containerservice from "@pulumi/azure-native/containerservice/index.js";
import * as managedidentity from "@pulumi/azure-native/managedidentity/index.js";
import * as resources from "@pulumi/azure-native/resources/index.js";
import * as storage from "@pulumi/azure-native/storage/index.js";
import * as pulumi from "@pulumi/pulumi";
import { ConfigReader, type ConfigSource, type GpuPoolConfig } from "../shared/config.ts";
import { StackNaming } from "../shared/naming.ts";
import { parseTagList, stackTags } from "../shared/tagging.ts";

export interface AzureSettings {
  location: string;
  resourceGroupName?: string;
  kubernetesVersion?: string;
  systemVmSize: string;
  systemNodeCount: number;
  gpuPools: GpuPoolConfig[];
  /** Zones of the capacity reservation group and GPU pools (empty: regional). */
  zones: string[];
  /** VMs reserved up front per GPU pool in the group (0: the responder reserves per offer). */
  gpuReservedCount: number;
  storageSku: string;
  containers: { datasets: string; checkpoints: string };
  extraTags: Record<string, string>;
}

/** Built-in role "Contributor". */
const CONTRIBUTOR_ROLE = "b24988ac-6180-42a0-ab88-20f7382dd24c";

export function readAzureSettings(source: ConfigSource): AzureSettings {
  const c = new ConfigReader("azure", source);
  let extraTags: Record<string, string> = {};
  try {
    extraTags = parseTagList(source.get("tags"));
  } catch (e) {
    c.problem(`config tags: ${(e as Error).message}`);
  }
  const containerName = /^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$/;
  const containerRule = "3-63 lower-case letters, digits or single hyphens";
  const location = source.get("location") ?? source.get("azure-native:location");
  const settings: AzureSettings = {
    location: c.string("location", {
      ...(location ? { default: location } : {}),
      pattern: /^[a-z0-9]+$/,
      rule: "an Azure region name such as eastus",
      hint: "set location or azure-native:location",
    }),
    resourceGroupName: c.optionalString("resourceGroupName", {
      pattern: /^[-\w._()]{1,89}[-\w_()]$/,
      rule: "a resource group name (1-90 letters, digits, '-', '_', '.', '(', ')')",
    }),
    kubernetesVersion: c.optionalString("kubernetesVersion", {
      pattern: /^[0-9]+\.[0-9]+(\.[0-9]+)?$/,
      rule: "a version such as 1.31",
    }),
    systemVmSize: c.string("systemVmSize", { default: "Standard_D4s_v5" }),
    systemNodeCount: c.int("systemNodeCount", { min: 1, max: 100, default: 2 }),
    gpuPools: c.gpuPools({
      defaultShape: "Standard_ND96isr_H100_v5",
      namePattern: /^[a-z][a-z0-9]{0,11}$/,
      nameRule: "1-12 lower-case letters or digits, starting with a letter (AKS pool names)",
    }),
    zones: c.list("zones"),
    gpuReservedCount: c.int("gpuReservedCount", { min: 0, max: 1000, default: 0 }),
    storageSku: c.string("storageSku", {
      default: "Standard_LRS",
      pattern: /^(Standard|Premium)_[A-Z]+$/,
      rule: "a storage SKU such as Standard_LRS",
    }),
    containers: {
      datasets: c.string("datasetsContainer", {
        default: "datasets",
        pattern: containerName,
        rule: containerRule,
      }),
      checkpoints: c.string("checkpointsContainer", {
        default: "checkpoints",
        pattern: containerName,
        rule: containerRule,
      }),
    },
    extraTags,
  };
  c.done();
  return settings;
}

export interface AzureOutputs {
  kubeconfig: pulumi.Output<string>;
  clusterId: pulumi.Output<string>;
  clusterName: pulumi.Output<string>;
  resourceGroup: pulumi.Output<string>;
  capacityReservationGroupId: pulumi.Output<string>;
  capacityReservationGroup: pulumi.Output<string>;
  gpuNodePools: pulumi.Output<string>[];
  storageAccount: pulumi.Output<string>;
  storageAccountKey: pulumi.Output<string>;
  blobEndpoint: pulumi.Output<string>;
  bucket: string;
  checkpointsContainer: string;
  operatorIdentityClientId: pulumi.Output<string>;
  operatorIdentityId: pulumi.Output<string>;
  region: string;
}

export function azureProgram(source: ConfigSource): AzureOutputs {
  const s = readAzureSettings(source);
  const project = pulumi.getProject();
  const stack = pulumi.getStack();
  const names = new StackNaming(project, stack);
  const tags = stackTags(project, stack, s.extraTags);
  const location = s.location;

  const group = new resources.ResourceGroup("resource-group", {
    resourceGroupName: s.resourceGroupName ?? names.name("rg", 90),
    location,
    tags,
  });
  const resourceGroupName = group.name;

  const operatorIdentity = new managedidentity.UserAssignedIdentity("operator-identity", {
    resourceGroupName,
    location,
    resourceName: names.name("operator", 128),
    tags,
  });
  const clusterIdentity = new managedidentity.UserAssignedIdentity("cluster-identity", {
    resourceGroupName,
    location,
    resourceName: names.name("aks-control-plane", 128),
    tags,
  });

  const reservationGroup = new compute.CapacityReservationGroup("capacity-reservation-group", {
    resourceGroupName,
    location,
    capacityReservationGroupName: names.name("crg", 80),
    ...(s.zones.length > 0 ? { zones: s.zones } : {}),
    tags,
  });
  if (s.gpuReservedCount > 0) {
    for (const pool of s.gpuPools) {
      new compute.CapacityReservation(`capacity-reservation-${pool.name}`, {
        resourceGroupName,
        location,
        capacityReservationGroupName: reservationGroup.name,
        capacityReservationName: names.name(`cr-${pool.name}`, 80),
        sku: { name: pool.shape, capacity: s.gpuReservedCount },
        ...(s.zones.length > 0 ? { zones: [s.zones[0]!] } : {}),
        tags,
      });
    }
  }

  const subscriptionId = authorization.getClientConfigOutput().subscriptionId;
  const clusterMayUseReservations = new authorization.RoleAssignment("cluster-identity-on-crg", {
    principalId: clusterIdentity.principalId,
    principalType: "ServicePrincipal",
    roleDefinitionId: pulumi.interpolate`/subscriptions/${subscriptionId}/providers/Microsoft.Authorization/roleDefinitions/${CONTRIBUTOR_ROLE}`,
    scope: reservationGroup.id,
  });

  const cluster = new containerservice.ManagedCluster(
    "cluster",
    {
      resourceGroupName,
      location,
      resourceName: names.name("aks", 63),
      dnsPrefix: names.name("aks", 54),
      ...(s.kubernetesVersion ? { kubernetesVersion: s.kubernetesVersion } : {}),
      identity: { type: "UserAssigned", userAssignedIdentities: [clusterIdentity.id] },
      agentPoolProfiles: [
        {
          name: "system",
          mode: "System",
          count: s.systemNodeCount,
          vmSize: s.systemVmSize,
          osType: "Linux",
          type: "VirtualMachineScaleSets",
          tags,
        },
      ],
      oidcIssuerProfile: { enabled: true },
      securityProfile: { workloadIdentity: { enabled: true } },
      tags,
    },
    { dependsOn: [clusterMayUseReservations] },
  );

  const gpuPools = s.gpuPools.map(
    (pool) =>
      new containerservice.AgentPool(`gpu-pool-${pool.name}`, {
        resourceGroupName,
        resourceName: cluster.name,
        agentPoolName: pool.name,
        mode: "User",
        osType: "Linux",
        type: "VirtualMachineScaleSets",
        vmSize: pool.shape,
        count: pool.nodes,
        capacityReservationGroupID: reservationGroup.id,
        ...(s.zones.length > 0 ? { availabilityZones: s.zones } : {}),
        nodeLabels: {
          "spillway.dev/pool": pool.name,
          ...(pool.gpuType ? { "spillway.dev/gpu-type": pool.gpuType } : {}),
        },
        nodeTaints: ["nvidia.com/gpu=present:NoSchedule"],
        tags,
      }),
  );

  const account = new storage.StorageAccount("storage-account", {
    resourceGroupName,
    location,
    accountName: names.globallyUnique("data", 24, true),
    kind: "StorageV2",
    sku: { name: s.storageSku },
    allowBlobPublicAccess: false,
    minimumTlsVersion: "TLS1_2",
    enableHttpsTrafficOnly: true,
    tags,
  });
  for (const [key, containerName] of Object.entries(s.containers)) {
    new storage.BlobContainer(`${key}-container`, {
      resourceGroupName,
      accountName: account.name,
      containerName,
      publicAccess: "None",
    });
  }
  const accountKey = storage
    .listStorageAccountKeysOutput({ resourceGroupName, accountName: account.name })
    .keys.apply((keys) => keys[0]?.value ?? "");

  const kubeconfig = containerservice
    .listManagedClusterUserCredentialsOutput({ resourceGroupName, resourceName: cluster.name })
    .kubeconfigs.apply((kcs) => Buffer.from(kcs[0]?.value ?? "", "base64").toString("utf8"));

  return {
    kubeconfig: pulumi.secret(kubeconfig),
    clusterId: cluster.id,
    clusterName: cluster.name,
    resourceGroup: resourceGroupName,
    capacityReservationGroupId: reservationGroup.id,
    capacityReservationGroup: reservationGroup.name,
    gpuNodePools: gpuPools.map((p) => p.name),
    storageAccount: account.name,
    storageAccountKey: pulumi.secret(accountKey),
    blobEndpoint: account.primaryEndpoints.apply((e) => e?.blob ?? ""),
    bucket: s.containers.datasets,
    checkpointsContainer: s.containers.checkpoints,
    operatorIdentityClientId: operatorIdentity.clientId,
    operatorIdentityId: operatorIdentity.id,
    region: location,
  };
}
