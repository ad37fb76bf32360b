// PulumiProvisioner through the real Automation API, driving a fake `pulumi` binary (there is
// no Pulumi CLI on the build machines) that speaks the CLI's protocol: stack select/init,
// config set-all, up/destroy with the gRPC engine event stream, stack output/history, cancel,
// and the DIY backend's lock files.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "@jest/globals";
import * as auto from "@pulumi/pulumi/automation/index.js";
import type { CloudProvider } from "../../../operator/api/v1alpha1/index.ts";
import { PulumiProvisioner, pulumiProvisionerFor } from "../../../operator/clouds/pulumi/index.ts";
import {
  ProvisionError,
  type ProvisionProgress,
  type ProvisionRequest,
} from "../../../operator/ports/provisioner.ts";
import { ROOT } from "../../helpers/examples.ts";

const FAKE_ROOT = join(import.meta.dirname, "fixtures", "fake-pulumi");
const PRIVATE_KEY =
  "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----";
const PASSPHRASE = "correct horse battery staple";

let command: auto.PulumiCommand;
let stateDir: string;

beforeAll(async () => {
  command = await auto.PulumiCommand.get({ root: FAKE_ROOT });
});
beforeEach(() => {
  stateDir = mkdtempSync(join(tmpdir(), "spillway-pulumi-"));
});
afterEach(() => {
  const pidFile = join(stateDir, "backend", "fake-hang.pid");
  if (existsSync(pidFile)) killFake(pidFile);
  rmSync(stateDir, { recursive: true, force: true });
});

/** Kills the hanging fake CLI this test started (never anything else: pid must be > 1). */
function killFake(pidFile: string): void {
  const pid = Number(readFileSync(pidFile, "utf8"));
  rmSync(pidFile);
  if (!Number.isInteger(pid) || pid <= 1) throw new Error(`bad pid in ${pidFile}`);
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // already gone
  }
}

async function hangingPidFile(): Promise<string> {
  const pidFile = join(stateDir, "backend", "fake-hang.pid");
  while (!existsSync(pidFile)) await new Promise((r) => setTimeout(r, 20));
  return pidFile;
}

function provisioner(): PulumiProvisioner {
  return new PulumiProvisioner({
    stateDir,
    secretsPassphrase: PASSPHRASE,
    infraDir: join(ROOT, "infra"),
    pulumiCommand: command,
  });
}

function ociRequest(stackName = "pc-oci-a"): ProvisionRequest {
  return {
    stackName,
    program: "oci",
    provider: "oci-ashburn",
    region: "us-ashburn-1",
    nodePools: [{ name: "h100", shape: "BM.GPU.H100.8", gpuType: "H100", gpusPerNode: 8, nodes: 2 }],
    config: {
      compartmentId: "ocid1.compartment.oc1..aaaa",
      gpuImageId: "ocid1.image.oc1.iad.aaaa",
      s3UserId: "ocid1.user.oc1..aaaa",
      "oci:tenancyOcid": "ocid1.tenancy.oc1..aaaa",
    },
    secretConfig: { "oci:privateKey": PRIVATE_KEY },
  };
}

function scenario(s: Record<string, unknown[]>): void {
  mkdirSync(join(stateDir, "backend"), { recursive: true });
  writeFileSync(join(stateDir, "backend", "fake-scenario.json"), JSON.stringify(s));
}

