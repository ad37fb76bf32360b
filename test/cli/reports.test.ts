/**
 * `spillway offers` and `spillway status` (the real CLI, its own process) against a sandbox
 * API server: the ledger and status tables, and one clear line with exit 2 on bad input.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import { parse } from "yaml";
import { KubeClient } from "../../operator/runtime/client.ts";
import { type KubeObject, Resources, SpillwayResources } from "../../operator/runtime/resources.ts";
import { type ApiServer, startApiServer } from "../../operator/sandbox/apiserver/index.ts";
import { ROOT } from "../helpers/examples.ts";

let server: ApiServer;
const dir = mkdtempSync(join(tmpdir(), "spillway-cli-"));
const kubeconfig = join(dir, "kubeconfig");

function spillway(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(ROOT, "bin", "spillway.mjs"), ...args],
      { cwd: dir, timeout: 60_000 },
      (error, stdout, stderr) =>
        resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout, stderr }),
    );
  });
}

beforeAll(async () => {
  server = await startApiServer({ name: "cli" });
  await server.writeKubeconfig(kubeconfig);
  const client = KubeClient.fromKubeconfig(server.kubeconfig());
  const crds = {
    group: "apiextensions.k8s.io",
    version: "v1",
    kind: "CustomResourceDefinition",
    plural: "customresourcedefinitions",
    namespaced: false,
  };
  for (const kind of ["trainingruns", "capacityoffers", "cloudproviders", "provisionedclusters"]) {
    await client.create(crds, parse(readFileSync(join(ROOT, "crds", `spillway.dev_${kind}.yaml`), "utf8")));
  }
  await client.create(Resources.Namespace, { metadata: { name: "ml-team" } });
  const offer = await client.create<KubeObject & { status?: unknown }>(SpillwayResources.CapacityOffer, {
    metadata: { name: "llama-a1", namespace: "ml-team" },
    spec: {
      run: { name: "llama", uid: "00000000-0000-4000-8000-000000000001" },
      attempt: 1,
      provider: "azure-eastus",
      workloadClass: "training",
      request: { gpuType: "H100", gpusPerNode: 8, nodes: 2, region: "eastus" },
      competingQuote: { provider: "oci-ashburn", pricePerHour: 72 },
      deadline: "2026-11-21T12:00:00Z",
    },
  } as KubeObject);
  await client.updateStatus(SpillwayResources.CapacityOffer, {
    ...offer,
    status: { outcome: "Declined", reason: "NoCapacity", message: "none left" },
  });
  const run = parse(readFileSync(join(ROOT, "examples", "40-trainingrun-training.yaml"), "utf8"));
  await client.create(SpillwayResources.TrainingRun, run);
}, 60_000);

afterAll(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

test("spillway offers prints the ledger: offer, run, provider, competing quote, outcome and reason", async () => {
  const r = await spillway(["offers", "--kubeconfig", kubeconfig]);
  expect(r.code).toBe(0);
  const [header, row] = r.stdout.trim().split("\n");
  expect(header).toMatch(
    /^NAMESPACE\s+OFFER\s+RUN\s+ATTEMPT\s+PROVIDER\s+GPUS\s+COMPETING\s+OUTCOME\s+REASON/,
  );
  expect(row).toMatch(
    /ml-team\s+llama-a1\s+llama\s+1\s+azure-eastus\s+16xH100\s+\$72\.00\/h oci-ashburn\s+Declined\s+NoCapacity/,
  );
  const json = await spillway(["offers", "--kubeconfig", kubeconfig, "-o", "json", "--run", "other"]);
  expect(JSON.parse(json.stdout)).toEqual([]);
}, 60_000);

test("spillway status prints the runs", async () => {
  const r = await spillway(["status", "--kubeconfig", kubeconfig, "-n", "ml-team"]);
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/ml-team\s+llama-pretrain\s+training\s+Pending\s+-\s+-\s+16\s+0\s+0/);
}, 60_000);

test("bad input is one line and exit 2", async () => {
  const missing = await spillway(["status", "--kubeconfig", join(dir, "nope")]);
  expect(missing.code).toBe(2);
  expect(missing.stderr.trim().split("\n")).toHaveLength(1);
  expect(missing.stderr).toMatch(/cannot load the kubeconfig/);
  const format = await spillway(["offers", "--kubeconfig", kubeconfig, "-o", "yaml"]);
  expect(format.code).toBe(2);
  expect(format.stderr).toMatch(/--output must be table or json/);
}, 60_000);
