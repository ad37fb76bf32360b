/**
 * The sandbox provisioner stands up a simulated cluster where Pulumi would create one, and
 * behaves like a Pulumi stack where the ProvisionedCluster controller can tell: idempotent
 * `up`, injected failures and limits from the scenario, `destroy` that frees everything,
 * `outputs` after a restart, and a lock left by a killed operation until `cancel`.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import { ProvisionError, type ProvisionRequest } from "../../../operator/ports/provisioner.ts";
import { SandboxProvisioner, type SandboxProvisionerOptions } from "../../../operator/sandbox/provisioner.ts";
import { DEFAULT_SCENARIO, type ScenarioOci } from "../../../operator/sandbox/scenario.ts";
import { portBindable } from "./helpers.ts";

let dir: string;
const open: SandboxProvisioner[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "spillway-prov-"));
});
afterEach(async () => {
  for (const p of open.splice(0)) await p.close();
  rmSync(dir, { recursive: true, force: true });
});

function cloud(
  overrides: Partial<ScenarioOci> = {},
  provisioning: Partial<ScenarioOci["provisioning"]> = {},
) {
  const base = structuredClone(DEFAULT_SCENARIO.clouds.oci);
  return {
    ...base,
    ...overrides,
    provisioning: { ...base.provisioning, latency: "30ms", destroyLatency: "10ms", ...provisioning },
  };
}

async function provisioner(c: ScenarioOci, extra: Partial<SandboxProvisionerOptions> = {}) {
  const p = await SandboxProvisioner.open({
    stateDir: join(dir, "prov"),
    cloud: c,
    podStartupMs: 50,
    jobDurationMs: 200,
    s3Endpoint: "http://127.0.0.1:9999",
    ...extra,
  });
  open.push(p);
  return p;
}

function request(stackName: string, nodes = 2): ProvisionRequest {
  return {
    stackName,
    program: "oci",
    provider: "oci-ashburn",
    region: "us-ashburn-1",
    nodePools: [{ name: "gpu", shape: "BM.GPU.H100.8", gpuType: "H100", gpusPerNode: 8, nodes }],
    config: {},
    secretConfig: { privateKey: "not-a-real-key" },
  };
}

async function nodesOf(kubeconfig: string): Promise<Array<{ name: string; gpus: string }>> {
  const kc = new KubeConfig();
  kc.loadFromString(kubeconfig);
  const list = await kc.makeApiClient(CoreV1Api).listNode();
  return list.items.map((n) => ({
    name: n.metadata!.name!,
    gpus: String(n.status?.allocatable?.["nvidia.com/gpu"]),
  }));
}

async function rejection(p: Promise<unknown>): Promise<ProvisionError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ProvisionError) return e;
    throw e;
  }
  throw new Error("expected a ProvisionError");
}

describe("SandboxProvisioner", () => {
  it("provisions a reachable cluster of the requested node pools, idempotently by stack name", async () => {
    const p = await provisioner(cloud());
    const progress: string[] = [];
    const [first, joined] = await Promise.all([
      p.up(request("oke-a"), (e) => progress.push(e.message)),
      p.up(request("oke-a")),
    ]);
    expect(joined).toEqual(first);
    expect(first.clusterId).toMatch(/^ocid1\.cluster\.oc1\.us-ashburn-1\./);
    expect(first.region).toBe("us-ashburn-1");
    expect(first.bucket).toBe("spillway-datasets");
    expect(first.s3Endpoint).toBe("http://127.0.0.1:9999");
    expect(progress.at(-1)).toBe("cluster ready");
    expect(await nodesOf(first.kubeconfig)).toEqual([
      { name: "oke-a-gpu-0", gpus: "8" },
      { name: "oke-a-gpu-1", gpus: "8" },
    ]);

    const again = await p.up(request("oke-a"));
    expect(again).toEqual(first);
    expect(await p.outputs(request("oke-a"))).toEqual(first);
    expect(await p.outputs(request("missing"))).toBeUndefined();
    // The secret stack configuration is never written to the state.
    expect(readFileSync(join(dir, "prov", "stacks.json"), "utf8")).not.toContain("not-a-real-key");
  });

  it("scales the node pools of a ready stack in place when an up asks for other pools", async () => {
    const p = await provisioner(cloud());
    const first = await p.up(request("oke-a", 1));
    expect(await nodesOf(first.kubeconfig)).toHaveLength(1);
    const scaled = await p.up(request("oke-a", 3));
    expect(scaled).toEqual(first);
    expect((await nodesOf(scaled.kubeconfig)).map((n) => n.name)).toEqual([
      "oke-a-gpu-0",
      "oke-a-gpu-1",
      "oke-a-gpu-2",
    ]);
    expect(await p.cluster("oke-a")!.gpus()).toEqual({ total: 24, free: 24 });
  });

  it("fails the first up as the scenario injects, then succeeds", async () => {
    const p = await provisioner(
      cloud({}, { failure: { reason: "QuotaExceeded", message: "GPU shape limit reached", times: 1 } }),
    );
    const err = await rejection(p.up(request("oke-a")));
    expect(err.reason).toBe("QuotaExceeded");
    expect(err.message).toBe("GPU shape limit reached");
    expect(err.retryable).toBe(true);
    expect((await p.up(request("oke-a"))).kubeconfig).toContain("server:");
  });

  it("refuses clusters beyond maxClusters and nodes beyond the SKU's capacity", async () => {
    const c = cloud({ maxClusters: 1 });
    c.capacity = [{ type: "H100", sku: "BM.GPU.H100.8", gpusPerNode: 8, maxNodes: 3 }];
    const p = await provisioner(c);
    const big = await rejection(p.up(request("oke-big", 4)));
    expect(big.reason).toBe("NoCapacity");
    await p.up(request("oke-a"));
    const second = await rejection(p.up(request("oke-b")));
    expect(second.reason).toBe("QuotaExceeded");
    expect(second.message).toContain("maxClusters 1");
  });

  it("destroys a stack: cluster stopped, port free, outputs gone; destroying again succeeds", async () => {
    const p = await provisioner(cloud());
    const out = await p.up(request("oke-a"));
    const port = Number(new URL(serverOf(out.kubeconfig)).port);
    await p.destroy(request("oke-a"));
    expect(await p.outputs(request("oke-a"))).toBeUndefined();
    expect(p.stacks()).toEqual([]);
    expect(await portBindable(port)).toBe(true);
    await p.destroy(request("oke-a"));
  });

  it("brings provisioned clusters back with their objects after a restart", async () => {
    const first = await provisioner(cloud());
    const out = await first.up(request("oke-a"));
    const kc = new KubeConfig();
    kc.loadFromString(out.kubeconfig);
    await kc.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: "ml-team" } } });
    await first.close();

    const second = await provisioner(cloud());
    const recovered = await second.outputs(request("oke-a"));
    expect(recovered?.clusterId).toBe(out.clusterId);
    const kc2 = new KubeConfig();
    kc2.loadFromString(recovered!.kubeconfig);
    const ns = await kc2.makeApiClient(CoreV1Api).readNamespace({ name: "ml-team" });
    expect(ns.metadata?.name).toBe("ml-team");
  });

  it("keeps a stack locked by an operation killed with its process until cancel", async () => {
    const first = await provisioner(cloud());
    await first.up(request("oke-a"));
    await first.close();
    // What a SIGKILL during `destroy` leaves: the stack marked as locked by a dead process.
    const file = join(dir, "prov", "stacks.json");
    const state = JSON.parse(readFileSync(file, "utf8"));
    state.stacks["oke-a"].state = "destroying";
    state.stacks["oke-a"].lockPid = 999999;
    writeFileSync(file, JSON.stringify(state));

    const p = await provisioner(cloud());
    expect((await rejection(p.destroy(request("oke-a")))).reason).toBe("StackLocked");
    expect((await rejection(p.up(request("oke-a")))).reason).toBe("StackLocked");
    await p.cancel(request("oke-a"));
    const out = await p.up(request("oke-a"));
    expect(await nodesOf(out.kubeconfig)).toHaveLength(2);
    await p.destroy(request("oke-a"));
    expect(p.stacks()).toEqual([]);
  });
});

/** The server URL of a kubeconfig's current cluster. */
function serverOf(kubeconfig: string): string {
  const kc = new KubeConfig();
  kc.loadFromString(kubeconfig);
  return kc.getCurrentCluster()!.server;
}
