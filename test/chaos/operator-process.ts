/**
 * Spawning and SIGKILLing the operator as its own OS process (test/chaos/operator-main.ts).
 * The entry and its packages are bundled once with esbuild into one file, and V8's compile
 * cache is kept between starts, so a restart costs a Node start and the informers' sync
 * rather than a TypeScript compile and the resolution of a few thousand module files (on a
 * loaded machine that was most of a restart's time).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ChaosOperatorConfig } from "./operator-main.ts";

const ROOT = join(import.meta.dirname, "..", "..");

/** Bundles the entry next to node_modules (so its bare imports resolve); returns its path. */
export async function bundleOperator(): Promise<string> {
  const { build, stop } = await import("esbuild");
  const dir = join(ROOT, "node_modules", ".cache", "spillway-chaos");
  mkdirSync(dir, { recursive: true });
  const outfile = join(dir, `operator-${process.pid}.mjs`);
  await build({
    entryPoints: [join(ROOT, "test", "chaos", "operator-main.ts")],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node22",
    outfile,
    logLevel: "warning",
    // CommonJS packages inside an ESM bundle still call require().
    banner: {
      js: "import { createRequire as __chaosRequire } from 'node:module'; const require = __chaosRequire(import.meta.url);",
    },
  });
  // esbuild keeps a service process for further builds; let the test runner exit.
  await stop();
  return outfile;
}

export function writeConfig(dir: string, cfg: ChaosOperatorConfig): string {
  const file = join(dir, "chaos-operator.json");
  writeFileSync(file, JSON.stringify(cfg));
  return file;
}

/** One operator process. `lines` keeps its JSON log lines (bounded). */
export class ChaosOperator {
  readonly lines: string[] = [];
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  readonly started: Promise<void>;

  constructor(entry: string, configFile: string) {
    this.child = spawn(process.execPath, [entry, configFile], {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        ...process.env,
        NODE_COMPILE_CACHE: join(ROOT, "node_modules", ".cache", "spillway-chaos", "v8"),
      },
    });
    this.exited = new Promise((resolve) => this.child.once("exit", (code) => resolve(code)));
    let buf = "";
    let onStarted: () => void = () => {};
    this.started = new Promise<void>((resolve, reject) => {
      onStarted = resolve;
      void this.exited.then((code) =>
        reject(new Error(`operator exited (${code}) before starting: ${this.lines.slice(-5).join("\n")}`)),
      );
    });
    // A started promise nobody awaits must not become an unhandled rejection after a kill.
    this.started.catch(() => undefined);
    const collect = (d: Buffer) => {
      buf += d.toString("utf8");
      const parts = buf.split("\n");
      buf = parts.pop() ?? "";
      for (const l of parts) {
        if (!l.trim()) continue;
        if (this.lines.length < 20_000) this.lines.push(l);
        if (l.includes('"operator started"')) onStarted();
      }
    };
    this.child.stdout?.on("data", collect);
    this.child.stderr?.on("data", collect);
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** The "operator started" line's timings: `loaded 1200 ms, provisioner 300 ms, manager 900 ms`. */
  startTimings(): string {
    const line = this.lines.find((l) => l.includes('"operator started"'));
    if (!line) return "";
    const t = JSON.parse(line) as Record<string, number>;
    return `loaded ${t.loadedMs} ms, provisioner ${t.provisionerOpenMs} ms, manager ${t.managerStartMs} ms`;
  }

  has(message: string): boolean {
    return this.lines.some((l) => l.includes(`"message":"${message}"`));
  }

  /** SIGKILL (default) and wait for the process to be gone. */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    await this.exited;
  }
}
