/**
 * `npm start` (`spillway sandbox --demo`): the operator runs in-process against the sandbox,
 * the scenario's runs are applied one by one, and the story is printed as it happens — each
 * offer to Azure and its answer, each placement, each provisioned cluster, each run's progress
 * — ending with the offer ledger and the status tables.
 *
 * The story is read from the operator's caches, i.e. from the API server's watch stream: the
 * demo prints what a user would see with `kubectl get -w`, not what the code intended.
 */
import { createWriteStream } from "node:fs";
import { join } from "node:path";
import type { CapacityOffer, ProvisionedCluster, TrainingRun } from "../api/v1alpha1/index.ts";
import { offersTable, providersTable, runsTable } from "../cli/lib/reports.ts";
import { Manager } from "../manager.ts";
import { KubeClient } from "../runtime/client.ts";
import { createLogger } from "../runtime/logging.ts";
import { type KubeObject, SpillwayResources } from "../runtime/resources.ts";
import { parseDuration } from "../util/duration.ts";
import type { DemoOptions, Sandbox } from "./sandbox.ts";
import type { ScenarioDemoRun } from "./scenario.ts";
import { installSandboxClouds, OPERATOR_NAMESPACE, sandboxAdapters } from "./wiring.ts";

export interface DemoResult {
  runs: TrainingRun[];
  offers: CapacityOffer[];
  /** Whether every run reached the state its story expects before the time limit. */
  complete: boolean;
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(t);
        resolve();
      },
      { once: true },
    );
  });

export function demoRun(r: ScenarioDemoRun, namespace: string): TrainingRun & KubeObject {
  return {
    apiVersion: "spillway.dev/v1alpha1",
    kind: "TrainingRun",
    metadata: { name: r.name, namespace: r.namespace ?? namespace, labels: { "spillway.dev/demo": "true" } },
    spec: {
      workloadClass: r.workloadClass,
      template: {
        spec: {
          containers: [
            {
              name: "trainer",
              image: "ghcr.io/spillway/sim-trainer:0.1",
              command: ["torchrun"],
              args: ["--nnodes=$(SPILLWAY_NNODES)", `--nproc-per-node=${r.gpusPerNode}`, "train.py"],
            },
          ],
        },
      },
      resources: { gpu: { type: r.gpuType, count: r.gpusPerNode }, nodes: r.nodes },
      placement: { rofr: { decisionTimeout: "30s" } },
    },
  };
}

/** Whether a run has reached the end of its story in the demo. */
function settled(run: TrainingRun): boolean {
  const phase = run.status?.phase;
  if (phase === "Succeeded" || phase === "Failed") return true;
  const placed = run.status?.conditions?.find((c) => c.type === "Placed");
  return (
    run.spec.workloadClass === "serving" &&
    placed?.status === "False" &&
    placed.reason === "ServingWaitsForPrimary"
  );
}

/** Prints transitions of runs, offers and provisioned clusters once each. */
class Narrator {
  private readonly seen = new Map<string, string>();
  constructor(
    private readonly out: (line: string) => void,
    private readonly started: number,
  ) {}

  private say(key: string, state: string, line: string): void {
    if (this.seen.get(key) === state) return;
    this.seen.set(key, state);
    const t = ((Date.now() - this.started) / 1000).toFixed(1).padStart(5);
    this.out(`[${t}s] ${line}`);
  }

  offer(o: CapacityOffer): void {
    const key = `offer/${o.metadata.namespace}/${o.metadata.name}`;
    const gpus = `${o.spec.request.nodes * o.spec.request.gpusPerNode}×${o.spec.request.gpuType}`;
    const competing = o.spec.competingQuote
      ? `, competing quote $${o.spec.competingQuote.pricePerHour.toFixed(2)}/h from ${o.spec.competingQuote.provider}`
      : "";
    this.say(
      `${key}/made`,
      "made",
      `${o.spec.run.name}: offered ${gpus} to ${o.spec.provider} (${o.metadata.name}${competing})`,
    );
    const st = o.status;
    if (!st?.outcome) return;
    const detail =
      st.outcome === "Accepted"
        ? `at $${(st.acceptedPricePerHour ?? 0).toFixed(2)}/h`
        : `${st.reason ?? ""}${st.message ? ` — ${st.message}` : ""}`;
    this.say(
      `${key}/answer`,
      st.outcome,
      `${o.spec.run.name}: ${o.spec.provider} ${st.outcome.toLowerCase()} ${detail}`.trimEnd(),
    );
  }

  run(r: TrainingRun): void {
    const key = `run/${r.metadata.namespace}/${r.metadata.name}`;
    const p = r.status?.placement;
    const placed = r.status?.conditions?.find((c) => c.type === "Placed");
    if (p?.cluster) {
      this.say(
        `${key}/placement`,
        `${p.attempt}/${p.provider}/${p.cluster}`,
        `${r.metadata.name}: placed on ${p.provider} (${p.reason}), cluster ${p.cluster}`,
      );
    } else if (placed?.status === "False" && placed.reason !== "AwaitingPrimary") {
      this.say(
        `${key}/placement`,
        `wait/${placed.reason}`,
        `${r.metadata.name}: waiting — ${placed.message}`,
      );
    }
    const phase = r.status?.phase ?? "Pending";
    if (["Running", "Succeeded", "Failed"].includes(phase)) {
      const remote = r.status?.remote;
      const extra =
        phase === "Running"
          ? ` (${remote?.active ?? 0} workers on ${p?.provider})`
          : phase === "Failed"
            ? ` — ${r.status?.conditions?.find((c) => c.type === "Failed")?.message ?? ""}`
            : "";
      this.say(`${key}/phase`, phase, `${r.metadata.name}: ${phase}${extra}`);
    }
  }

