/**
 * `spillway sandbox` as a user runs it: the real command line in its own process, the real
 * `kubectl` against the kubeconfig it prints, then SIGTERM. Three runs in a row on one state
 * directory: each leaves no process and no port behind, each finds what the previous one
 * stored, on the same endpoints.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT } from "../../helpers/examples.ts";
import { descendants, listeningPorts, portBindable, waitGone } from "./helpers.ts";

const KUBECTL = "kubectl";
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "spillway-sandbox-cli-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Running {
  child: ChildProcess;
  lines: Map<string, string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr: () => string;
}

/** Starts the CLI and resolves once it printed `kubeconfig: …` and its summary. */
async function startCli(stateDir: string): Promise<Running> {
  const child = spawn(
    process.execPath,
    [join(ROOT, "bin", "spillway.mjs"), "sandbox", "--state-dir", stateDir],
    {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let out = "";
  let err = "";
  child.stderr!.on("data", (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  const lines = new Map<string, string>();
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      for (const line of out.split("\n")) {
        const m = /^([a-z0-9 ]+): (.*)$/.exec(line);
        if (m) lines.set(m[1]!, m[2]!);
      }
      if (/^ready;/m.test(out)) resolve();
    });
    void exited.then(({ code }) => reject(new Error(`sandbox exited early (${code}): ${err}`)));
  });
  return { child, lines, exited, stderr: () => err };
}

function kubectl(kubeconfig: string, ...args: string[]): string {
  return kubectlWithInput(kubeconfig, "", ...args);
}

function kubectlWithInput(kubeconfig: string, input: string, ...args: string[]): string {
  return execFileSync(KUBECTL, ["--kubeconfig", kubeconfig, ...args], {
    encoding: "utf8",
    timeout: 30000,
    input,
  });
}

describe("spillway sandbox", () => {
  it("serves kubectl, and started and stopped 3 times in a row leaves no process and no port held", async () => {
    const stateDir = join(dir, "state");
    let firstEndpoints: string[] | undefined;
    for (let run = 1; run <= 3; run++) {
      const sandbox = await startCli(stateDir);
      try {
        const kubeconfig = sandbox.lines.get("kubeconfig")!;
        expect(kubeconfig).toBe(join(stateDir, "kubeconfig"));

        // The management cluster serves Spillway's CRDs; the AKS cluster has its GPU nodes.
        expect(kubectl(kubeconfig, "get", "crds", "-o", "name")).toContain(
          "customresourcedefinition.apiextensions.k8s.io/trainingruns.spillway.dev",
        );
        expect(kubectl(kubeconfig, "get", "trainingruns", "-A", "-o", "name")).toBe("");
        const aks = sandbox.lines.get("aks kubeconfig")!;
        expect(kubectl(aks, "get", "nodes", "-o", "name").trim().split("\n")).toEqual([
          "node/aks-gpuh100-0",
          "node/aks-gpuh100-1",
        ]);
        // What one run stores, the next finds (the state directory persists the objects).
        if (run === 1) {
          const ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ml-team\n";
          expect(kubectlWithInput(kubeconfig, ns, "apply", "-f", "-")).toContain("namespace/ml-team created");
        } else
          expect(kubectl(kubeconfig, "get", "namespace", "ml-team", "-o", "name").trim()).toBe(
            "namespace/ml-team",
          );

        // Endpoints stay the same across restarts (ports reused while free), so objects that
        // recorded them (CloudProvider storage endpoints) stay right.
        const endpoints = ["management api", "aks api", "azure blob", "s3"].map((k) => sandbox.lines.get(k)!);
        firstEndpoints ??= endpoints;
        expect(endpoints).toEqual(firstEndpoints);

        const pids = [sandbox.child.pid!, ...descendants(sandbox.child.pid!)];
        const ports = listeningPorts(pids);
        // API servers (management, AKS) and the two emulators, at least.
        expect(ports.length).toBeGreaterThanOrEqual(4);
        for (const url of ["management api", "aks api", "azure blob", "s3"]) {
          expect(ports).toContain(Number(new URL(sandbox.lines.get(url)!.split(" ")[0]!).port));
        }

        sandbox.child.kill("SIGTERM");
        const { code } = await sandbox.exited;
        expect(code).toBe(0);
        expect(await waitGone(pids)).toEqual([]);
        for (const port of ports)
          expect({ port, free: await portBindable(port) }).toEqual({ port, free: true });
      } finally {
        if (sandbox.child.exitCode === null && sandbox.child.signalCode === null)
          sandbox.child.kill("SIGKILL");
      }
    }
  }, 240000);
});
