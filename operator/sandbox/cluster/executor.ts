/**
 * The processes of the simulated kubelet: each `spillway` container of a pod runs as a child
 * process of the sandbox — the real Spillway CLI, started the way the sandbox itself runs
 * (TypeScript sources through tsx in a checkout, the compiled `dist/` when the sandbox runs
 * from it), with the container's resolved environment only (plus PATH and a HOME of its own).
 *
 * Lifecycles, as a kubelet's:
 * - `terminate(grace)`: SIGTERM, then SIGKILL once the grace period is over (pod deletion);
 * - `kill()`: SIGKILL at once (the node or the whole cluster is lost);
 * - `stop()` kills every process and waits for each to exit, then removes the pods'
 *   directories; a process-exit hook SIGKILLs whatever is left if the sandbox's own process
 *   ends without stopping (so no child outlives it).
 *
 * Each container's stdout and stderr are kept as its log (the newest 256 KiB), for
 * `SimulatedCluster.containerLogs` and the `onLog` callback.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { ProcessPlan } from "./containers.ts";

/** One line a container wrote. */
export interface ContainerLogLine {
  namespace: string;
  pod: string;
  container: string;
  stream: "stdout" | "stderr";
  line: string;
}

export interface ContainerExit {
  exitCode: number;
  /** The signal that ended it, when one did. */
  signal?: string;
  finishedAt: Date;
}

const LOG_TAIL_BYTES = 256 * 1024;
/** Containers of deleted pods whose logs and exits are still kept (as a node keeps dead containers' logs for a while). */
const RETIRED_KEPT = 64;

/** One container the kubelet ran (or runs): what `SimulatedCluster.containerRuns` reports. */
export interface ContainerRun {
  namespace: string;
  pod: string;
  uid: string;
  container: string;
  startedAt: Date;
  /** Absent while it runs. */
  exit?: ContainerExit;
  /** stdout and stderr, interleaved as written (the newest 256 KiB). */
  logs: string;
}

/** The node binary and the arguments before the CLI's own (`spillway …` → these + the rest). */
export function spillwayEntry(): { node: string; prefix: string[] } {
  const here = fileURLToPath(import.meta.url);
  // operator/sandbox/cluster/executor.{ts,js} → operator/cli/main.{ts,js}
  const cliDir = resolve(dirname(here), "..", "..", "cli");
  if (here.endsWith(".ts")) {
    const root = resolve(cliDir, "..", "..");
    return { node: process.execPath, prefix: [join(root, "bin", "run-ts.mjs"), join(cliDir, "main.ts")] };
  }
  return { node: process.execPath, prefix: [join(cliDir, "main.js")] };
}

/** Every child of every executor of this process, killed if the process exits without stopping them. */
const everyChild = new Set<ChildProcess>();
let exitHookInstalled = false;
function track(child: ChildProcess): void {
  everyChild.add(child);
  child.once("exit", () => everyChild.delete(child));
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const c of everyChild) c.kill("SIGKILL");
  });
}

const SIGNAL_NUMBERS: Record<string, number> = { SIGINT: 2, SIGKILL: 9, SIGTERM: 15, SIGHUP: 1, SIGABRT: 6 };

class ContainerProcess {
  exit: ContainerExit | undefined;
  /** When it first wrote a line (the sandbox's sign that a sidecar is up; see the kubelet). */
  firstOutputAt: Date | undefined;
  readonly startedAt = new Date();
  readonly exited: Promise<ContainerExit>;
  private log = "";

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
    onLine: (stream: "stdout" | "stderr", line: string) => void,
    onExit: () => void,
  ) {
    const first = () => {
      if (this.firstOutputAt) return;
      this.firstOutputAt = new Date();
      onExit();
    };
    for (const stream of ["stdout", "stderr"] as const) {
      let partial = "";
      child[stream]?.setEncoding("utf8");
      child[stream]?.on("data", (chunk: string) => {
        this.append(chunk);
        first();
        const lines = (partial + chunk).split("\n");
        partial = lines.pop() ?? "";
        for (const l of lines) onLine(stream, l);
      });
      child[stream]?.on("end", () => {
        if (partial) onLine(stream, partial);
      });
    }
    this.exited = new Promise((resolveExit) => {
      const done = (code: number | null, signal: NodeJS.Signals | null) => {
        if (this.exit) return;
        this.exit = {
          exitCode: code ?? 128 + (SIGNAL_NUMBERS[signal ?? ""] ?? 9),
          ...(signal ? { signal } : {}),
          finishedAt: new Date(),
        };
        resolveExit(this.exit);
        onExit();
      };
      // A process that could not be spawned (no such file) exits 128 like a failed exec.
      child.once("error", () => {
        if (child.exitCode === null && child.signalCode === null && child.pid === undefined) done(128, null);
      });
      child.once("exit", done);
    });
  }

  private append(chunk: string): void {
    this.log += chunk;
    if (this.log.length > LOG_TAIL_BYTES) this.log = this.log.slice(-LOG_TAIL_BYTES);
  }

  logs(): string {
    return this.log;
  }

  signal(sig: NodeJS.Signals): void {
    if (!this.exit && this.child.exitCode === null && this.child.signalCode === null) this.child.kill(sig);
  }
}

