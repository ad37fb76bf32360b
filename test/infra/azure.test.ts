import { beforeAll, describe, expect, it } from "@jest/globals";
import * as pulumi from "@pulumi/pulumi";
import { installMocks, type MockRecorder, resolved, settle } from "./mocks.ts";

const KUBECONFIG = "apiVersion: v1\nkind: Config\nclusters: []\n";

const goodConfig: Record<string, string> = {
  "azure-native:location": "eastus",
  gpuShape: "Standard_ND96isr_H100_v5",
  gpuNodeCount: "4",
  gpuPoolName: "h100",
  zones: "1",
};

let rec: MockRecorder;
let outputs: any;
let program: typeof import("../../infra/azure/program.ts");
let configMod: typeof import("../../infra/shared/config.ts");

beforeAll(async () => {
  rec = await installMocks("spillway-azure", "primary-eastus", {
    call: (token) => {
      switch (token) {
        case "azure-native:authorization:getClientConfig":
          return { subscriptionId: "sub-1", tenantId: "tenant-1", clientId: "c", objectId: "o" };
        case "azure-native:storage:listStorageAccountKeys":
          return { keys: [{ keyName: "key1", value: "account-key", permissions: "FULL" }] };
        case "azure-native:containerservice:listManagedClusterUserCredentials":
          return {
            kubeconfigs: [{ name: "clusterUser", value: Buffer.from(KUBECONFIG).toString("base64") }],
          };
        default:
          throw new Error(`unexpected invoke ${token}`);
      }
    },
    state: (type, name) => {
      if (type === "azure-native:managedidentity:UserAssignedIdentity")
        return { principalId: `${name}-principal`, clientId: `${name}-client` };
      if (type === "azure-native:storage:StorageAccount")
        return { primaryEndpoints: { blob: "https://acct.blob.core.windows.net/" } };
      return {};
    },
  });
  program = await import("../../infra/azure/program.ts");
  configMod = await import("../../infra/shared/config.ts");
  outputs = program.azureProgram(configMod.mapConfigSource(goodConfig));
  await settle(outputs);
});

describe("infra/azure program", () => {
  it("creates a resource group, an AKS cluster with a system pool, and identities", () => {
    expect(rec.one("azure-native:resources:ResourceGroup").inputs.location).toBe("eastus");
    const cluster = rec.one("azure-native:containerservice:ManagedCluster");
    expect(cluster.inputs.agentPoolProfiles).toEqual([
      expect.objectContaining({ name: "system", mode: "System" }),
    ]);
    expect(cluster.inputs.identity).toEqual({
      type: "UserAssigned",
      userAssignedIdentities: ["cluster-identity-id"],
    });
    expect(
      rec
        .ofType("azure-native:managedidentity:UserAssignedIdentity")
        .map((r) => r.name)
        .sort(),
    ).toEqual(["cluster-identity", "operator-identity"]);
  });

  it("binds the GPU agent pool, with the configured VM size and count, to the capacity reservation group", () => {
    const crg = rec.one("azure-native:compute:CapacityReservationGroup");
    expect(crg.inputs.zones).toEqual(["1"]);
    const pool = rec.one("azure-native:containerservice:AgentPool");
    expect(pool.inputs).toMatchObject({
      agentPoolName: "h100",
      vmSize: "Standard_ND96isr_H100_v5",
      count: 4,
      mode: "User",
      capacityReservationGroupID: "capacity-reservation-group-id",
      availabilityZones: ["1"],
    });
    expect(pool.inputs.nodeTaints).toEqual(["nvidia.com/gpu=present:NoSchedule"]);
  });

  it("lets the cluster's control-plane identity use the reservation group", () => {
    const ra = rec.one("azure-native:authorization:RoleAssignment");
    expect(ra.inputs.principalId).toBe("cluster-identity-principal");
    expect(ra.inputs.scope).toBe("capacity-reservation-group-id");
    expect(ra.inputs.roleDefinitionId).toBe(
      "/subscriptions/sub-1/providers/Microsoft.Authorization/roleDefinitions/b24988ac-6180-42a0-ab88-20f7382dd24c",
    );
  });

  it("creates a private storage account with datasets and checkpoints containers", () => {
    const account = rec.one("azure-native:storage:StorageAccount");
    expect(account.inputs.accountName).toMatch(/^[a-z0-9]{3,24}$/);
    expect(account.inputs.allowBlobPublicAccess).toBe(false);
    expect(
      rec
        .ofType("azure-native:storage:BlobContainer")
        .map((c) => c.inputs.containerName)
        .sort(),
    ).toEqual(["checkpoints", "datasets"]);
  });

  it("tags every taggable resource with the stack and managed-by: spillway", () => {
    const untaggable = new Set([
      "azure-native:storage:BlobContainer",
      "azure-native:authorization:RoleAssignment",
    ]);
    const taggable = rec.resources.filter((r) => !untaggable.has(r.type));
    expect(taggable.length).toBeGreaterThanOrEqual(7);
    for (const r of taggable) {
      expect({ resource: r.name, tags: r.inputs.tags }).toEqual({
        resource: r.name,
        tags: expect.objectContaining({ "managed-by": "spillway", "spillway-stack": "primary-eastus" }),
      });
    }
  });

  it("outputs the kubeconfig (decoded) and the storage key as secrets", async () => {
    expect(await pulumi.isSecret(outputs.kubeconfig)).toBe(true);
    expect(await pulumi.isSecret(outputs.storageAccountKey)).toBe(true);
    expect(await resolved(outputs.kubeconfig)).toBe(KUBECONFIG);
    expect(await resolved(outputs.clusterId)).toBe("cluster-id");
    expect(await resolved(outputs.operatorIdentityClientId)).toBe("operator-identity-client");
    expect(outputs.bucket).toBe("datasets");
    expect(await resolved(outputs.blobEndpoint)).toBe("https://acct.blob.core.windows.net/");
  });
});

describe("infra/azure config", () => {
  const read = (over: Record<string, string | undefined>) => () =>
    program.readAzureSettings(
      configMod.mapConfigSource(
        Object.fromEntries(
          Object.entries({ ...goodConfig, ...over }).filter(([, v]) => v !== undefined),
        ) as Record<string, string>,
      ),
    );

  it.each([
    [
      "a non-numeric node count",
      { gpuNodeCount: "abc" },
      "infra/azure: config gpuNodeCount must be an integer",
    ],
    ["no location", { "azure-native:location": undefined }, "config location is required"],
    [
      "an AKS-invalid pool name",
      { gpuPoolName: "GPU_pool" },
      "node pool name must be 1-12 lower-case letters",
    ],
    ["a bad container name", { datasetsContainer: "Data_Sets" }, "config datasetsContainer must be 3-63"],
    ["a negative reservation", { gpuReservedCount: "-1" }, "config gpuReservedCount must be an integer"],
  ])("rejects %s clearly", (_label, over, message) => {
    expect(read(over)).toThrow(message);
  });

  it("reserves capacity up front only when asked", () => {
    expect(rec.ofType("azure-native:compute:CapacityReservation")).toHaveLength(0);
    expect(read({ gpuReservedCount: "2" })().gpuReservedCount).toBe(2);
  });
});
