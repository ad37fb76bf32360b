/**
 * The install path, for real: the `helm` v4 binary installs, upgrades and uninstalls the
 * chart in the sandbox control plane (a Kubernetes API server over HTTP on 127.0.0.1), and
 * `kubectl` reads back what it did. Nothing sits between them and the server.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { type ApiServer, renderKubeconfig, startApiServer } from "../../operator/sandbox/apiserver/index.ts";
import { ROOT } from "../helpers/examples.ts";
import { CHART, type Doc, helmAsync, kubectlAsync, type Run } from "./helm.ts";

const NS = "spillway-system";
const RELEASE = "spillway";
const SANDBOX_VALUES = join(ROOT, "examples", "helm", "values-sandbox.yaml");
const SPILLWAY_CRDS = [
  "capacityoffers.spillway.dev",
  "cloudproviders.spillway.dev",
  "datasets.spillway.dev",
  "provisionedclusters.spillway.dev",
  "trainingruns.spillway.dev",
];

let dir: string;
let server: ApiServer;
let kubeconfig: string;

/** helm against the sandbox, with a private home under the test's temp dir. */
async function helmIn(args: string[]): Promise<Run & { out: string }> {
  const r = await helmAsync([...args, "--kubeconfig", kubeconfig], {
    HELM_CACHE_HOME: join(dir, "helm", "cache"),
    HELM_CONFIG_HOME: join(dir, "helm", "config"),
    HELM_DATA_HOME: join(dir, "helm", "data"),
  });
  return { ...r, out: r.stdout + r.stderr };
}

const getJson = async (args: string[]): Promise<Doc> =>
  JSON.parse(await kubectlAsync(kubeconfig, ["get", ...args, "-o", "json"]));
const names = (list: Doc) => (list.items as Doc[]).map((i) => i.metadata.name).sort();

/** `kind/name` of every object in the release's manifest, as kubectl names them. */
function manifestObjects(manifest: string): Array<{ kind: string; name: string; namespace?: string }> {
  return parseAllDocuments(manifest)
    .map((d) => d.toJS() as Doc | null)
    .filter((d): d is Doc => d !== null)
    .map((d) => ({ kind: d.kind, name: d.metadata.name, namespace: d.metadata.namespace }));
}

/** Which of these objects the API server has (`kubectl get --ignore-not-found`). */
async function existing(objs: Array<{ kind: string; name: string; namespace?: string }>): Promise<string[]> {
  const found: string[] = [];
  for (const o of objs) {
    const ns = o.namespace ? ["-n", o.namespace] : [];
    const out = await kubectlAsync(kubeconfig, [
      "get",
      o.kind,
      o.name,
      ...ns,
      "--ignore-not-found",
      "-o",
      "name",
    ]);
    if (out.trim() !== "") found.push(`${o.kind}/${o.name}`);
  }
  return found.sort();
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "spillway-chart-install-"));
  server = await startApiServer({ name: "management" });
  kubeconfig = join(dir, "kubeconfig");
  writeFileSync(kubeconfig, renderKubeconfig("management", server.url), { mode: 0o600 });
  // What a platform team does before installing: the namespace and the credential Secrets
  // the providers in the values refer to (docs/install.md, step 4).
  const secrets = join(dir, "secrets.yaml");
  const secret = (name: string, data: Record<string, string>) => ({
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name, namespace: NS },
    stringData: data,
  });
  writeFileSync(
    secrets,
    [
      { apiVersion: "v1", kind: "Namespace", metadata: { name: NS } },
      secret("azure-sandbox-credentials", { tenantId: "t", clientId: "c", clientSecret: "s" }),
      secret("azure-sandbox-kubeconfig", { kubeconfig: "apiVersion: v1\nkind: Config\n" }),
      secret("oci-sandbox-kubeconfig", { kubeconfig: "apiVersion: v1\nkind: Config\n" }),
    ]
      .map((o) => JSON.stringify(o))
      .join("\n---\n"),
  );
  await kubectlAsync(kubeconfig, ["apply", "--server-side", "-f", secrets]);
});