function runsOf(pod: PodProcesses): ContainerRun[] {
  return [...pod.containers.values()].map((c) => ({
    namespace: pod.namespace,
    pod: pod.name,
    uid: pod.uid,
    container: c.name,
    startedAt: c.startedAt,
    ...(c.exit ? { exit: c.exit } : {}),
    logs: c.logs(),
  }));
}

/** The running (and exited) containers of one pod. */
export class PodProcesses {
  readonly containers = new Map<string, ContainerProcess>();
  /**
   * Native sidecars (init containers with `restartPolicy: Always`): on termination they get
   * SIGTERM only once every other container has exited, as Kubernetes (1.29+) stops them
   * after the main containers, so a checkpoint agent drains what the trainer finished.
   */
  readonly sidecars = new Set<string>();
  /** Regular init containers (not in a `kubectl logs` default). */
  readonly inits = new Set<string>();
  private killTimer: NodeJS.Timeout | undefined;
  terminating = false;

  constructor(
    readonly uid: string,
    readonly namespace: string,
    readonly name: string,
    readonly dir: string,
  ) {}

  /** Whether every container started so far has exited. */
  get done(): boolean {
    return [...this.containers.values()].every((c) => c.exit !== undefined);
  }

  /** Whether every container that is not a sidecar has exited. */
  get mainsDone(): boolean {
    return [...this.containers.values()].every((c) => c.exit !== undefined || this.sidecars.has(c.name));
  }

  /**
   * SIGTERM now, SIGKILL after `graceSeconds` (a pod deletion). The sidecars get their
   * SIGTERM once the other containers have exited (within the same grace period). Repeats
   * are no-ops.
   */
  terminate(graceSeconds: number): void {
    if (this.terminating || this.done) return;
    this.terminating = true;
    for (const c of this.containers.values()) if (!this.sidecars.has(c.name)) c.signal("SIGTERM");
    this.killTimer = setTimeout(() => this.kill(), Math.max(0, graceSeconds) * 1000);
    this.killTimer.unref();
    this.terminateSidecarsWhenMainsExit();
  }

  private terminateSidecarsWhenMainsExit(): void {
    const mains = [...this.containers.values()].filter((c) => !this.sidecars.has(c.name));
    void Promise.all(mains.map((c) => c.exited)).then(() => {
      for (const c of this.containers.values()) if (this.sidecars.has(c.name)) c.signal("SIGTERM");
    });
  }

  /** SIGKILL every container now (a lost node or cluster). */
  kill(): void {
    clearTimeout(this.killTimer);
    for (const c of this.containers.values()) c.signal("SIGKILL");
  }

  async waitForExit(): Promise<void> {
    await Promise.all([...this.containers.values()].map((c) => c.exited));
    clearTimeout(this.killTimer);
  }
}

export interface ExecutorOptions {
  /** Cluster name, in the work directory's name. */
  name: string;
  /** Each line a container writes. */
  onLog?: (line: ContainerLogLine) => void;
  /** Called when a container exits (the kubelet then writes its status). */
  onExit: () => void;
}

export class Executor {
  private readonly pods = new Map<string, PodProcesses>();
  private readonly retired: ContainerRun[] = [];
  private root: string | undefined;
  private stopped = false;

  constructor(private readonly opts: ExecutorOptions) {}

  get(uid: string): PodProcesses | undefined {
    return this.pods.get(uid);
  }

  /** Uids of the pods with processes (running or exited, not yet forgotten). */
  uids(): string[] {
    return [...this.pods.keys()];
  }

