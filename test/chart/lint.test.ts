import { join } from "node:path";
import { ROOT } from "../helpers/examples.ts";
import { CHART, FULL_VALUES, helm } from "./helm.ts";

const AZURE_PRIMARY = {
  name: "azure-eastus",
  spec: {
    type: "azure",
    role: "primary",
    region: "eastus",
    jurisdiction: "US",
    cluster: { existing: { kubeconfigSecretRef: { name: "azure-eastus-kubeconfig" } } },
    capacity: { gpus: [{ type: "H100", sku: "Standard_ND96isr_H100_v5", gpusPerNode: 8 }] },
    azure: {
      subscriptionId: "00000000-0000-0000-0000-000000000000",
      resourceGroup: "spillway-rg",
      aksCluster: "spillway-aks",
      nodePool: "gpuh100",
      capacityReservationGroup: "spillway-crg",
      credentialsSecretRef: { name: "azure-credentials" },
    },
  },
};

function lint(setJson: string[] = [], files: string[] = []) {
  const args = ["lint", "--strict", CHART];
  for (const f of files) args.push("-f", f);
  for (const s of setJson) args.push("--set-json", s);
  const r = helm(args);
  return { ...r, out: r.stdout + r.stderr };
}

const withProvider = (mutate: (p: any) => void) => {
  const p = structuredClone(AZURE_PRIMARY) as any;
  mutate(p);
  return [`providers=${JSON.stringify([p])}`];
};

describe("helm lint --strict", () => {
  test("passes with the default values", () => {
    const r = lint();
    expect(r.out).toContain("1 chart(s) linted, 0 chart(s) failed");
    expect(r.code).toBe(0);
  });

  test("passes with the full example values file", () => {
    const r = lint([], [FULL_VALUES]);
    expect(r.out).toContain("1 chart(s) linted, 0 chart(s) failed");
    expect(r.code).toBe(0);
  });

  test.each(["values-production.yaml", "values-sandbox.yaml"])("passes with examples/helm/%s", (file) => {
    const r = lint([], [join(ROOT, "examples", "helm", file)]);
    expect(r.out).toContain("1 chart(s) linted, 0 chart(s) failed");
    expect(r.code).toBe(0);
  });

  test("passes with a minimal Azure primary declared in values", () => {
    const r = lint(withProvider(() => {}));
    expect(r.code).toBe(0);
  });

  // Each bad value must fail lint and name the offending field and the reason.
  test.each([
    {
      what: "a replica count that is not a number",
      set: ['replicas="two"'],
      message: "at '/replicas': got string, want integer",
    },
    {
      what: "an unknown top-level value",
      set: ['colour="blue"'],
      message: "additional properties 'colour' not allowed",
    },
    {
      what: "an unknown nested value (a typo)",
      set: ['operator.logLvel="debug"'],
      message: "additional properties 'logLvel' not allowed",
    },
    {
      what: "an unsupported log level",
      set: ['operator.logLevel="verbose"'],
      message: "at '/operator/logLevel'",
    },
    {
      what: "a lease duration that is not a duration",
      set: ['operator.leaderElection.leaseDuration="soon"'],
      message: "at '/operator/leaderElection/leaseDuration'",
    },
    { what: "zero replicas", set: ["replicas=0"], message: "at '/replicas': minimum: got 0, want 1" },
    {
      what: "an inline client secret in a provider's azure settings",
      set: withProvider((p) => {
        p.spec.azure.clientSecret = "hunter2";
      }),
      message: "at '/providers/0/spec/azure': additional properties 'clientSecret' not allowed",
    },
    {
      what: "an inline secret value inside a Secret reference",
      set: withProvider((p) => {
        p.spec.azure.credentialsSecretRef.value = "hunter2";
      }),
      message: "at '/providers/0/spec/azure/credentialsSecretRef': additional properties 'value' not allowed",
    },
    {
      what: "an inline storage key",
      set: withProvider((p) => {
        p.spec.storage = {
          azureBlob: { account: "spillwaydata", container: "datasets" },
          accountKey: "abc=",
        };
      }),
      message: "at '/providers/0/spec/storage': additional properties 'accountKey' not allowed",
    },
    {
      what: "a credential-looking key in the non-secret Pulumi config map",
      set: withProvider((p) => {
        p.spec.cluster = { provision: { program: "azure", config: { clientSecret: "hunter2" } } };
      }),
      message: "invalid propertyName 'clientSecret'",
    },
    {
      what: "a Secret in another namespace (the operator reads Secrets only in its own)",
      set: withProvider((p) => {
        p.spec.azure.credentialsSecretRef.namespace = "kube-system";
      }),
      message: "additional properties 'namespace' not allowed",
    },
    {
      what: "a provider with both an existing cluster and provisioning",
      set: withProvider((p) => {
        p.spec.cluster.provision = { program: "azure" };
      }),
      message: "at '/providers/0/spec/cluster'",
    },
    {
      what: "an Azure primary without azure settings",
      set: withProvider((p) => {
        delete p.spec.azure;
      }),
      message: "missing property 'azure'",
    },
    {
      what: "an unknown provider type",
      set: withProvider((p) => {
        p.spec.type = "ibm";
      }),
      message: "at '/providers/0/spec/type'",
    },
  ])("fails on $what, with a message naming it", ({ set, message }) => {
    const r = lint(set);
    expect(r.code).not.toBe(0);
    expect(r.out).toContain("values don't meet the specifications of the schema(s)");
    expect(r.out).toContain(message);
  });
});

// Rules across providers are checked by the templates (`fail`), which helm lint only logs:
// helm template, install and upgrade refuse them.
describe("helm template refuses provider lists the schema cannot judge", () => {
  const template = (providers: unknown[]) => {
    const r = helm(["template", "spillway", CHART, "--set-json", `providers=${JSON.stringify(providers)}`]);
    return { ...r, out: r.stdout + r.stderr };
  };

  test("two providers claiming the primary role (the right of first refusal has one holder)", () => {
    const second = { ...structuredClone(AZURE_PRIMARY), name: "azure-westeurope" };
    const r = template([AZURE_PRIMARY, second]);
    expect(r.code).not.toBe(0);
    expect(r.out).toContain("at most one provider may have role primary");
    expect(r.out).toContain("azure-eastus, azure-westeurope");
  });

  test("two providers sharing a name", () => {
    const twin = structuredClone(AZURE_PRIMARY) as any;
    twin.spec.role = "alternative";
    const r = template([AZURE_PRIMARY, twin]);
    expect(r.code).not.toBe(0);
    expect(r.out).toContain('the name "azure-eastus" is used twice');
  });
});
