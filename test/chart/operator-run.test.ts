/**
 * The operator as the chart configures it, placing a run: `helm install` into the sandbox's
 * management API server, then `spillway operator` started with exactly the container args
 * and env of the Deployment the API server now holds (as a kubelet would: downward-API
 * values filled in, $(VAR) references expanded). The only addition is --kubeconfig, which
 * stands in for the in-cluster ServiceAccount token a pod would get; it points at a recording
 * proxy, so the operator's requests can be checked against the RBAC the chart installed.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OPERATOR_NAMESPACE } from "../../operator/sandbox/wiring.ts";
import { AZURE_SKU, type E2E, eventually, getRun, offersOf, startE2E, trainingRun } from "../e2e/harness.ts";
import { ROOT } from "../helpers/examples.ts";
import { CHART, type Doc, helmAsync, kubectlAsync } from "./helm.ts";
import { allowed, describeRequest, requestAttributes } from "./rbac-audit.ts";
import { type RecordingProxy, startRecordingProxy } from "./recording-proxy.ts";

const NS = OPERATOR_NAMESPACE;
const POD_NAME = "spillway-6d8f7c9b5-x2k4q";

let e: E2E;
let dir: string;
/** The operator's own path to the API server, recording its requests for the RBAC audit. */
let operatorProxy: RecordingProxy;
let operatorKubeconfig: string;
let operator: ChildProcess | undefined;
const output: string[] = [];
let ports: { metrics: number; health: number };

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** What the kubelet does with a container's env: downward-API fields, literals, Secret keys. */
async function containerEnv(
  container: Doc,
  pod: { namespace: string; name: string },
): Promise<Record<string, string>> {
  const env: Record<string, string> = {};
  for (const v of container.env as Doc[]) {
    const field = v.valueFrom?.fieldRef?.fieldPath;
    const secretRef = v.valueFrom?.secretKeyRef;
    if (field === "metadata.namespace") env[v.name] = pod.namespace;
    else if (field === "metadata.name") env[v.name] = pod.name;
    else if (typeof v.value === "string") env[v.name] = v.value;
    else if (secretRef) {
      const out = await kubectlAsync(e.sandbox.management.kubeconfigPath, [
        ...["get", "secret", secretRef.name, "-n", pod.namespace, "--ignore-not-found", "-o", "json"],
      ]);
      const data = out.trim() ? (JSON.parse(out).data as Record<string, string> | undefined) : undefined;
      const value = data?.[secretRef.key];
      if (value !== undefined) env[v.name] = Buffer.from(value, "base64").toString("utf8");
      else if (!secretRef.optional)
        throw new Error(`env ${v.name}: Secret ${secretRef.name} has no ${secretRef.key}`);
    } else throw new Error(`env ${v.name}: a source this test does not resolve`);
  }
  return env;
}

/** Kubernetes' $(VAR) expansion of args from the container's env. */
const expand = (args: string[], env: Record<string, string>) =>
  args.map((a) => a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, n: string) => env[n] ?? m));

const get = async (port: number, path: string) => {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: await res.text() };
};

beforeAll(async () => {
  e = await startE2E();
  dir = mkdtempSync(join(tmpdir(), "spillway-chart-operator-"));
  operatorProxy = await startRecordingProxy(e.sandbox.management.url);
  operatorKubeconfig = join(dir, "operator-kubeconfig");
  writeFileSync(
    operatorKubeconfig,
    e.sandbox.management.kubeconfig().replace(e.sandbox.management.url, operatorProxy.url),
  );
  ports = { metrics: await freePort(), health: await freePort() };
}, 120_000);

