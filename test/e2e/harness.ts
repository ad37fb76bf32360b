/**
 * End-to-end harness: the whole sandbox (management and AKS API servers over HTTP, simulated
 * kubelets, Azurite, s3rver, the ARM emulator over HTTPS) with the operator's real
 * controllers and the real Azure responder. Tests drive it the way a user does — objects
 * applied with the real kubectl — and observe it through the API.
 */
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { CapacityOffer, TrainingRun } from "../../operator/api/v1alpha1/index.ts";
import { Manager, type ManagerOptions } from "../../operator/manager.ts";
import { KubeClient } from "../../operator/runtime/client.ts";
import { createLogger } from "../../operator/runtime/logging.ts";
import { type KubeObject, Resources, SpillwayResources } from "../../operator/runtime/resources.ts";
import type { ArmEmulator } from "../../operator/sandbox/arm/index.ts";
import { demoRun } from "../../operator/sandbox/demo.ts";
import { type Sandbox, startSandbox } from "../../operator/sandbox/sandbox.ts";
import { DEFAULT_SCENARIO, type Scenario } from "../../operator/sandbox/scenario.ts";
import {
  armEmulator,
  installSandboxClouds,
  OPERATOR_NAMESPACE,
  sandboxAdapters,
  startSandboxArm,
} from "../../operator/sandbox/wiring.ts";
import { ROOT } from "../helpers/examples.ts";
import { kubectlPath } from "../sandbox/apiserver/kubectl.ts";

export type Run = TrainingRun & KubeObject;
export type Offer = CapacityOffer & KubeObject;

export const AZURE_SKU = "Standard_ND96isr_H100_v5";
export const AZURE_QUOTA_VCPUS = 96 * 16;

/** The default story's clouds with test timings: fast pods, no ARM latency, quick provisioning. */
export function testScenario(mutate?: (s: Scenario) => void): Scenario {
  const s = structuredClone(DEFAULT_SCENARIO);
  s.timings = { podStartup: "100ms", jobDuration: "1500ms" };
  (s.clouds.azure.arm as Record<string, unknown>).latency = "0s";
  // Quota for 16 nodes: tests run one after another, and a finished run's reservation is
  // released asynchronously — the default 192 vCPUs (two nodes) would make them race.
  (s.clouds.azure.arm as Record<string, unknown>).quota = [
    { region: "eastus", family: "standardNDSH100v5Family", limit: 96 * 16 },
  ];
  s.clouds.oci.provisioning = { ...s.clouds.oci.provisioning, latency: "300ms", destroyLatency: "100ms" };
  s.demo = { namespace: "ml-team", runs: [] };
  mutate?.(s);
  return s;
}

export interface E2E {
  sandbox: Sandbox;
  arm: ArmEmulator;
  client: KubeClient;
  manager: Manager | undefined;
  startOperator(extra?: Partial<ManagerOptions>): Promise<Manager>;
  stopOperator(): Promise<void>;
  kubectl(args: string[], stdin?: string): Promise<{ code: number; stdout: string; stderr: string }>;
  stop(): Promise<void>;
}

export async function startE2E(scenario: Scenario = testScenario()): Promise<E2E> {
  const dir = mkdtempSync(join(tmpdir(), "spillway-e2e-"));
  const sandbox = await startSandbox({ stateDir: dir, scenario, startArm: startSandboxArm });
  const arm = armEmulator(sandbox);
  if (!arm) throw new Error("the ARM emulator did not start");
  const client = KubeClient.fromKubeconfig(sandbox.management.kubeconfig(), { cluster: "management" });
  await installSandboxClouds(sandbox, client, ["ml-team"]);
  const e2e: E2E = {
    sandbox,
    arm,
    client,
    manager: undefined,
    async startOperator(extra = {}) {
      const m = new Manager({
        kubeconfig: sandbox.management.kubeconfig(),
        namespace: OPERATOR_NAMESPACE,
        origin: "e2e",
        logger: createLogger({ level: process.env.E2E_LOG ?? "error" }),
        collectIntervalMs: 1_000,
        settings: { reofferBaseMs: 60_000, remotePollMs: 1_000 },
        ...sandboxAdapters(sandbox),
        ...extra,
      });
      await m.start();
      e2e.manager = m;
      return m;
    },
    async stopOperator() {
      await e2e.manager?.stop(2_000);
      e2e.manager = undefined;
    },
    kubectl(args, stdin) {
      return new Promise((resolve) => {
        const child = execFile(
          kubectlPath(),
          args,
          {
            encoding: "utf8",
            timeout: 60_000,
            env: {
              PATH: process.env.PATH ?? "",
              HOME: dir,
              KUBECONFIG: sandbox.management.kubeconfigPath,
              KUBECACHEDIR: join(dir, "kubecache"),
            },
          },
          (error, stdout, stderr) => {
            resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout, stderr });
          },
        );
        if (stdin !== undefined) child.stdin?.end(stdin);
      });
    },
    async stop() {
      await e2e.stopOperator();
      await sandbox.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return e2e;
}

