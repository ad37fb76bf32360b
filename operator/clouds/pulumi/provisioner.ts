/**
 * The real Provisioner: the Pulumi Automation API over the programs in `infra/`.
 *
 * - One stack per ProvisionedCluster (`req.stackName`), selected or created; names of the
 *   cloud resources derive from it, so `up` is idempotent and a re-created workspace finds
 *   its resources.
 * - The program runs as a *local* program: each stack gets its own workspace directory under
 *   the state dir with a copy of `infra/<program>/Pulumi.yaml` whose `main` points back at
 *   the program. The program runs in Pulumi's own Node process (the same code and entry
 *   point a platform team runs with `pulumi up`), the operator never loads the 100+ MB
 *   provider SDKs, and `destroy` does not need the program at all.
 * - State in a file backend under the state dir by default (`--pulumi-state-dir`), or any
 *   backend URL (s3://, azblob://); secrets encrypted by the passphrase provider.
 * - Every failure becomes a classified `ProvisionError` whose message is scrubbed of secret
 *   values; nothing here logs config values, command lines or outputs.
 *
 * The only seam is the CLI binary (`pulumiCommand`): tests point it at a fake `pulumi` that
 * speaks the CLI's protocol, so this file runs unchanged in tests.
 */
import { chmodSync, existsSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import * as auto from "@pulumi/pulumi/automation/index.js";
import { stringify } from "yaml";
import type { CloudProvider } from "../../api/v1alpha1/index.ts";
import type {
  Provisioner,
  ProvisionOutputs,
  ProvisionProgress,
  ProvisionRequest,
} from "../../ports/provisioner.ts";
import { ProvisionError } from "../../ports/provisioner.ts";
import type { Logger } from "../../runtime/logging.ts";
import { classifyPulumiOutput } from "./classify.ts";
import { ProgressTracker } from "./progress.ts";
import {
  findInfraDir,
  loadProgramProject,
  operatorProjectFile,
  type ProgramProject,
  pathInside,
  provisionOutputsFrom,
  type StackConfig,
  secretValues,
  stackConfigFor,
} from "./stackconfig.ts";

export interface PulumiProvisionerOptions {
  /** Holds `workspaces/` (one per stack), `home/` (PULUMI_HOME) and, by default, `backend/`. */
  stateDir: string;
  /** State backend URL; default `file://<stateDir>/backend`. */
  backendUrl?: string;
  /** Passphrase of the passphrase secrets provider (read by the caller from a Secret). */
  secretsPassphrase: string;
  /** PULUMI_HOME (plugins, credentials); default `<stateDir>/home`. */
  pulumiHome?: string;
  /** Root of the programs (`infra/`); default found by walking up from this module. */
  infraDir?: string;
  /** The Pulumi CLI; default the `pulumi` on PATH. */
  pulumiCommand?: auto.PulumiCommand;
  /** Extra environment for the CLI and the program (e.g. cloud credentials by env var). */
  env?: Record<string, string>;
  /** Progress and outcomes (never values). */
  log?: Logger;
}

type Operation = "up" | "destroy" | "outputs" | "cancel";

export class PulumiProvisioner implements Provisioner {
  private readonly infraDir: string;
  private readonly backendUrl: string;
  private readonly pulumiHome: string;
  private readonly projects = new Map<string, ProgramProject>();
  /** Stacks with an operation running in this process: `cancel` must not break a live lock. */
  private readonly running = new Map<string, Operation>();
  private command: Promise<auto.PulumiCommand> | undefined;

  constructor(private readonly opts: PulumiProvisionerOptions) {
    if (!opts.secretsPassphrase) throw new Error("PulumiProvisioner needs a secrets passphrase");
    this.infraDir = opts.infraDir ?? findInfraDir();
    this.backendUrl = opts.backendUrl ?? `file://${join(opts.stateDir, "backend")}`;
    if (this.backendUrl.startsWith("file://")) {
      mkdirSync(this.backendUrl.slice("file://".length), { recursive: true, mode: 0o700 });
    }
    this.pulumiHome = opts.pulumiHome ?? join(opts.stateDir, "home");
    mkdirSync(this.pulumiHome, { recursive: true, mode: 0o700 });
  }

  async up(
    req: ProvisionRequest,
    onProgress?: (p: ProvisionProgress) => void,
    signal?: AbortSignal,
  ): Promise<ProvisionOutputs> {
    return this.exclusive(req, "up", async () => {
      const stack = await this.stack(req, "createOrSelect");
      await this.configure(stack, req);
      const tracker = new ProgressTracker("up");
      const output = new BoundedText();
      try {
        const result = await stack.up({
          // Reconciles the state with the cloud first: after a killed run (lock cleared by
          // `cancel`) the state may lag behind what was created.
          refresh: true,
          color: "never",
          onOutput: (s) => output.add(s),
          onEvent: (e) => this.progress(tracker, e, onProgress),
          ...(signal ? { signal } : {}),
        });
        return provisionOutputsFrom(result.outputs, req);
      } catch (e) {
        if (e instanceof ProvisionError) throw e;
        if (signal?.aborted) throw new ProvisionError("ProviderError", `up ${req.stackName}: canceled`, true);
        throw this.classify(e, "up", req, [...tracker.errors, output.text]);
      }
    });
  }

  async destroy(req: ProvisionRequest, onProgress?: (p: ProvisionProgress) => void): Promise<void> {
    return this.exclusive(req, "destroy", async () => {
      const stack = await this.stack(req, "select");
      if (!stack) return; // never created, or already destroyed and removed
      await this.configure(stack, req, false);
      const tracker = new ProgressTracker("destroy");
      const output = new BoundedText();
      try {
        await stack.destroy({
          refresh: true,
          color: "never",
          onOutput: (s) => output.add(s),
          onEvent: (e) => this.progress(tracker, e, onProgress),
        });
        // Only an empty stack is removed (the CLI refuses otherwise): its history goes with
        // it, and `outputs()` then answers "does not exist".
        await stack.workspace.removeStack(req.stackName);
      } catch (e) {
        throw this.classify(e, "destroy", req, [...tracker.errors, output.text]);
      }
      rmSync(this.workDir(req), { recursive: true, force: true });
    });
  }

  async cancel(req: ProvisionRequest): Promise<void> {
    // A lock held by an operation of this very process is live, not stale.
    if (this.running.has(req.stackName)) return;
    const stack = await this.stack(req, "select");
    if (!stack) return;
    try {
      await stack.cancel();
    } catch (e) {
      // "no update in progress" is what a clean stack answers: nothing to clear.
      const text = e instanceof Error ? e.message : String(e);
      if (/no (update|lock)s? (is )?(currently )?(in progress|found)|not currently locked/i.test(text))
        return;
      throw this.classify(e, "cancel", req, []);
    }
  }

  async outputs(req: ProvisionRequest): Promise<ProvisionOutputs | undefined> {
    const stack = await this.stack(req, "select");
    if (!stack) return undefined;
    let outs: auto.OutputMap;
    try {
      outs = await stack.outputs();
    } catch (e) {
      throw this.classify(e, "outputs", req, []);
    }
    // A stack whose first `up` never finished has no outputs yet.
    if (!outs.clusterId && !outs.kubeconfig) return undefined;
    return provisionOutputsFrom(outs, req);
  }

  // --- workspace and stack ---

  private async stack(req: ProvisionRequest, mode: "select"): Promise<auto.Stack | undefined>;
  private async stack(req: ProvisionRequest, mode: "createOrSelect"): Promise<auto.Stack>;
  private async stack(
    req: ProvisionRequest,
    mode: "select" | "createOrSelect",
  ): Promise<auto.Stack | undefined> {
    let ws: auto.LocalWorkspace;
    try {
      ws = await this.workspace(req);
    } catch (e) {
      throw this.classify(e, "workspace", req, []);
    }
    try {
      return mode === "select"
        ? await auto.Stack.select(req.stackName, ws)
        : await auto.Stack.createOrSelect(req.stackName, ws);
    } catch (e) {
      if (mode === "select" && e instanceof auto.StackNotFoundError) {
        // Asking about a stack must not leave an empty workspace behind.
        rmSync(this.workDir(req), { recursive: true, force: true });
        return undefined;
      }
      throw this.classify(e, `select stack ${req.stackName}`, req, []);
    }
  }

  private workDir(req: ProvisionRequest): string {
    return pathInside(this.opts.stateDir, "workspaces", req.program, req.stackName);
  }

  private project(program: ProvisionRequest["program"]): ProgramProject {
    let p = this.projects.get(program);
    if (!p) {
      p = loadProgramProject(this.infraDir, program);
      this.projects.set(program, p);
    }
    return p;
  }

  private async workspace(req: ProvisionRequest): Promise<auto.LocalWorkspace> {
    const workDir = this.workDir(req);
    mkdirSync(workDir, { recursive: true, mode: 0o700 });
    // The stack file written here holds secrets encrypted with the passphrase; keep the
    // directory private anyway.
    chmodSync(workDir, 0o700);
    writeFileSync(
      join(workDir, "Pulumi.yaml"),
      stringify(operatorProjectFile(this.project(req.program), workDir)),
    );
    linkNodeModules(workDir, this.infraDir);
    this.command ??= this.opts.pulumiCommand
      ? Promise.resolve(this.opts.pulumiCommand)
      : auto.PulumiCommand.get().catch((e: unknown) => {
          // Not cached: a CLI installed (or a PATH fixed) later is found on the next call.
          this.command = undefined;
          throw e;
        });
    return auto.LocalWorkspace.create({
      workDir,
      pulumiHome: this.pulumiHome,
      pulumiCommand: await this.command,
      secretsProvider: "passphrase",
      envVars: {
        ...this.opts.env,
        PULUMI_BACKEND_URL: this.backendUrl,
        PULUMI_CONFIG_PASSPHRASE: this.opts.secretsPassphrase,
        PULUMI_SKIP_UPDATE_CHECK: "true",
        PULUMI_DIY_BACKEND_NO_LEGACY_WARNING: "true",
      },
    });
  }

  /**
   * Writes the stack configuration and removes keys a previous `up` set that the request no
   * longer has (the stack file outlives requests). Secret values go to the CLI as arguments
   * of `config set-all --secret`, the Automation API's only way; they never reach a message.
   */
  private async configure(stack: auto.Stack, req: ProvisionRequest, dropStale = true): Promise<void> {
    const desired: StackConfig = stackConfigFor(req, this.project(req.program).name);
    try {
      await stack.setAllConfig(desired);
      // destroy needs only the provider's credentials: it keeps what the last up set.
      if (!dropStale) return;
      // The keys are read from the stack file (no CLI round trip, no secrets decrypted).
      const settings = await stack.workspace.stackSettings(req.stackName);
      const stale = Object.keys(settings.config ?? {}).filter((k) => !(k in desired));
      if (stale.length > 0) await stack.removeAllConfig(stale);
    } catch (e) {
      throw this.classify(e, "config", req, []);
    }
  }

  private progress(
    tracker: ProgressTracker,
    e: auto.EngineEvent,
    onProgress: ((p: ProvisionProgress) => void) | undefined,
  ): void {
    const p = tracker.onEvent(e);
    if (!p) return;
    try {
      onProgress?.(p);
    } catch {
      // A failing progress sink must not fail the operation.
    }
  }

  private classify(e: unknown, operation: string, req: ProvisionRequest, extra: string[]): ProvisionError {
    if (e instanceof ProvisionError) return e;
    const locked = e instanceof auto.ConcurrentUpdateError;
    const text = [e instanceof Error ? e.message : String(e), ...extra].join("\n");
    const err = classifyPulumiOutput(
      text,
      `${operation} ${req.stackName}`,
      secretValues(req, this.opts.secretsPassphrase),
    );
    const out =
      locked && err.reason !== "StackLocked" ? new ProvisionError("StackLocked", err.message, true) : err;
    this.opts.log?.warn("pulumi operation failed", {
      stack: req.stackName,
      operation,
      reason: out.reason,
      retryable: out.retryable,
      message: out.message,
    });
    return out;
  }

  /** One operation per stack at a time in this process; a second caller waits its turn. */
  private async exclusive<T>(req: ProvisionRequest, op: Operation, fn: () => Promise<T>): Promise<T> {
    while (this.running.has(req.stackName)) await this.turn(req.stackName);
    this.running.set(req.stackName, op);
    try {
      return await fn();
    } finally {
      this.running.delete(req.stackName);
      for (const wake of this.waiters.get(req.stackName) ?? []) wake();
      this.waiters.delete(req.stackName);
    }
  }

  private readonly waiters = new Map<string, Array<() => void>>();

  private turn(stackName: string): Promise<void> {
    return new Promise((resolve) => {
      const list = this.waiters.get(stackName) ?? [];
      list.push(resolve);
      this.waiters.set(stackName, list);
    });
  }
}

/**
 * One provisioner per state backend: a CloudProvider's `spec.cluster.provision.backendUrl`
 * (azblob://, s3://, file://) selects its own; without one, the file backend under the state
 * dir. What `ManagerOptions.provisionerFor` wants. Backend credentials (e.g.
 * AZURE_STORAGE_ACCOUNT/AZURE_STORAGE_KEY, AWS_*) come from `base.env` or the environment.
 */
export function pulumiProvisionerFor(
  base: Omit<PulumiProvisionerOptions, "backendUrl">,
): (provider: CloudProvider) => PulumiProvisioner | undefined {
  const byBackend = new Map<string, PulumiProvisioner>();
  return (provider) => {
    const provision = provider.spec.cluster.provision;
    if (!provision) return undefined;
    const url = provision.backendUrl ?? "";
    let p = byBackend.get(url);
    if (!p) {
      p = new PulumiProvisioner({ ...base, ...(url ? { backendUrl: url } : {}) });
      byBackend.set(url, p);
    }
    return p;
  };
}

/**
 * Pulumi's Node language host looks for `@pulumi/pulumi` from the program's directory; the
 * program lives in `infra/`, but should a CLI version resolve it from the project (workspace)
 * directory instead, a `node_modules` link there finds the same installation.
 */
function linkNodeModules(workDir: string, infraDir: string): void {
  const target = join(dirname(infraDir), "node_modules");
  const link = join(workDir, "node_modules");
  if (!existsSync(target) || existsSync(link)) return;
  try {
    symlinkSync(target, link, "dir");
  } catch {
    // Best effort: the main path already reaches the program and its node_modules.
  }
}

/** The tail of what the CLI printed (the diagnostics come last), bounded in memory. */
class BoundedText {
  private chunks: string[] = [];
  private size = 0;

  constructor(private readonly max = 64 * 1024) {}

  add(s: string): void {
    this.chunks.push(s);
    this.size += s.length;
    while (this.size > this.max && this.chunks.length > 1) this.size -= this.chunks.shift()!.length;
  }

  get text(): string {
    return this.chunks.join("");
  }
}
