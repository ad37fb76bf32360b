/**
 * `spillway sandbox`: runs the local control planes and storage emulators until SIGINT or
 * SIGTERM, then stops them all (no child process, no port left behind). Prints
 * `kubeconfig: <path>` once everything is ready, so scripts and tests wait for that line.
 * `--demo` then tells the spec's story (operator/sandbox/demo.ts) against it.
 */
import type { Command } from "commander";
import { type Sandbox, setAsidePreviousState, startSandbox } from "../../sandbox/sandbox.ts";
import { loadScenario, ScenarioError } from "../../sandbox/scenario.ts";

interface SandboxCommandOptions {
  stateDir: string;
  scenario?: string;
  demo?: boolean;
}

const STOP_SIGNALS: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

export function register(program: Command): void {
  program
    .command("sandbox")
    .description(
      "Run the local sandbox: a Kubernetes API server for the management cluster, a simulated AKS cluster, " +
        "Azurite and an S3 server, and a provisioner of simulated OCI clusters. Stops on Ctrl-C.",
    )
    .option("--state-dir <dir>", "where the sandbox keeps its state and kubeconfig", ".spillway/sandbox")
    .option(
      "--scenario <file>",
      "scenario YAML (clouds, capacity, prices, latencies); default: the demo story",
    )
    .option("--demo", "run the demo story once the sandbox is ready")
    .action(async (opts: SandboxCommandOptions) => {
      process.exitCode = await runSandbox(opts);
      // Client keep-alive sockets and timers of libraries must not keep a stopped sandbox alive.
      process.exit();
    });
}

async function runSandbox(opts: SandboxCommandOptions): Promise<number> {
  let scenario: ReturnType<typeof loadScenario>;
  try {
    scenario = loadScenario(opts.scenario);
  } catch (e) {
    if (e instanceof ScenarioError) {
      console.error(`spillway sandbox: ${e.message}`);
      return 2;
    }
    throw e;
  }

  // Signals are handled from the start: a stop requested while starting stops what started.
  const stop = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stop.signal.aborted) {
      // Second signal: give up waiting. The emulators' exit hook still kills their process groups.
      console.error(`spillway sandbox: ${signal} again, exiting now`);
      process.exit(130);
    }
    console.error(`spillway sandbox: ${signal}, stopping`);
    stop.abort();
  };
  for (const s of STOP_SIGNALS) process.on(s, onSignal);

  let sandbox: Sandbox;
  try {
    // Imported here, not at the top: every `spillway` command loads this module, and the
    // wiring pulls in the Azure SDKs.
    const { startSandboxArm } = await import("../../sandbox/wiring.ts");
    if (opts.demo) {
      const note = await setAsidePreviousState(opts.stateDir);
      if (note) console.error(`sandbox: ${note}`);
    }
    sandbox = await startSandbox({
      stateDir: opts.stateDir,
      scenario,
      startArm: startSandboxArm,
      log: (line) => console.error(`sandbox: ${line}`),
      onClusterError: clusterErrorLogger(),
    });
  } catch (e) {
    console.error(`spillway sandbox: ${(e as Error).message}`);
    return 1;
  }
  if (!stop.signal.aborted) {
    console.log(`kubeconfig: ${sandbox.management.kubeconfigPath}`);
    console.log(`aks kubeconfig: ${sandbox.aks.kubeconfigPath}`);
    console.log(`management api: ${sandbox.management.url}`);
    console.log(`aks api: ${sandbox.aks.cluster.url}`);
    console.log(
      `azure blob: ${sandbox.azureStorage.blobEndpoint} (container ${sandbox.azureStorage.container})`,
    );
    console.log(`s3: ${sandbox.s3Storage.endpoint} (bucket ${sandbox.s3Storage.bucket})`);
    if (sandbox.armUrl) console.log(`arm: ${sandbox.armUrl}`);
    console.log(`ready; export KUBECONFIG=${sandbox.management.kubeconfigPath} — Ctrl-C stops the sandbox`);
  }

  let code = 0;
  if (opts.demo && !stop.signal.aborted) {
    try {
      // Lazily, like the wiring: the demo runs the whole operator in-process.
      const { runDemo } = await import("../../sandbox/demo.ts");
      await runDemo(sandbox, { signal: stop.signal, out: (line) => console.log(line) });
    } catch (e) {
      if (!stop.signal.aborted) {
        console.error(`spillway sandbox: demo: ${(e as Error).message}`);
        code = 1;
      }
    }
  }
  if (!stop.signal.aborted && code === 0) {
    await new Promise<void>((resolve) =>
      stop.signal.addEventListener("abort", () => resolve(), { once: true }),
    );
  }
  try {
    await sandbox.stop();
    console.error("spillway sandbox: stopped");
  } catch (e) {
    console.error(`spillway sandbox: ${(e as Error).message}`);
    code = 1;
  }
  for (const s of STOP_SIGNALS) process.off(s, onSignal);
  return code;
}

/**
 * Kubelet passes retry on their own; a failing one would repeat its error every second, so
 * only a change of message is printed.
 */
function clusterErrorLogger(): (cluster: string, e: unknown) => void {
  const last = new Map<string, string>();
  return (cluster, e) => {
    const message = e instanceof Error ? e.message.split("\n")[0]! : String(e);
    if (last.get(cluster) === message) return;
    last.set(cluster, message);
    console.error(`sandbox: cluster ${cluster}: ${message} (retrying)`);
  };
}
