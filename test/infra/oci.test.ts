import { beforeAll, describe, expect, it } from "@jest/globals";
import * as pulumi from "@pulumi/pulumi";
import { installMocks, type MockRecorder, resolved, settle } from "./mocks.ts";

const COMPARTMENT = "ocid1.compartment.oc1..aaaacompartment";
const IMAGE = "ocid1.image.oc1.iad.aaaaimage";
const USER = "ocid1.user.oc1..aaaauser";

const goodConfig: Record<string, string> = {
  "oci:region": "us-ashburn-1",
  compartmentId: COMPARTMENT,
  gpuImageId: IMAGE,
  s3UserId: USER,
  gpuShape: "BM.GPU.H100.8",
  gpuNodeCount: "2",
  tags: "cost-center=ml",
};

let rec: MockRecorder;
let outputs: any;
let program: typeof import("../../infra/oci/program.ts");
let configMod: typeof import("../../infra/shared/config.ts");

beforeAll(async () => {
  rec = await installMocks("spillway-oci", "pc-h100-abc", {
    call: (token) => {
      if (token === "oci:Core/getServices:getServices")
        return {
          services: [
            { id: "svc-all", cidrBlock: "all-iad-services-in-oracle-services-network", name: "All" },
          ],
        };
      if (token === "oci:Identity/getAvailabilityDomains:getAvailabilityDomains")
        return { availabilityDomains: [{ name: "Uocm:US-ASHBURN-AD-1" }, { name: "Uocm:US-ASHBURN-AD-2" }] };
      if (token === "oci:ObjectStorage/getNamespace:getNamespace") return { namespace: "tenancyns" };
      if (token === "oci:ContainerEngine/getClusterKubeConfig:getClusterKubeConfig")
        return { content: "apiVersion: v1\nkind: Config\n" };
      return {};
    },
    state: (type) =>
      type === "oci:Identity/customerSecretKey:CustomerSecretKey" ? { key: "s3-secret" } : {},
  });
  // Imported only after setMocks, as the SDK requires.
  program = await import("../../infra/oci/program.ts");
  configMod = await import("../../infra/shared/config.ts");
  outputs = program.ociProgram(configMod.mapConfigSource(goodConfig));
  await settle(outputs);
});

describe("infra/oci program", () => {
  it("lays out a VCN with API, worker and load-balancer subnets, gateways and route tables", () => {
    expect(rec.ofType("oci:Core/vcn:Vcn")).toHaveLength(1);
    const subnets = rec.ofType("oci:Core/subnet:Subnet");
    expect(subnets.map((s) => s.name).sort()).toEqual(["api-subnet", "lb-subnet", "workers-subnet"]);
    const workers = subnets.find((s) => s.name === "workers-subnet")!;
    expect(workers.inputs.prohibitPublicIpOnVnic).toBe(true);
    expect(rec.ofType("oci:Core/internetGateway:InternetGateway")).toHaveLength(1);
    expect(rec.ofType("oci:Core/natGateway:NatGateway")).toHaveLength(1);
    expect(rec.ofType("oci:Core/serviceGateway:ServiceGateway")[0]!.inputs.services).toEqual([
      { serviceId: "svc-all" },
    ]);
    expect(rec.ofType("oci:Core/routeTable:RouteTable")).toHaveLength(2);
    expect(rec.ofType("oci:Core/securityList:SecurityList")).toHaveLength(3);
  });

  it("opens the Kubernetes API port on the API endpoint's security list", () => {
    const api = rec
      .ofType("oci:Core/securityList:SecurityList")
      .find((s) => s.name === "api-endpoint-security")!;
    const ports = api.inputs.ingressSecurityRules.map((r: any) => r.tcpOptions?.min);
    expect(ports).toEqual(expect.arrayContaining([6443, 12250]));
  });

  it("creates an enhanced OKE cluster in the VCN", () => {
    const cluster = rec.one("oci:ContainerEngine/cluster:Cluster");
    expect(cluster.inputs.type).toBe("ENHANCED_CLUSTER");
    expect(cluster.inputs.vcnId).toBe("vcn-id");
    expect(cluster.inputs.compartmentId).toBe(COMPARTMENT);
    expect(cluster.inputs.options.serviceLbSubnetIds).toEqual(["lb-subnet-id"]);
  });

  it("creates the GPU node pool with the configured shape, count, image and one placement per AD", () => {
    const pool = rec.one("oci:ContainerEngine/nodePool:NodePool");
    expect(pool.inputs.nodeShape).toBe("BM.GPU.H100.8");
    expect(pool.inputs.nodeConfigDetails.size).toBe(2);
    expect(pool.inputs.nodeSourceDetails).toMatchObject({ sourceType: "IMAGE", imageId: IMAGE });
    expect(pool.inputs.nodeConfigDetails.placementConfigs).toEqual([
      { availabilityDomain: "Uocm:US-ASHBURN-AD-1", subnetId: "workers-subnet-id" },
      { availabilityDomain: "Uocm:US-ASHBURN-AD-2", subnetId: "workers-subnet-id" },
    ]);
  });

  it("creates a private Object Storage bucket and an S3-compatibility key", () => {
    const bucket = rec.one("oci:ObjectStorage/bucket:Bucket");
    expect(bucket.inputs.accessType).toBe("NoPublicAccess");
    expect(bucket.inputs.namespace).toBe("tenancyns");
    expect(bucket.inputs.name).toMatch(/^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/);
    expect(rec.one("oci:Identity/customerSecretKey:CustomerSecretKey").inputs.userId).toBe(USER);
  });

  it("tags every taggable resource with the stack and managed-by: spillway", () => {
    const untaggable = new Set(["oci:Identity/customerSecretKey:CustomerSecretKey"]);
    const taggable = rec.resources.filter((r) => !untaggable.has(r.type));
    expect(taggable.length).toBeGreaterThanOrEqual(13);
    for (const r of taggable) {
      expect({ resource: r.name, tags: r.inputs.freeformTags }).toEqual({
        resource: r.name,
        tags: expect.objectContaining({
          "managed-by": "spillway",
          "spillway-stack": "pc-h100-abc",
          "cost-center": "ml",
        }),
      });
    }
  });

  it("outputs the kubeconfig and the S3 secret as secrets, and the S3 endpoint of the namespace", async () => {
    expect(await pulumi.isSecret(outputs.kubeconfig)).toBe(true);
    expect(await pulumi.isSecret(outputs.s3SecretAccessKey)).toBe(true);
    expect(await pulumi.isSecret(outputs.clusterId)).toBe(false);
    expect(await resolved(outputs.kubeconfig)).toContain("kind: Config");
    expect(await resolved(outputs.clusterId)).toBe("cluster-id");
    expect(await resolved(outputs.s3Endpoint)).toBe(
      "https://tenancyns.compat.objectstorage.us-ashburn-1.oraclecloud.com",
    );
    expect(await resolved(outputs.bucket)).toBe(rec.one("oci:ObjectStorage/bucket:Bucket").inputs.name);
  });
});

