// What a ProvisionRequest becomes for Pulumi: stack configuration the programs in infra/
// accept, the operator's project file for a stack workspace, and outputs → ProvisionOutputs.
import { join } from "node:path";
import { describe, expect, it } from "@jest/globals";
import { readAzureSettings } from "../../../infra/azure/program.ts";
import { readOciSettings } from "../../../infra/oci/program.ts";
import { mapConfigSource } from "../../../infra/shared/config.ts";
import {
  findInfraDir,
  operatorProjectFile,
  provisionOutputsFrom,
  stackConfigFor,
} from "../../../operator/clouds/pulumi/index.ts";
import { loadProgramProject } from "../../../operator/clouds/pulumi/stackconfig.ts";
import type { ProvisionRequest } from "../../../operator/ports/provisioner.ts";
import { ROOT } from "../../helpers/examples.ts";

const oci: ProvisionRequest = {
  stackName: "pc-1",
  program: "oci",
  provider: "oci-ashburn",
  region: "us-ashburn-1",
  nodePools: [{ name: "h100", shape: "BM.GPU.H100.8", gpuType: "H100", gpusPerNode: 8, nodes: 2 }],
  config: {
    compartmentId: "ocid1.compartment.oc1..aaaa",
    gpuImageId: "ocid1.image.oc1.iad.aaaa",
    s3UserId: "ocid1.user.oc1..aaaa",
    gpuNodeCount: "7",
  },
  secretConfig: { "oci:privateKey": "-----BEGIN PRIVATE KEY-----" },
};

/** The program's view of the stack config: unqualified keys in its project namespace. */
function programSource(config: Record<string, { value: string }>, project: string) {
  return mapConfigSource(
    Object.fromEntries(
      Object.entries(config).map(([k, v]) => [
        k.startsWith(`${project}:`) ? k.slice(project.length + 1) : k,
        v.value,
      ]),
    ),
  );
}

describe("stackConfigFor", () => {
  it("gives the OCI program config it accepts: region, node pools from the request, secrets marked", () => {
    const config = stackConfigFor(oci, "spillway-oci");
    expect(config["oci:region"]).toEqual({ value: "us-ashburn-1", secret: false });
    expect(config["oci:privateKey"]).toEqual({ value: "-----BEGIN PRIVATE KEY-----", secret: true });
    expect(config["spillway-oci:compartmentId"]?.secret).toBe(false);
    // The single-pool keys would be ignored beside nodePools: they are not passed.
    expect(config["spillway-oci:gpuNodeCount"]).toBeUndefined();
    const settings = readOciSettings(programSource(config, "spillway-oci"));
    expect(settings.gpuPools).toEqual([
      { name: "h100", shape: "BM.GPU.H100.8", nodes: 2, gpusPerNode: 8, gpuType: "H100" },
    ]);
    expect(settings.region).toBe("us-ashburn-1");
  });

  it("gives the Azure program its location both ways", () => {
    const config = stackConfigFor(
      {
        ...oci,
        program: "azure",
        region: "eastus",
        config: {},
        secretConfig: {},
        nodePools: [
          { name: "h100", shape: "Standard_ND96isr_H100_v5", gpuType: "H100", gpusPerNode: 8, nodes: 1 },
        ],
      },
      "spillway-azure",
    );
    expect(config["azure-native:location"]?.value).toBe("eastus");
    const settings = readAzureSettings(programSource(config, "spillway-azure"));
    expect(settings.location).toBe("eastus");
    expect(settings.gpuPools[0]).toMatchObject({ shape: "Standard_ND96isr_H100_v5", nodes: 1 });
  });

  it("does not let request config override the keys the operator owns", () => {
    const config = stackConfigFor(
      { ...oci, config: { ...oci.config, "oci:region": "eu-frankfurt-1" } },
      "spillway-oci",
    );
    expect(config["oci:region"]?.value).toBe("us-ashburn-1");
  });
});

describe("operatorProjectFile", () => {
  it("keeps the program's project and points main back at infra/<program> from the stack workspace", () => {
    const project = loadProgramProject(join(ROOT, "infra"), "oci");
    const workDir = "/var/lib/spillway/pulumi/workspaces/oci/pc-1";
    const file = operatorProjectFile(project, workDir);
    expect(file.name).toBe("spillway-oci");
    expect(join(workDir, file.main as string)).toBe(join(ROOT, "infra", "oci", "index.ts"));
    expect((file.runtime as { name: string }).name).toBe("nodejs");
  });

  it("finds infra/ by walking up from the adapter", () => {
    expect(findInfraDir()).toBe(join(ROOT, "infra"));
  });
});

describe("provisionOutputsFrom", () => {
  const outs = {
    clusterId: { value: "ocid1.cluster.oc1.iad.x", secret: false },
    kubeconfig: { value: "apiVersion: v1", secret: true },
    bucket: { value: "data", secret: false },
    s3Endpoint: { value: "https://ns.compat.objectstorage.us-ashburn-1.oraclecloud.com", secret: false },
    region: { value: "us-ashburn-1", secret: false },
    s3SecretAccessKey: { value: "k", secret: true },
  };

  it("maps the program's outputs", () => {
    expect(provisionOutputsFrom(outs, oci)).toEqual({
      clusterId: "ocid1.cluster.oc1.iad.x",
      kubeconfig: "apiVersion: v1",
      bucket: "data",
      s3Endpoint: "https://ns.compat.objectstorage.us-ashburn-1.oraclecloud.com",
      region: "us-ashburn-1",
    });
  });

  it("refuses a kubeconfig output that is not secret, and a stack without a cluster id", () => {
    expect(() => provisionOutputsFrom({ ...outs, kubeconfig: { value: "x", secret: false } }, oci)).toThrow(
      /not marked secret/,
    );
    const { clusterId: _, ...noId } = outs;
    expect(() => provisionOutputsFrom(noId, oci)).toThrow(/no clusterId output/);
  });
});
