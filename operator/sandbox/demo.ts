/**
 * `npm start` (`spillway sandbox --demo`): the operator runs in-process against the sandbox,
 * the scenario's runs are applied one by one, and the story is printed as it happens — each
 * offer to Azure and its answer, each placement, each provisioned cluster, each run's progress
 * — ending with the offer ledger and the status tables.
 *
 * The story is read from the operator's caches, i.e. from the API server's watch stream: the
 * demo prints what a user would see with `kubectl get -w`, not what the code intended.
 *
 * Chapter 2 (when the ARM emulator runs): a run with checkpoints whose trainer runs for real
 * (the trainer stand-in, executed by the simulated kubelet) trains on OCI while Azure has no
 * capacity and commits checkpoints; then the OCI cluster is lost and Azure has capacity
 * again: the run is offered to Azure first, accepted, restored from the checkpoint the
 * operator replicated there, and trains on from that step to the last. The trainer's own
 * output (read from the simulated clusters' container logs) shows the step counter.
 */
import { createWriteStream } from "node:fs";
import { join } from "node:path";
import type { CapacityOffer, ProvisionedCluster, TrainingRun } from "../api/v1alpha1/index.ts";
import { offersTable, providersTable, runsTable } from "../cli/lib/reports.ts";
import { AGENT_CONTAINER, RESTORE_CONTAINER } from "../controllers/remote/manifests.ts";
import { Manager } from "../manager.ts";
import { KubeClient } from "../runtime/client.ts";
import { createLogger } from "../runtime/logging.ts";
import { type KubeObject, SpillwayResources } from "../runtime/resources.ts";
import { parseDuration } from "../util/duration.ts";
import type { SimulatedCluster } from "./cluster/simulated-cluster.ts";
import type { DemoOptions, Sandbox } from "./sandbox.ts";
import type { ScenarioDemoRun } from "./scenario.ts";
import { parseWorkloadEvents, standInContainer } from "./trainer/standin.ts";
import { armEmulator, installSandboxClouds, OPERATOR_NAMESPACE, sandboxAdapters } from "./wiring.ts";

export interface DemoResult {
  runs: TrainingRun[];
  offers: CapacityOffer[];
  /** Whether every run reached the state its story expects before the time limit. */
  complete: boolean;
  /** Chapter 2, when it ran: the failover run's outcome as its trainer reported it. */
  failover?: FailoverResult;
}

export interface FailoverResult {
  complete: boolean;
  /** Step of the checkpoint the trainer restored on Azure. */
  resumedFrom?: number;
  /** Last step the trainer finished on Azure. */
  finalStep?: number;
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
      // Per attempt: a run that moved is Running again on its new cluster.
      this.say(`${key}/phase`, `${phase}/${p?.attempt ?? ""}`, `${r.metadata.name}: ${phase}${extra}`);
    }
    const ckpt = r.status?.checkpoint;
    if (ckpt) {
      this.say(
        `${key}/checkpoint`,
        String(ckpt.step),
        `${r.metadata.name}: status.checkpoint step ${ckpt.step}${ckpt.replicatedTo?.length ? ` (held by ${ckpt.replicatedTo.join(", ")})` : ""}`,
      );
    }
    if (r.status?.moves) {
      this.say(
        `${key}/moves`,
        String(r.status.moves),
        `${r.metadata.name}: moved (${r.status.moves} so far)`,
      );
    }
  }

  /** A line of the story that is not a transition of an object (printed once per key). */
  note(key: string, line: string): void {
    this.say(`note/${key}`, "said", line);
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
  /** Chapter 2, the checkpointed failover; default: on when the ARM emulator runs. */
  failover?: boolean;
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
      // Short, so chapter 2's lost cluster is noticed quickly (a real one would wait longer).
      clusterLostTimeoutMs: 5_000,
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
  let failover: FailoverResult | undefined;
  if ((opts.failover ?? armEmulator(sandbox) !== undefined) && !signal.aborted) {
    failover = await failoverChapter(sandbox, manager, client, namespace, { ...opts, started });
    out("");
    out("$ spillway status");
    out(runsTable((await client.listAll<TrainingRun & KubeObject>(SpillwayResources.TrainingRun)).items));
  }
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
  return {
    runs,
    offers,
    complete: complete && (failover?.complete ?? true),
    ...(failover ? { failover } : {}),
  };
}

/** The failover run of chapter 2. */
export const FAILOVER_RUN = "run-ckpt";
const FAILOVER_STEPS = 60;
const FAILOVER_EVERY = 5;