  /** The pod's working directory (`<root>/<namespace>_<name>_<uid>`), created on first use. */
  async podDir(uid: string, namespace: string, name: string): Promise<string> {
    this.root ??= await mkdtemp(join(tmpdir(), `spillway-kubelet-${this.opts.name}-`));
    const dir = join(this.root, `${namespace}_${name}_${uid}`);
    mkdirSync(join(dir, "home"), { recursive: true });
    return dir;
  }

  /** Starts the pod's `spillway` containers at once (once; a repeat returns the running ones). */
  start(uid: string, namespace: string, name: string, dir: string, plans: ProcessPlan[]): PodProcesses {
    const existing = this.pods.get(uid);
    if (existing) return existing;
    const pod = this.open(uid, namespace, name, dir);
    for (const plan of plans) this.run(pod, plan);
    return pod;
  }

  /** The pod's process group, created empty on first use; containers are started with `run`. */
  open(uid: string, namespace: string, name: string, dir: string): PodProcesses {
    const existing = this.pods.get(uid);
    if (existing) return existing;
    if (this.stopped) throw new Error("the kubelet is stopped");
    const pod = new PodProcesses(uid, namespace, name, dir);
    this.pods.set(uid, pod);
    return pod;
  }

  /** Starts one container of the pod (once per name: init containers run in order, one by one). */
  run(pod: PodProcesses, plan: ProcessPlan, role: "main" | "init" | "sidecar" = "main"): void {
    if (pod.containers.has(plan.container)) return;
    if (this.stopped) throw new Error("the kubelet is stopped");
    if (role === "sidecar") pod.sidecars.add(plan.container);
    if (role === "init") pod.inits.add(plan.container);
    const { node, prefix } = spillwayEntry();
    for (const d of plan.dirs) mkdirSync(d, { recursive: true });
    const child = spawn(node, [...prefix, ...plan.args], {
      cwd: plan.cwd && existsSync(plan.cwd) ? plan.cwd : pod.dir,
      // A container sees its own environment, not the sandbox's (no host credentials leak in).
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: join(pod.dir, "home"), ...plan.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    track(child);
    const proc = new ContainerProcess(
      plan.container,
      child,
      (stream, line) =>
        this.opts.onLog?.({
          namespace: pod.namespace,
          pod: pod.name,
          container: plan.container,
          stream,
          line,
        }),
      () => this.opts.onExit(),
    );
    pod.containers.set(plan.container, proc);
  }

  /** Forgets a pod whose processes have exited and removes its directory (the pod is gone). */
  async forget(uid: string): Promise<void> {
    const pod = this.pods.get(uid);
    if (!pod) return;
    pod.kill();
    await pod.waitForExit();
    this.pods.delete(uid);
    this.retire(pod);
    await rm(pod.dir, { recursive: true, force: true });
  }

  private retire(pod: PodProcesses): void {
    this.retired.push(...runsOf(pod));
    this.retired.splice(0, Math.max(0, this.retired.length - RETIRED_KEPT));
  }

  /** The containers run so far: those of deleted pods (the newest 64), then the current ones. */
  history(): ContainerRun[] {
    return [...this.retired, ...[...this.pods.values()].flatMap(runsOf)];
  }

  logs(namespace: string, name: string, container?: string): string | undefined {
    for (const pod of this.pods.values()) {
      if (pod.namespace !== namespace || pod.name !== name) continue;
      // Without a name: the first main container, as `kubectl logs` picks.
      const all = [...pod.containers.values()];
      const c = container
        ? pod.containers.get(container)
        : (all.find((x) => !pod.inits.has(x.name) && !pod.sidecars.has(x.name)) ?? all[0]);
      return c?.logs();
    }
    return undefined;
  }

  /** Pids of the live processes (tests check none is left). */
  pids(): number[] {
    const out: number[] = [];
    for (const pod of this.pods.values())
      for (const c of pod.containers.values()) if (!c.exit && c.child.pid) out.push(c.child.pid);
    return out;
  }

  /** SIGKILLs every process (the cluster is lost) and waits until each has exited. */
  async killAll(): Promise<void> {
    for (const pod of this.pods.values()) pod.kill();
    await Promise.all([...this.pods.values()].map((p) => p.waitForExit()));
  }

  /** Kills everything, waits, and removes the work directory. No process is left when it resolves. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.killAll();
    for (const pod of this.pods.values()) this.retire(pod);
    this.pods.clear();
    if (this.root) rmSync(this.root, { recursive: true, force: true });
  }
}
