// The classification of Pulumi engine output into ProvisionError reasons, over real error
// texts reported by the OCI and Azure providers and by the Pulumi CLI.
import { describe, expect, it } from "@jest/globals";
import {
  CLASSIFICATION_RULES,
  classifyPulumiOutput,
  scrubSecrets,
} from "../../../operator/clouds/pulumi/index.ts";

const cases: Array<[string, string, string, boolean]> = [
  [
    "DIY backend lock left by a killed run",
    "error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end or delete the lock file with `pulumi cancel`.\n  file:///state/.pulumi/locks/organization/spillway-oci/pc-1/2b1c.json: created by op@pod (pid 17) at 2026-11-21T20:01:02Z",
    "StackLocked",
    true,
  ],
  [
    "Pulumi Cloud concurrent update",
    "error: [409] Conflict: Another update is currently in progress.",
    "StackLocked",
    true,
  ],
  [
    "OCI GPU service limit",
    "oci:containerengine/nodePool:NodePool (gpu-pool-h100):\n    error: 1 error occurred:\n\t* 400-LimitExceeded, The following service limits were exceeded: gpu-h100-count. Request a service limit increase from the service limits page in the console.",
    "QuotaExceeded",
    false,
  ],
  [
    "OCI cluster limit",
    "error: 400-LimitExceeded, The cluster limit for this tenancy has been exceeded.\nSuggestion: Request a service limit increase for this resource Containerengine Cluster",
    "QuotaExceeded",
    false,
  ],
  [
    "ARM regional cores quota",
    'error: Code="OperationNotAllowed" Message="Operation could not be completed as it results in exceeding approved Total Regional Cores quota. Additional details - Deployment Model: Resource Manager, Location: eastus, Current Limit: 10, Current Usage: 8, Additional Required: 96"',
    "QuotaExceeded",
    false,
  ],
  [
    "AKS QuotaExceeded",
    '{"code": "QuotaExceeded", "message": "Provisioning of resource(s) for container service spw in resource group spw failed. Message: Operation results in exceeding quota limits of Core. Maximum allowed: 10, Current in use: 0, Additional requested: 96."}',
    "QuotaExceeded",
    false,
  ],
  [
    "OCI out of host capacity (reported as a 500)",
    "error: 1 error occurred:\n\t* 500-InternalError, Out of host capacity.\nSuggestion: The service for this resource encountered an error. Please contact support for help with service: Core Instance",
    "NoCapacity",
    true,
  ],
  [
    "OKE work request: node launch failure",
    "Error Message: work request did not succeed, workId: ocid1.clustersworkrequest.oc1.iad.aaaa, entity: nodepool, action: CREATED. Message: 2 node(s) launch failure. Reason for failure on one of the nodes : Error returned by Unknown operation operation in Unknown service service.(500, InternalError, false) Out of host capacity.",
    "NoCapacity",
    true,
  ],
  [
    "ARM AllocationFailed",
    'error: Code="AllocationFailed" Message="Allocation failed. We do not have sufficient capacity for the requested VM size in this region."',
    "NoCapacity",
    true,
  ],
  [
    "ARM ZonalAllocationFailed",
    'error: Code="ZonalAllocationFailed" Message="Allocation failed. We do not have sufficient capacity for the requested VM size in this zone."',
    "NoCapacity",
    true,
  ],
  [
    "ARM SkuNotAvailable",
    "error: Code=\"SkuNotAvailable\" Message=\"The requested VM size for resource 'Following SKUs have failed for Capacity Restrictions: Standard_ND96isr_H100_v5' is currently not available in location 'eastus'.\"",
    "NoCapacity",
    false,
  ],
  [
    "the program's config validation",
    "Running program '/app/infra/oci/index.ts' failed with an unhandled exception:\n    InfraConfigError: infra/oci: config gpuImageId is required (the OCID of a GPU OKE node image for the region)",
    "ConfigInvalid",
    false,
  ],
  [
    "Pulumi required configuration",
    "error: Missing required configuration variable 'spillway-oci:compartmentId'\n    please set a value using the command `pulumi config set spillway-oci:compartmentId <value>`",
    "ConfigInvalid",
    false,
  ],
  ["wrong passphrase", "error: could not open stack: incorrect passphrase", "ConfigInvalid", false],
  [
    "OCI invalid parameter",
    "error: 400-InvalidParameter, Invalid kubernetesVersion: v1.99.0 is not supported",
    "ConfigInvalid",
    false,
  ],
  [
    "OCI credentials refused",
    "error: 401-NotAuthenticated, The required information to complete authentication was not provided or was incorrect.",
    "ProviderError",
    false,
  ],
  [
    "Entra ID client secret refused",
    "error: AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value.",
    "ProviderError",
    false,
  ],
  [
    "provider plugin missing",
    "error: no resource plugin 'oci-v4.20.0' found in the workspace at version v4.20.0 or on your $PATH",
    "ProviderError",
    false,
  ],
  ["OCI throttling", "error: 429-TooManyRequests, Too many requests for the user", "ProviderError", true],
  [
    "network reset",
    'error: Get "https://containerengine.us-ashburn-1.oci.oraclecloud.com/20180222/clusters": read tcp 10.0.0.5:43210->1.2.3.4:443: read: connection reset by peer',
    "ProviderError",
    true,
  ],
];

describe("classifyPulumiOutput", () => {
  it.each(cases)("%s", (_name, text, reason, retryable) => {
    const e = classifyPulumiOutput(text, "up pc-1");
    expect(e.reason).toBe(reason);
    expect(e.retryable).toBe(retryable);
    expect(e.message.startsWith("up pc-1: ")).toBe(true);
    expect(e.message).not.toContain("\n");
  });

  it("quotes the line that carries the provider's message", () => {
    const e = classifyPulumiOutput(cases[2]![1], "up pc-1");
    expect(e.message).toContain(
      "400-LimitExceeded, The following service limits were exceeded: gpu-h100-count",
    );
  });

  it("treats unknown failures as retryable provider errors with the first error line", () => {
    const e = classifyPulumiOutput("Updating (pc-1):\n\nerror: something nobody has seen before", "up pc-1");
    expect(e).toMatchObject({ reason: "ProviderError", retryable: true });
    expect(e.message).toBe("up pc-1: error: something nobody has seen before");
  });

  it("ignores the CLI command line, whose arguments carry secret config", () => {
    const text =
      "code: -2\n stdout: \n stderr: Command failed with exit code 255: /usr/bin/pulumi config set-all --stack pc-1 --secret oci:privateKey=QuotaExceeded-LOOKALIKE --non-interactive\nerror: incorrect passphrase";
    const e = classifyPulumiOutput(text, "config pc-1", ["QuotaExceeded-LOOKALIKE"]);
    expect(e.reason).toBe("ConfigInvalid");
    expect(e.message).not.toContain("LOOKALIKE");
  });

  it("every rule of the table is exercised by a real text above", () => {
    const hit = new Set<number>();
    for (const [, text] of cases) {
      const i = CLASSIFICATION_RULES.findIndex((r) => r.pattern.test(text));
      if (i >= 0) hit.add(i);
    }
    expect([...hit].sort((a, b) => a - b)).toEqual(CLASSIFICATION_RULES.map((_, i) => i));
  });
});

describe("scrubSecrets", () => {
  it("removes whole secret values and each long line of a multi-line one", () => {
    const key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----";
    const text = `failed near MIIEvQIBADANBgkqhkiG9w0BAQEFAASC and token=abc123 and ${key}`;
    const out = scrubSecrets(text, [key]);
    expect(out).not.toContain("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC");
    expect(out).not.toContain("abc123");
  });
});