/**
 * Chapter 2 (see the file comment). Azure's capacity is changed through the ARM emulator;
 * the OCI cluster is lost by stopping its simulated cluster (API server gone, processes
 * killed), as the end-to-end tests do.
 */
async function failoverChapter(
  sandbox: Sandbox,
  manager: Manager,
  client: KubeClient,
  namespace: string,
  opts: RunDemoOptions & { started: number },
): Promise<FailoverResult> {
  const { out, signal } = opts;
  const arm = armEmulator(sandbox)!;
  const azure = sandbox.scenario.clouds.azure;
  const sku = azure.capacity.find((c) => c.type === azure.cluster.gpuType) ?? azure.capacity[0]!;
  const caches = manager.ctx.caches;
  const narrator = new Narrator(out, opts.started);
  const key = `${namespace}/${FAILOVER_RUN}`;
  const current = () => caches.runs.get(key);
  out("");
  out(
    `Chapter 2 — ${FAILOVER_RUN}: a run with checkpoints whose trainer runs for real (${FAILOVER_STEPS} steps, a checkpoint every ${FAILOVER_EVERY}), its pod shaped as on a real cluster: Spillway's restore init container, its checkpoint agent as a native sidecar, the trainer beside it.`,
  );
  out(
    "OCI will be lost mid-run while Azure gets capacity back: the run must come back to Azure and continue.",
  );
  arm.setCapacity(azure.region, sku.sku, 0);
  narrator.note(
    "azure-empty",
    `${azure.name}: no free ${sku.type} node in ${azure.region} (ARM capacity set to 0)`,
  );

  const run = demoRun(
    {
      name: FAILOVER_RUN,
      workloadClass: "training",
      gpuType: sku.type,
      gpusPerNode: sku.gpusPerNode,
      nodes: 1,
      startAfter: "0s",
    },
    namespace,
  );
  run.spec.checkpoints = { keep: 3 };
  run.spec.template.spec.containers = [
    standInContainer({ steps: FAILOVER_STEPS, every: FAILOVER_EVERY, stepDelay: "200ms" }),
  ];
  await client.create(SpillwayResources.TrainingRun, run);
  narrator.note(
    "applied",
    `${FAILOVER_RUN}: applied (training, 1×${sku.gpusPerNode} ${sku.type}, checkpoints keep 3)`,
  );

  const trainers = new TrainerNarrator(narrator, namespace, FAILOVER_RUN);
  const clusterOf = (r: TrainingRun | undefined): SimulatedCluster | undefined => {
    const p = r?.status?.placement;
    if (!p?.cluster) return undefined;
    if (p.provider === azure.name) return sandbox.aks.cluster;
    const pc = caches.clusters.list().find((c) => c.metadata.name === p.cluster);
    return pc ? sandbox.provisioner.cluster(pc.spec.stackName) : undefined;
  };
  const watched = new Map<SimulatedCluster, string>();
  const tell = () => {
    for (const pc of caches.clusters.list()) narrator.cluster(pc);
    for (const o of caches.offers.list()) if (o.spec.run.name === FAILOVER_RUN) narrator.offer(o);
    const r = current();
    if (r) narrator.run(r);
    const c = clusterOf(r);
    if (c && !watched.has(c)) watched.set(c, r!.status!.placement!.provider);
    for (const [cluster, provider] of watched) trainers.tell(cluster, provider);
  };
  const ticker = setInterval(tell, 100);
  const deadline = Date.now() + (opts.timeoutMs ?? 180_000);
  try {
    // Train on OCI until two checkpoints are committed there and the operator reports one.
    const onOci = await waitFor(
      () => {
        const r = current();
        const c = clusterOf(r);
        if (r?.status?.placement?.provider === azure.name) return undefined;
        return c && (r?.status?.checkpoint?.step ?? 0) >= 2 * FAILOVER_EVERY ? { r: r!, c } : undefined;
      },
      deadline,
      signal,
    );
    if (!onOci) return { complete: false };
    tell();
    arm.setCapacity(azure.region, sku.sku, 2);
    narrator.note(
      "azure-free",
      `${azure.name}: 2 ${sku.type} nodes free again in ${azure.region} (ARM capacity set to 2)`,
    );
    const provider = onOci.r.status!.placement!.provider;
    await onOci.c.stop();
    // The trainer's last lines (written before it was killed) come first.
    tell();
    narrator.note(
      "oci-lost",
      `${provider}: cluster ${onOci.r.status!.placement!.cluster} lost — its API server and nodes are gone, the trainer was killed (last committed step ${trainers.lastCommitted(onOci.c) ?? "?"})`,
    );
    const done = await waitFor(
      () => {
        const r = current();
        return r?.status?.phase === "Succeeded" || r?.status?.phase === "Failed" ? r : undefined;
      },
      deadline,
      signal,
    );
    // The trainer's last lines arrive with its exit, before the Job completes.
    tell();
    const onAzure = trainers.summary(sandbox.aks.cluster);
    const ok = done?.status?.phase === "Succeeded" && onAzure.finalStep === FAILOVER_STEPS;
    out("");
    out(
      ok
        ? `Chapter 2 is complete: ${FAILOVER_RUN} trained steps 1–${onAzure.resumedFrom} on OCI, was restored on Azure from checkpoint ${onAzure.resumedFrom} and trained ${onAzure.resumedFrom! + 1}–${onAzure.finalStep} there (${done?.status?.moves ?? 0} move).`
        : signal.aborted
          ? "Stopped."
          : `Chapter 2 did not finish as expected (phase ${done?.status?.phase ?? "unknown"}).`,
    );
    return { complete: ok, ...onAzure };
  } finally {
    clearInterval(ticker);
  }
}