/** Polls until `get` returns a value satisfying `ok` (not a timing assertion: the limit only ends a hung test). */
export async function eventually<T>(
  get: () => Promise<T> | T,
  ok: (v: T) => boolean,
  what: string,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  for (;;) {
    try {
      last = await get();
      if (ok(last)) return last;
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
    if (Date.now() > deadline) {
      const shown =
        last && typeof last === "object" && "status" in last ? (last as { status: unknown }).status : last;
      throw new Error(`timed out waiting for ${what}; last seen: ${JSON.stringify(shown)?.slice(0, 3000)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function trainingRun(
  name: string,
  opts: {
    nodes?: number;
    gpus?: number;
    workloadClass?: "training" | "research" | "serving";
    namespace?: string;
  } = {},
): Run {
  return demoRun(
    {
      name,
      workloadClass: opts.workloadClass ?? "training",
      gpuType: "H100",
      gpusPerNode: opts.gpus ?? 8,
      nodes: opts.nodes ?? 1,
      startAfter: "0s",
    },
    opts.namespace ?? "ml-team",
  );
}

export async function getRun(e: E2E, name: string, namespace = "ml-team"): Promise<Run> {
  return e.client.get<Run>(SpillwayResources.TrainingRun, name, namespace);
}

export async function offersOf(e: E2E, run: string, namespace = "ml-team"): Promise<Offer[]> {
  const list = await e.client.list<Offer>(SpillwayResources.CapacityOffer, { namespace });
  return list.items.filter((o) => o.spec.run.name === run).sort((a, b) => a.spec.attempt - b.spec.attempt);
}

/** The Events recorded for the object `name` in `namespace`, in the API's order. */
export async function eventsOf(
  e: E2E,
  name: string,
  namespace = "ml-team",
): Promise<{ reason: string; message: string }[]> {
  const list = await e.client.list<
    KubeObject & { reason?: string; message?: string; involvedObject?: { name?: string } }
  >(Resources.Event, { namespace });
  return list.items
    .filter((ev) => ev.involvedObject?.name === name)
    .map((ev) => ({ reason: ev.reason ?? "", message: ev.message ?? "" }));
}

/** The Jobs a cluster holds for runs of the management cluster. */
export async function remoteJobs(kubeconfig: string): Promise<KubeObject[]> {
  const c = KubeClient.fromKubeconfig(kubeconfig);
  return (await c.list<KubeObject>(Resources.Job, {})).items;
}

export const phaseIs =
  (...phases: string[]) =>
  (r: Run) =>
    phases.includes(r.status?.phase ?? "");

export function condition(r: Run, type: string) {
  return r.status?.conditions?.find((c) => c.type === type);
}

/** `spillway operator` as a separate process (the real CLI), for kill and leader-election tests. */
export class OperatorProcess {
  readonly lines: string[] = [];
  private exited: Promise<number | null>;
  readonly child: import("node:child_process").ChildProcess;

  constructor(e: E2E, args: string[] = []) {
    const caFile = join(e.sandbox.stateDir, "arm-ca.pem");
    writeFileSync(caFile, e.arm.ca);
    this.child = spawn(
      process.execPath,
      [
        join(ROOT, "bin", "spillway.mjs"),
        "operator",
        "--kubeconfig",
        e.sandbox.management.kubeconfigPath,
        "--namespace",
        OPERATOR_NAMESPACE,
        "--origin",
        "e2e",
        "--azure-ca-file",
        caFile,
        "--metrics-bind-address",
        "127.0.0.1:0",
        "--health-probe-bind-address",
        "127.0.0.1:0",
        "--log-level",
        "info",
        "--collect-interval",
        "2s",
        ...args,
      ],
      { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, POD_NAME: "op" } },
    );
    const collect = (buf: Buffer) => {
      for (const l of buf.toString("utf8").split("\n")) if (l.trim()) this.lines.push(l);
    };
    this.child.stdout?.on("data", collect);
    this.child.stderr?.on("data", collect);
    this.exited = new Promise((resolve) => this.child.once("exit", (code) => resolve(code)));
  }

  /** Parsed JSON log lines. */
  logs(): Array<Record<string, unknown>> {
    return this.lines.flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
  }

  has(message: string): boolean {
    return this.logs().some((l) => l.message === message);
  }

  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<number | null> {
    this.child.kill(signal);
    return this.exited;
  }

  get done(): Promise<number | null> {
    return this.exited;
  }
}