describe("infra/oci config", () => {
  const read = (over: Record<string, string | undefined>) => () =>
    program.readOciSettings(
      configMod.mapConfigSource(
        Object.fromEntries(
          Object.entries({ ...goodConfig, ...over }).filter(([, v]) => v !== undefined),
        ) as Record<string, string>,
      ),
    );

  it.each([
    [
      { gpuNodeCount: "abc" },
      "infra/oci: config gpuNodeCount must be an integer between 1 and 1000, got 'abc'",
    ],
    [{ gpuNodeCount: "0" }, "config gpuNodeCount must be an integer between 1 and 1000, got '0'"],
    [{ compartmentId: undefined }, "config compartmentId is required"],
    [{ compartmentId: "my-compartment" }, "config compartmentId must be a compartment OCID"],
    [{ "oci:region": undefined }, "config oci:region is required"],
    [{ vcnCidr: "10.0.0.0" }, "config vcnCidr must be an IPv4 CIDR block"],
    [{ nodePools: "[{]" }, "config nodePools must be a JSON list"],
    [{ nodePools: '[{"name":"gpu","nodes":"x"}]' }, "config nodePools[0].shape is required"],
    [{ tags: "novalue" }, "config tags: tag 'novalue' is not key=value"],
  ])("rejects %j clearly", (over, message) => {
    expect(read(over)).toThrow(message);
  });

  it("reports every problem at once", () => {
    expect(read({ gpuNodeCount: "abc", s3UserId: undefined })).toThrow(
      /gpuNodeCount must be an integer.*; config s3UserId is required/,
    );
  });

  it("takes several pools from nodePools, as the operator sets them", () => {
    const s = read({
      nodePools: JSON.stringify([
        { name: "h100", shape: "BM.GPU.H100.8", nodes: 3, gpusPerNode: 8, gpuType: "H100" },
        { name: "a100", shape: "BM.GPU.A100-v2.8", nodes: 1 },
      ]),
    })();
    expect(s.gpuPools).toEqual([
      { name: "h100", shape: "BM.GPU.H100.8", nodes: 3, gpusPerNode: 8, gpuType: "H100" },
      { name: "a100", shape: "BM.GPU.A100-v2.8", nodes: 1 },
    ]);
  });

  it("refuses to declare resources with bad config", () => {
    const before = rec.resources.length;
    expect(() =>
      program.ociProgram(configMod.mapConfigSource({ ...goodConfig, gpuNodeCount: "abc" })),
    ).toThrow("infra/oci: config gpuNodeCount must be an integer");
    expect(rec.resources.length).toBe(before);
  });
});