async function waitFor<T>(
  get: () => T | undefined,
  deadline: number,
  signal: AbortSignal,
): Promise<T | undefined> {
  while (!signal.aborted && Date.now() < deadline) {
    const v = get();
    if (v !== undefined) return v;
    await sleep(200, signal);
  }
  return undefined;
}

/** Prints the trainer stand-in's own events (its stdout, as container logs), once each. */
/** How the narration names the pod's containers (manifests.ts adds Spillway's two). */
const ROLE: Record<string, string> = {
  [RESTORE_CONTAINER]: "restore (init)",
  [AGENT_CONTAINER]: "checkpoint agent (sidecar)",
  trainer: "trainer",
};

class TrainerNarrator {
  constructor(
    private readonly narrator: Narrator,
    private readonly namespace: string,
    private readonly run: string,
  ) {}

  private events(cluster: SimulatedCluster) {
    return cluster
      .containerRuns(this.namespace)
      .filter((c) => c.pod.startsWith(`${this.run}-`))
      .map((c) => ({
        uid: c.uid,
        container: c.container,
        events: parseWorkloadEvents(c.logs),
        exit: c.exit,
      }));
  }

  tell(cluster: SimulatedCluster, provider: string): void {
    for (const { uid, container, events, exit } of this.events(cluster)) {
      const who = ROLE[container] ?? container;
      events.forEach((e, i) => {
        const line = describe(e);
        if (line)
          this.narrator.note(`${uid}/${container}/${i}`, `${this.run}: ${who} on ${provider}: ${line}`);
      });
      if (exit && exit.exitCode !== 0)
        this.narrator.note(
          `${uid}/${container}/exit`,
          `${this.run}: ${who} on ${provider} exited ${exit.exitCode}${exit.signal ? ` (${exit.signal})` : ""}`,
        );
    }
  }

  lastCommitted(cluster: SimulatedCluster): number | undefined {
    const steps = this.events(cluster).flatMap((r) =>
      r.events.filter((e) => e.event === "committed").map((e) => e.step ?? 0),
    );
    return steps.length > 0 ? Math.max(...steps) : undefined;
  }

  summary(cluster: SimulatedCluster): { resumedFrom?: number; finalStep?: number } {
    const events = this.events(cluster).flatMap((r) => r.events);
    const restored = events.find((e) => e.event === "restored");
    const finished = events.find((e) => e.event === "finished");
    return {
      ...(restored?.step !== undefined ? { resumedFrom: restored.step } : {}),
      ...(finished?.step !== undefined ? { finalStep: finished.step } : {}),
    };
  }
}

function describe(
  e: { event: string; step?: number; resumedFrom?: number } & Record<string, unknown>,
): string | undefined {
  const kib = (n: unknown) => `${Math.round(Number(n ?? 0) / 1024)} KiB`;
  switch (e.event) {
    case "fresh":
      return "no committed checkpoint, starting at step 1";
    case "restored":
      return `restored checkpoint step ${e.step} (every file verified), training on from step ${(e.step ?? 0) + 1}`;
    case "committed":
      return `step ${e.step} committed (${kib(e.bytesSent)} uploaded)`;
    case "finished":
      return `finished at step ${e.step}${e.resumedFrom !== undefined ? ` (resumed from ${e.resumedFrom})` : ""}`;
    default:
      return undefined;
  }
}