afterAll(async () => {
  await server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

// One release's life, in order: each test builds on the previous one.
describe("helm install, upgrade and uninstall in the sandbox control plane", () => {
  let installed: Array<{ kind: string; name: string; namespace?: string }> = [];

  test("values that break the schema are refused before anything is created, naming the field", async () => {
    const r = await helmIn([
      "install",
      RELEASE,
      CHART,
      "-n",
      NS,
      "-f",
      SANDBOX_VALUES,
      "--set-json",
      'providers[0].spec.azure.clientSecret="hunter2"',
    ]);
    expect(r.code).not.toBe(0);
    expect(r.out).toContain("values don't meet the specifications of the schema(s)");
    expect(r.out).toContain("at '/providers/0/spec/azure': additional properties 'clientSecret' not allowed");
    expect((await getJson(["cloudproviders"])).items).toEqual([]);
    expect((await helmIn(["list", "-n", NS, "-q"])).stdout.trim()).toBe("");
  });

  test("helm install succeeds and records a deployed release", async () => {
    const r = await helmIn(["install", RELEASE, CHART, "-n", NS, "-f", SANDBOX_VALUES]);
    expect(r.out).toContain("STATUS: deployed");
    expect(r.code).toBe(0);
    const status = JSON.parse((await helmIn(["status", RELEASE, "-n", NS, "-o", "json"])).stdout);
    expect(status.info.status).toBe("deployed");
    expect(status.version).toBe(1);
    // Helm keeps its release record as a Secret in the release namespace.
    expect(names(await getJson(["secrets", "-n", NS, "-l", "owner=helm"]))).toEqual([
      `sh.helm.release.v1.${RELEASE}.v1`,
    ]);
  });

  test("the five CRDs were created from the chart's crds/ before the release's objects", async () => {
    const crds = names(await getJson(["customresourcedefinitions"])).filter((n: string) =>
      n.endsWith(".spillway.dev"),
    );
    expect(crds).toEqual(SPILLWAY_CRDS);
  });

  test("every object of the release manifest is in the API server", async () => {
    const manifest = (await helmIn(["get", "manifest", RELEASE, "-n", NS])).stdout;
    installed = manifestObjects(manifest);
    expect(installed.map((o) => o.kind).sort()).toEqual([
      "CloudProvider",
      "CloudProvider",
      "ClusterRole",
      "ClusterRoleBinding",
      "Deployment",
      "Role",
      "RoleBinding",
      "Service",
      "ServiceAccount",
    ]);
    expect(await existing(installed)).toEqual(installed.map((o) => `${o.kind}/${o.name}`).sort());
  });

  test("the chart's CloudProviders appear as declared in the values, credentials by Secret name", async () => {
    const providers = (await getJson(["cloudproviders"])).items as Doc[];
    expect(providers.map((p) => [p.metadata.name, p.spec.type, p.spec.role])).toEqual([
      ["azure-sandbox", "azure", "primary"],
      ["oci-sandbox", "oci", "alternative"],
    ]);
    const azure = providers[0]!;
    expect(azure.metadata.labels["app.kubernetes.io/managed-by"]).toBe("Helm");
    expect(azure.metadata.annotations["meta.helm.sh/release-name"]).toBe(RELEASE);
    expect(azure.spec.azure.credentialsSecretRef).toEqual({ name: "azure-sandbox-credentials" });
    expect(azure.spec.cluster.existing.kubeconfigSecretRef).toEqual({ name: "azure-sandbox-kubeconfig" });
  });

  test("the operator Deployment carries the rendered flags, env and restricted security context", async () => {
    const d = await getJson(["deployment", RELEASE, "-n", NS]);
    const c = d.spec.template.spec.containers[0];
    expect(d.spec.replicas).toBe(1);
    expect(c.args.slice(0, 3)).toEqual(["operator", "--namespace=$(POD_NAMESPACE)", "--leader-elect"]);
    expect(c.args).toContain("--log-level=debug");
    expect(c.env.map((e: Doc) => e.name)).toEqual(expect.arrayContaining(["POD_NAMESPACE", "POD_NAME"]));
    expect(c.securityContext.readOnlyRootFilesystem).toBe(true);
    expect(d.spec.template.spec.securityContext.runAsUser).toBe(65532);
  });

  test("helm upgrade applies new values: two replicas add a PodDisruptionBudget, a dropped provider goes", async () => {
    const r = await helmIn([
      "upgrade",
      RELEASE,
      CHART,
      "-n",
      NS,
      "-f",
      SANDBOX_VALUES,
      "--set",
      "replicas=2,operator.logLevel=info",
      "--set-json",
      `providers=${JSON.stringify([
        {
          name: "azure-sandbox",
          spec: {
            type: "azure",
            role: "primary",
            region: "eastus",
            jurisdiction: "US",
            cluster: { existing: { kubeconfigSecretRef: { name: "azure-sandbox-kubeconfig" } } },
            capacity: {
              gpus: [{ type: "H100", sku: "Standard_ND96isr_H100_v5", gpusPerNode: 8, maxNodes: 8 }],
            },
            azure: {
              subscriptionId: "00000000-0000-0000-0000-000000000000",
              resourceGroup: "sandbox-rg",
              aksCluster: "sandbox-aks",
              nodePool: "gpuh100",
              capacityReservationGroup: "sandbox-crg",
              credentialsSecretRef: { name: "azure-sandbox-credentials" },
            },
          },
        },
      ])}`,
    ]);
    expect(r.out).toContain(`Release "${RELEASE}" has been upgraded`);
    expect(r.code).toBe(0);
    const d = await getJson(["deployment", RELEASE, "-n", NS]);
    expect(d.spec.replicas).toBe(2);
    expect(d.spec.template.spec.containers[0].args).toContain("--log-level=info");
    expect((await getJson(["poddisruptionbudget", RELEASE, "-n", NS])).spec.minAvailable).toBe(1);
    const providers = (await getJson(["cloudproviders"])).items as Doc[];
    expect(providers.map((p) => p.metadata.name)).toEqual(["azure-sandbox"]);
    expect(providers[0]!.spec.capacity.gpus[0].maxNodes).toBe(8);
    expect(JSON.parse((await helmIn(["status", RELEASE, "-n", NS, "-o", "json"])).stdout).version).toBe(2);
    installed = manifestObjects((await helmIn(["get", "manifest", RELEASE, "-n", NS])).stdout);
  });

  test("an upgrade with a bad value is refused and changes nothing", async () => {
    const r = await helmIn([
      "upgrade",
      RELEASE,
      CHART,
      "-n",
      NS,
      "--reuse-values",
      "--set",
      "podDisruptionBudget.minAvailable=2",
    ]);
    expect(r.code).not.toBe(0);
    expect(r.out).toContain("podDisruptionBudget.minAvailable (2) must be below replicas (2)");
    expect(JSON.parse((await helmIn(["status", RELEASE, "-n", NS, "-o", "json"])).stdout).version).toBe(2);
    expect((await getJson(["poddisruptionbudget", RELEASE, "-n", NS])).spec.minAvailable).toBe(1);
  });

  test("the documented CRD upgrade step applies over the CRDs Helm installed (docs/install.md, Upgrade)", async () => {
    const crds = join(dir, "crds.yaml");
    const shown = await helmAsync(["show", "crds", CHART]);
    expect(shown.code).toBe(0);
    writeFileSync(crds, shown.stdout);
    const out = await kubectlAsync(kubeconfig, ["apply", "--server-side", "--force-conflicts", "-f", crds]);
    expect(out.trim().split("\n").sort()).toEqual(
      SPILLWAY_CRDS.map((n) => `customresourcedefinition.apiextensions.k8s.io/${n} serverside-applied`),
    );
    // The release is untouched by it.
    expect(JSON.parse((await helmIn(["status", RELEASE, "-n", NS, "-o", "json"])).stdout).info.status).toBe(
      "deployed",
    );
  });

  test("helm uninstall removes what it installed and keeps the CRDs and the team's Secrets", async () => {
    expect(installed.length).toBeGreaterThan(0);
    const r = await helmIn(["uninstall", RELEASE, "-n", NS, "--wait"]);
    expect(r.out).toContain(`release "${RELEASE}" uninstalled`);
    expect(r.code).toBe(0);
    expect(await existing(installed)).toEqual([]);
    expect((await getJson(["cloudproviders"])).items).toEqual([]);
    expect(names(await getJson(["secrets", "-n", NS, "-l", "owner=helm"]))).toEqual([]);
    // Kept: the CRDs (and so any ledger), and the credential Secrets the team created.
    const crds = names(await getJson(["customresourcedefinitions"])).filter((n: string) =>
      n.endsWith(".spillway.dev"),
    );
    expect(crds).toEqual(SPILLWAY_CRDS);
    expect(names(await getJson(["secrets", "-n", NS]))).toEqual([
      "azure-sandbox-credentials",
      "azure-sandbox-kubeconfig",
      "oci-sandbox-kubeconfig",
    ]);
  });
});