  cluster(pc: ProvisionedCluster): void {
    const phase = pc.status?.phase ?? "Pending";
    const op = pc.status?.lastOperation?.message;
    this.say(
      `pc/${pc.metadata.name}`,
      phase,
      `cluster ${pc.metadata.name} on ${pc.spec.provider}: ${phase}${op ? ` — ${op}` : ""}`,
    );
  }
}

export interface RunDemoOptions extends DemoOptions {
  /** How long the story may take before the tables are printed anyway. Default 3 minutes. */
  timeoutMs?: number;
  /**
   * Return once the tables are printed (tests). By default the operator keeps running
   * against the sandbox until `signal` aborts, so the user can go on with kubectl.
   */
  exitWhenDone?: boolean;
}

export async function runDemo(sandbox: Sandbox, opts: RunDemoOptions): Promise<DemoResult> {
  const { out, signal } = opts;
  const scenario = sandbox.scenario;
  const namespace = scenario.demo.namespace ?? "ml-team";
  const client = KubeClient.fromKubeconfig(sandbox.management.kubeconfig(), { cluster: "management" });
  await installSandboxClouds(sandbox, client, [namespace]);
  const logFile = join(sandbox.stateDir, "operator.log");
  const logStream = createWriteStream(logFile, { flags: "a" });
  const manager = new Manager({
    kubeconfig: sandbox.management.kubeconfig(),
    namespace: OPERATOR_NAMESPACE,
    origin: "sandbox",
    logger: createLogger({ level: "debug", stream: logStream }),
    collectIntervalMs: 10_000,
    settings: {
      reofferBaseMs: 60_000,
      reofferMaxMs: 300_000,
      remotePollMs: 2_000,
      clusterLostTimeoutMs: 20_000,
    },
    ...sandboxAdapters(sandbox),
  });
  out(`operator: starting in-process (JSON logs in ${logFile})`);
  await manager.start();
  const started = Date.now();
  const narrator = new Narrator(out, started);
  const caches = manager.ctx.caches;
  const tell = () => {
    for (const pc of caches.clusters.list()) narrator.cluster(pc);
    for (const o of caches.offers.list()) narrator.offer(o);
    for (const r of caches.runs.list()) narrator.run(r);
  };
  const ticker = setInterval(tell, 100);
  const deadline = started + (opts.timeoutMs ?? 180_000);
  let complete = false;
  try {
    for (const r of scenario.demo.runs) {
      await sleep(parseDuration(r.startAfter), signal);
      if (signal.aborted) break;
      await client.create(SpillwayResources.TrainingRun, demoRun(r, namespace)).catch((err: unknown) => {
        out(`${r.name}: could not be applied: ${err instanceof Error ? err.message : String(err)}`);
      });
      out(
        `[${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s] ${r.name}: applied (${r.workloadClass}, ${r.nodes}×${r.gpusPerNode} ${r.gpuType})${r.expect ? ` — expect: ${r.expect}` : ""}`,
      );
    }
    while (!signal.aborted && Date.now() < deadline) {
      const runs = caches.runs.list();
      if (runs.length >= scenario.demo.runs.length && runs.every(settled)) {
        complete = true;
        break;
      }
      await sleep(200, signal);
    }
    tell();
  } finally {
    clearInterval(ticker);
  }
  const runs = (await client.listAll<TrainingRun & KubeObject>(SpillwayResources.TrainingRun)).items;
  const offers = (await client.listAll<CapacityOffer & KubeObject>(SpillwayResources.CapacityOffer)).items;
  const clusters = (
    await client.listAll<ProvisionedCluster & KubeObject>(SpillwayResources.ProvisionedCluster)
  ).items;
  const providers = manager.ctx.caches.providers.list();
  out("");
  out(
    complete
      ? "The story is complete."
      : signal.aborted
        ? "Stopped."
        : "Time limit reached before every run settled.",
  );
  out("");
  out("$ spillway offers");
  out(offersTable(offers));
  out("");
  out("$ spillway status");
  out(runsTable(runs));
  out("");
  out(providersTable(providers, clusters));
  if (!opts.exitWhenDone && !signal.aborted) {
    out("");
    out(
      `The operator keeps running against the sandbox. Try: KUBECONFIG=${sandbox.management.kubeconfigPath} kubectl get tr,offers -A`,
    );
    out("Ctrl-C stops the operator and the sandbox.");
    while (!signal.aborted) await sleep(60_000, signal);
  }
  await manager.stop(5_000);
  await new Promise<void>((resolve) => logStream.end(resolve));
  return { runs, offers, complete };
}