function calls(backend = join(stateDir, "backend")): Array<{ args: string[]; cwd: string }> {
  return readFileSync(join(backend, "fake-calls.log"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
}

async function rejection(p: Promise<unknown>): Promise<ProvisionError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(ProvisionError);
  return e as ProvisionError;
}

describe("PulumiProvisioner (Automation API over a fake pulumi CLI)", () => {
  it("creates the stack from infra/oci in a workspace of its own, reports progress and maps the outputs", async () => {
    const progress: ProvisionProgress[] = [];
    const out = await provisioner().up(ociRequest(), (p) => progress.push(p));

    expect(out).toEqual({
      clusterId: "ocid1.cluster.oc1.us-ashburn-1.pc-oci-a",
      kubeconfig: expect.stringContaining("fake-token-pc-oci-a"),
      bucket: "pc-oci-a-data",
      s3Endpoint: "https://fakens.compat.objectstorage.us-ashburn-1.oraclecloud.com",
      region: "us-ashburn-1",
    });
    expect(progress.map((p) => p.message)).toContain(
      "creating oci:containerengine/nodePool:NodePool gpu-pool-h100",
    );
    const last = progress[progress.length - 1]!;
    expect(last.message).toBe("up finished in 1s: 8 created");
    expect(last).toMatchObject({ resourcesDone: 8, resourcesTotal: 8 });

    // A local program run from the stack's own workspace (the fake refuses to `up` when the
    // workspace's Pulumi.yaml `main` does not reach the program); state in the state dir;
    // nothing written into infra/.
    const up = calls().find((c) => c.args[0] === "up")!;
    expect(up.args).toEqual(expect.arrayContaining(["--refresh", "--exec-kind", "auto.local"]));
    expect(up.cwd).toBe(join(stateDir, "workspaces", "oci", "pc-oci-a"));
    expect(readFileSync(join(up.cwd, "Pulumi.yaml"), "utf8")).toMatch(/name: spillway-oci/);
    expect(existsSync(join(up.cwd, "node_modules", "@pulumi", "pulumi", "package.json"))).toBe(true);
    expect(existsSync(join(stateDir, "backend", ".pulumi", "stacks", "spillway-oci", "pc-oci-a.json"))).toBe(
      true,
    );
    expect(existsSync(join(ROOT, "infra", "oci", "Pulumi.pc-oci-a.yaml"))).toBe(false);

    // Secret config is set as secrets, never in plain text in the stack file.
    const setAll = calls().find((c) => c.args[0] === "config" && c.args[1] === "set-all")!;
    const flagOf = (pair: string) => setAll.args[setAll.args.findIndex((a) => a.startsWith(pair)) - 1];
    expect(flagOf("oci:privateKey=")).toBe("--secret");
    expect(flagOf("oci:region=")).toBe("--plaintext");
    expect(flagOf("spillway-oci:nodePools=")).toBe("--plaintext");
    const stackFile = readFileSync(join(up.cwd, "Pulumi.pc-oci-a.yaml"), "utf8");
    expect(stackFile).toContain("spillway-oci:compartmentId");
    expect(stackFile).not.toContain("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC");
  });

  it("is idempotent: a second up changes nothing, and drops config keys the request no longer has", async () => {
    const p = provisioner();
    const first = await p.up({
      ...ociRequest(),
      config: { ...ociRequest().config, bucketName: "old-bucket" },
    });
    expect(first.bucket).toBe("old-bucket");
    const progress: ProvisionProgress[] = [];
    const second = await p.up(ociRequest(), (x) => progress.push(x));
    expect(second).toEqual({ ...first, bucket: "pc-oci-a-data" });
    expect(progress[progress.length - 1]!.message).toBe("up finished in 1s: no changes");
    expect(calls().filter((c) => c.args[0] === "stack" && c.args[1] === "init")).toHaveLength(1);
  });

  it("answers outputs() from the stack, and undefined for a stack that does not exist", async () => {
    const p = provisioner();
    expect(await p.outputs(ociRequest())).toBeUndefined();
    await p.up(ociRequest());
    // A new provisioner on the same state dir (an operator restart) finds the same outputs.
    expect((await provisioner().outputs(ociRequest()))?.clusterId).toBe(
      "ocid1.cluster.oc1.us-ashburn-1.pc-oci-a",
    );
  });

  it("destroys the stack, removes it, and succeeds again when nothing is left", async () => {
    const p = provisioner();
    await p.up(ociRequest());
    const progress: ProvisionProgress[] = [];
    await p.destroy(ociRequest(), (x) => progress.push(x));
    expect(progress[progress.length - 1]!.message).toBe("destroy finished in 1s: 8 deleted");
    expect(await p.outputs(ociRequest())).toBeUndefined();
    expect(existsSync(join(stateDir, "workspaces", "oci", "pc-oci-a"))).toBe(false);
    await p.destroy(ociRequest());
    expect(calls().filter((c) => c.args[0] === "destroy")).toHaveLength(1);
  });

  it("classifies a capacity failure from the engine's diagnostics as NoCapacity, retryable", async () => {
    scenario({
      up: [
        {
          fail: "1 error occurred:\n\t* 500-InternalError, Out of host capacity.\nSuggestion: The service for this resource encountered an error.",
          afterResources: 5,
        },
      ],
    });
    const e = await rejection(provisioner().up(ociRequest()));
    expect(e.reason).toBe("NoCapacity");
    expect(e.retryable).toBe(true);
    expect(e.message).toContain("Out of host capacity");
  });

  it("classifies a quota failure as QuotaExceeded, not retryable", async () => {
    scenario({
      up: [
        {
          fail: "1 error occurred:\n\t* 400-LimitExceeded, The following service limits were exceeded: gpu-h100-count. Request a service limit increase from the service limits page in the console.",
          afterResources: 5,
        },
      ],
    });
    const e = await rejection(provisioner().up(ociRequest()));
    expect(e).toMatchObject({ reason: "QuotaExceeded", retryable: false });
  });

  it("never puts secret config or the passphrase into an error message", async () => {
    // The CLI fails while the command line holds the private key (`config set-all --secret`):
    // a wrong passphrase for an existing stack.
    await provisioner().up(ociRequest());
    const wrong = new PulumiProvisioner({
      stateDir,
      secretsPassphrase: "a different passphrase",
      infraDir: join(ROOT, "infra"),
      pulumiCommand: command,
    });
    const e = await rejection(wrong.up(ociRequest()));
    expect(e.reason).toBe("ConfigInvalid");
    for (const secret of [
      "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
      "BEGIN PRIVATE KEY",
      "a different passphrase",
    ]) {
      expect(e.message).not.toContain(secret);
    }
    expect(e.cause).toBeUndefined();
  });

  it("a killed run leaves a lock: up fails StackLocked until cancel clears it, then succeeds (restart recovery)", async () => {
    scenario({ up: [{ hang: true }] });
    const first = provisioner()
      .up(ociRequest())
      .catch((e: unknown) => e);
    killFake(await hangingPidFile());
    expect(await first).toBeInstanceOf(ProvisionError);

    const restarted = provisioner();
    expect(await restarted.outputs(ociRequest())).toBeUndefined();
    const locked = await rejection(restarted.up(ociRequest()));
    expect(locked).toMatchObject({ reason: "StackLocked", retryable: true });
    await restarted.cancel(ociRequest());
    const out = await restarted.up(ociRequest());
    expect(out.clusterId).toBe("ocid1.cluster.oc1.us-ashburn-1.pc-oci-a");
  });

  it("an aborted up interrupts the CLI and reports a retryable cancellation", async () => {
    scenario({ up: [{ hang: true }] });
    const ac = new AbortController();
    const run = provisioner().up(ociRequest(), undefined, ac.signal);
    rmSync(await hangingPidFile());
    ac.abort();
    const e = await rejection(run);
    expect(e).toMatchObject({ reason: "ProviderError", retryable: true });
    // SIGINT lets the CLI release its lock: the next up runs without cancel.
    expect((await provisioner().up(ociRequest())).region).toBe("us-ashburn-1");
  });

  it("keeps a failed destroy visible as an error and leaves the stack for the retry", async () => {
    const p = provisioner();
    await p.up(ociRequest());
    scenario({ destroy: [{ fail: "409-Conflict, The node pool is being updated; try again later. 503 " }] });
    const e = await rejection(p.destroy(ociRequest()));
    expect(e.retryable).toBe(true);
    expect(await p.outputs(ociRequest())).toBeDefined();
    await p.destroy(ociRequest());
    expect(await p.outputs(ociRequest())).toBeUndefined();
  });

  it("provisions the Azure program with its location and pools", async () => {
    const out = await provisioner().up({
      stackName: "pc-azure-a",
      program: "azure",
      provider: "azure-east",
      region: "eastus",
      nodePools: [
        { name: "h100", shape: "Standard_ND96isr_H100_v5", gpuType: "H100", gpusPerNode: 8, nodes: 1 },
      ],
      config: {},
      secretConfig: {},
    });
    expect(out).toMatchObject({ region: "eastus", bucket: "datasets" });
    expect(out.clusterId).toContain("managedClusters/pc-azure-a");
  });
});

describe("pulumiProvisionerFor", () => {
  it("gives each state backend of a CloudProvider its own provisioner, the state dir's file backend by default", async () => {
    const forProvider = pulumiProvisionerFor({
      stateDir,
      secretsPassphrase: PASSPHRASE,
      infraDir: join(ROOT, "infra"),
      pulumiCommand: command,
    });
    const provider = (backendUrl?: string) =>
      ({
        spec: { cluster: { provision: { program: "oci", ...(backendUrl ? { backendUrl } : {}) } } },
      }) as unknown as CloudProvider;
    const other = join(stateDir, "team-backend");
    const p = forProvider(provider(`file://${other}`))!;
    expect(forProvider(provider(`file://${other}`))).toBe(p);
    expect(forProvider(provider())).not.toBe(p);
    expect(forProvider({ spec: { cluster: { existing: {} } } } as unknown as CloudProvider)).toBeUndefined();
    await p.up(ociRequest());
    expect(existsSync(join(other, ".pulumi", "stacks", "spillway-oci", "pc-oci-a.json"))).toBe(true);
  });
});
