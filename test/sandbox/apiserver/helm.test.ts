/**
 * Helm v4 (the real binary) against the sandbox API server without any adapter: the chart's
 * kinds are applied server-side, the release records are Secrets written with protobuf bodies
 * (and deleted with protobuf DeleteOptions) by Helm's typed client.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ApiServer, startApiServer } from "../../../operator/sandbox/apiserver/index.ts";
import { CHART, helmAsync } from "../../chart/helm.ts";

let server: ApiServer;
let dir: string;
let kubeconfig: string;

beforeAll(async () => {
  server = await startApiServer({ name: "helm-test" });
  dir = mkdtempSync(join(tmpdir(), "spillway-helm-"));
  kubeconfig = join(dir, "kubeconfig");
  await server.writeKubeconfig(kubeconfig);
});
afterAll(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

const helm = (args: string[]) =>
  helmAsync([...args, "--kubeconfig", kubeconfig], {
    HELM_CACHE_HOME: join(dir, "cache"),
    HELM_CONFIG_HOME: join(dir, "config"),
    HELM_DATA_HOME: join(dir, "data"),
  });

async function releaseSecrets(): Promise<string[]> {
  const res = await fetch(
    `${server.url}/api/v1/namespaces/spillway-system/secrets?labelSelector=owner%3Dhelm`,
  );
  const list = (await res.json()) as { items: Array<{ metadata: { name: string } }> };
  return list.items.map((s) => s.metadata.name);
}

describe("helm against the sandbox API server", () => {
  it("installs, upgrades and uninstalls the chart, keeping release records as Secrets", async () => {
    const install = await helm(["install", "spillway", CHART, "-n", "spillway-system", "--create-namespace"]);
    expect(install.stderr).not.toContain("Error");
    expect(install.code).toBe(0);
    expect(await releaseSecrets()).toEqual(["sh.helm.release.v1.spillway.v1"]);
    const deployment = await fetch(
      `${server.url}/apis/apps/v1/namespaces/spillway-system/deployments/spillway`,
    );
    expect(deployment.status).toBe(200);

    const upgrade = await helm(["upgrade", "spillway", CHART, "-n", "spillway-system"]);
    expect(upgrade.code).toBe(0);
    expect(await releaseSecrets()).toEqual([
      "sh.helm.release.v1.spillway.v1",
      "sh.helm.release.v1.spillway.v2",
    ]);

    const uninstall = await helm(["uninstall", "spillway", "-n", "spillway-system"]);
    expect(uninstall.code).toBe(0);
    expect(await releaseSecrets()).toEqual([]);
    const gone = await fetch(`${server.url}/apis/apps/v1/namespaces/spillway-system/deployments/spillway`);
    expect(gone.status).toBe(404);
  });
});