afterAll(async () => {
  if (operator && operator.exitCode === null) {
    const exited = new Promise((resolve) => operator!.once("exit", resolve));
    operator.kill("SIGTERM");
    await exited;
  }
  await operatorProxy?.close();
  await e?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

test("the chart installs into the sandbox's management cluster, next to the CRDs and clouds it already has", async () => {
  // The platform team's Secret for the Pulumi passphrase (docs/install.md, step 4).
  const passphrase = await e.kubectl(
    ["apply", "-f", "-"],
    JSON.stringify({
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: "spillway-pulumi-passphrase", namespace: NS },
      stringData: { passphrase: "correct horse battery staple" },
    }),
  );
  expect(passphrase.stderr).toBe("");
  expect(passphrase.code).toBe(0);
  // The ARM emulator serves HTTPS with its own CA: the one flag a real Azure does not need.
  const caFile = join(dir, "arm-ca.pem");
  writeFileSync(caFile, e.arm.ca);
  const values = join(dir, "values.yaml");
  writeFileSync(
    values,
    JSON.stringify({
      replicas: 1,
      operator: {
        origin: "chart-e2e",
        pulumi: { stateDir: join(dir, "pulumi") },
        extraArgs: [`--azure-ca-file=${caFile}`],
      },
      metrics: { port: ports.metrics },
      health: { port: ports.health },
      rbac: { create: true, namespaceJobs: true },
    }),
  );
  // --skip-crds: the sandbox manages the CRDs itself (created, then replaced on restart, under
  // its own field manager), the case docs/install.md describes for CRDs managed outside Helm.
  const r = await helmAsync(
    [
      "install",
      "spillway",
      CHART,
      "-n",
      NS,
      "-f",
      values,
      "--skip-crds",
      "--kubeconfig",
      e.sandbox.management.kubeconfigPath,
    ],
    {
      HELM_CACHE_HOME: join(dir, "helm", "cache"),
      HELM_CONFIG_HOME: join(dir, "helm", "config"),
      HELM_DATA_HOME: join(dir, "helm", "data"),
    },
  );
  expect(r.stdout + r.stderr).toContain("STATUS: deployed");
  expect(r.code).toBe(0);
}, 60_000);

test("`spillway operator` with the Deployment's args and env becomes leader and reports healthy", async () => {
  const deployment = JSON.parse(
    await kubectlAsync(e.sandbox.management.kubeconfigPath, [
      "get",
      "deployment",
      "spillway",
      "-n",
      NS,
      "-o",
      "json",
    ]),
  ) as Doc;
  const container = deployment.spec.template.spec.containers[0] as Doc;
  const env = await containerEnv(container, { namespace: NS, name: POD_NAME });
  expect(env.PULUMI_CONFIG_PASSPHRASE).toBe("correct horse battery staple");
  const args = expand(container.args as string[], env);
  expect(args).toContain(`--namespace=${NS}`);
  expect(args).toContain("--leader-elect");
  operator = spawn(
    process.execPath,
    [join(ROOT, "bin", "spillway.mjs"), ...args, "--kubeconfig", operatorKubeconfig],
    { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], env: { PATH: process.env.PATH ?? "", ...env } },
  );
  for (const s of [operator.stdout, operator.stderr])
    s?.on("data", (b: Buffer) => output.push(b.toString("utf8")));

  const ready = await eventually(
    () => get(ports.health, "/readyz").catch(() => ({ status: 0, body: output.join("").slice(-2000) })),
    (r) => r.status === 200,
    "/readyz on the chart's health port",
    60_000,
  );
  expect(ready.status).toBe(200);
  expect((await get(ports.health, "/healthz")).status).toBe(200);
  const lease = await eventually(
    async () =>
      JSON.parse(
        await kubectlAsync(e.sandbox.management.kubeconfigPath, [
          "get",
          "lease",
          "spillway-operator",
          "-n",
          NS,
          "-o",
          "json",
        ]),
      ) as Doc,
    // The operator adds a per-process suffix to POD_NAME (as controller-runtime adds a uuid).
    (l) => String(l.spec?.holderIdentity ?? "").startsWith(`${POD_NAME}-`),
    "the chart's Lease held by this pod",
  );
  expect(lease.spec.leaseDurationSeconds).toBe(15);
}, 90_000);

test("it places a run on the primary under the right of first refusal, and serves metrics", async () => {
  e.arm.setCapacity("eastus", AZURE_SKU, 2);
  const applied = await e.kubectl(["apply", "-f", "-"], JSON.stringify(trainingRun("from-the-chart")));
  expect(applied.code).toBe(0);
  const run = await eventually(
    () => getRun(e, "from-the-chart"),
    (r) => r.status?.placement !== undefined,
    "placement",
    60_000,
  );
  expect(run.status?.placement).toMatchObject({ provider: "azure-eastus", reason: "PrimaryAccepted" });
  const offers = await offersOf(e, "from-the-chart");
  expect(offers.map((o) => o.status?.outcome)).toEqual(["Accepted"]);
  const metrics = await get(ports.metrics, "/metrics");
  expect(metrics.status).toBe(200);
  expect(metrics.body).toContain("spillway_reconcile_total");
}, 90_000);

test("every request the operator made is allowed by the RBAC the chart installed", async () => {
  const kc = e.sandbox.management.kubeconfigPath;
  const rbac = [
    JSON.parse(await kubectlAsync(kc, ["get", "clusterrole", "spillway", "-o", "json"])) as Doc,
    JSON.parse(await kubectlAsync(kc, ["get", "role", "spillway", "-n", NS, "-o", "json"])) as Doc,
  ];
  const made = operatorProxy.requests.flatMap((r) => {
    const a = requestAttributes(r.method, r.url);
    return a ? [a] : [];
  });
  // The audit has something to judge: the controllers' watches, the Lease, the run's status.
  const kinds = new Set(made.map(describeRequest));
  expect(kinds).toContain("watch spillway.dev/trainingruns (cluster-wide)");
  expect(kinds).toContain(`create coordination.k8s.io/leases in ${NS}`);
  expect(kinds).toContain("create spillway.dev/capacityoffers in ml-team");
  expect(kinds).toContain("update spillway.dev/trainingruns/status in ml-team");
  const denied = [...new Set(made.filter((a) => !allowed(rbac, a)).map(describeRequest))];
  expect(denied).toEqual([]);
});
