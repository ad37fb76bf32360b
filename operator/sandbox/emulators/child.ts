/**
 * A server run as a child process (the storage emulators): started on a fixed port, waited
 * for until it answers HTTP, stopped with SIGTERM then SIGKILL, and restartable on the same
 * port and data directory (chaos tests kill and restart emulators mid-sync).
 *
 * No child may outlive the sandbox. Two mechanisms, because each covers what the other cannot:
 * - the child runs in its own process group (`detached`), and `stop()` / the parent's `exit`
 *   handler signal the whole group, so anything the child forked goes too;
 * - a watchdog preloaded into the child (`--import data:…`) polls the parent pid and exits the
 *   child when the parent is gone — the only way to clean up after the parent is SIGKILLed,
 *   since no handler runs then.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { request } from "node:http";
import { createServer } from "node:net";

const WATCHDOG = [
  "const parent = Number(process.env.SPILLWAY_WATCHDOG_PARENT);",
  "if (parent > 1) {",
  "  const t = setInterval(() => {",
  "    try { process.kill(parent, 0); } catch { process.kill(process.pid, 'SIGKILL'); }",
  "  }, 250);",
  "  t.unref();",
  "}",
].join("\n");
const WATCHDOG_IMPORT = `data:text/javascript,${encodeURIComponent(WATCHDOG)}`;

/** Every child still running, so the parent's exit handler can kill them synchronously. */
const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const child of live) killGroup(child, "SIGKILL");
  });
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
}

/** A free TCP port on 127.0.0.1 (bound and released; the caller binds it right after). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Whether an HTTP server answers (any status) at host:port. */
export function answers(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host, port, path: "/", method: "GET", timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(true);
    });
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(false));
    req.end();
  });
}

export interface ChildServerOptions {
  /** Human name used in errors, e.g. "azurite". */
  name: string;
  /** The JavaScript entry point run with this process's Node binary. */
  script: string;
  /** Arguments; `port` is substituted where the function is called. */
  args: (port: number) => string[];
  host: string;
  port: number;
  startTimeoutMs?: number;
  stopTimeoutMs?: number;
}

export class ChildServer {
  private child: ChildProcess | undefined;
  private stderrTail = "";

  constructor(private readonly opts: ChildServerOptions) {}

  get port(): number {
    return this.opts.port;
  }

  /** The pid of the running child, if any. */
  get pid(): number | undefined {
    return this.running() ? this.child?.pid : undefined;
  }

  running(): boolean {
    const c = this.child;
    return !!c && c.exitCode === null && c.signalCode === null;
  }

  async start(): Promise<void> {
    if (this.running()) return;
    installExitHook();
    const { name, script, host, port } = this.opts;
    this.stderrTail = "";
    const child = spawn(process.execPath, ["--import", WATCHDOG_IMPORT, script, ...this.opts.args(port)], {
      detached: true,
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, SPILLWAY_WATCHDOG_PARENT: String(process.pid) },
    });
    this.child = child;
    live.add(child);
    child.once("exit", () => live.delete(child));
    child.stderr?.on("data", (d: Buffer) => {
      this.stderrTail = (this.stderrTail + d.toString("utf8")).slice(-2000);
    });

    const deadline = Date.now() + (this.opts.startTimeoutMs ?? 20000);
    while (Date.now() < deadline) {
      if (!this.running()) {
        throw new Error(
          `${name} exited during start (code ${child.exitCode ?? child.signalCode}): ${this.stderrTail.trim()}`,
        );
      }
      if (await answers(host, port, 500)) return;
      await sleep(100);
    }
    await this.stop();
    throw new Error(`${name} did not answer on ${host}:${port} within the start timeout`);
  }

  /** SIGTERM to the child's process group, SIGKILL after the timeout. Resolves once it exited. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || !this.running()) return;
    const exited = new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once("exit", () => resolve());
    });
    killGroup(child, "SIGTERM");
    const timer = setTimeout(() => killGroup(child, "SIGKILL"), this.opts.stopTimeoutMs ?? 3000);
    await exited;
    clearTimeout(timer);
    // A child that forked would leave its group behind; make sure nothing of it survives.
    killGroup(child, "SIGKILL");
    await waitPortFree(this.opts.host, this.opts.port);
  }

  /** Kills the child abruptly (SIGKILL), as a crash would. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || !this.running()) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    killGroup(child, "SIGKILL");
    await exited;
    await waitPortFree(this.opts.host, this.opts.port);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitPortFree(host: string, port: number, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!(await answers(host, port, 200))) return;
    await sleep(50);
  }
}
