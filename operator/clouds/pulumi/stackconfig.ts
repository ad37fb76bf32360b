/**
 * What a ProvisionRequest becomes for Pulumi: the stack configuration (plain and secret
 * values, keys qualified the way the programs in `infra/` read them), the operator's copy of
 * the program's project file, and the mapping from stack outputs back to ProvisionOutputs.
 * Pure functions, so the shape of what reaches the engine is tested without a CLI.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import type { ProvisionOutputs, ProvisionRequest } from "../../ports/provisioner.ts";
import { ProvisionError } from "../../ports/provisioner.ts";

/** `ConfigMap` of the Automation API: key → value, marked secret or not. */
export type StackConfig = Record<string, { value: string; secret: boolean }>;

export interface ProgramProject {
  /** The Pulumi project name, e.g. `spillway-oci` (the namespace of unqualified keys). */
  name: string;
  /** The program directory, `infra/<program>`. */
  dir: string;
  /** The parsed `Pulumi.yaml`. */
  file: Record<string, unknown>;
}

/** Finds `infra/` by walking up from this module (source tree, or dist/ beside it). */
export function findInfraDir(from: string = dirname(fileURLToPath(import.meta.url))): string {
  let dir = from;
  for (let i = 0; i < 8; i++) {
    if (existsSync(join(dir, "infra", "oci", "Pulumi.yaml"))) return join(dir, "infra");
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  throw new Error(`infra/ not found above ${from}; set the provisioner's infraDir`);
}

export function loadProgramProject(infraDir: string, program: ProvisionRequest["program"]): ProgramProject {
  const dir = join(infraDir, program);
  const file = parse(readFileSync(join(dir, "Pulumi.yaml"), "utf8")) as Record<string, unknown>;
  if (typeof file.name !== "string") throw new Error(`${join(dir, "Pulumi.yaml")} has no project name`);
  return { name: file.name, dir, file };
}

/**
 * The project file the operator writes into a stack's own workspace directory: the program's
 * `Pulumi.yaml` with `main` pointing back at `infra/<program>` (relative: Pulumi joins `main`
 * to the project directory) and tsx loaded by absolute URL (the program process starts in the
 * workspace, which has no node_modules). The program's source tree stays read-only: stack
 * files (`Pulumi.<stack>.yaml`) land in the workspace, never in `infra/`.
 */
export function operatorProjectFile(project: ProgramProject, workDir: string): Record<string, unknown> {
  const main = typeof project.file.main === "string" ? project.file.main : "index.ts";
  const mainPath = relative(workDir, join(project.dir, main)).split(sep).join("/");
  const runtime = project.file.runtime;
  let runtimeOut: unknown = runtime;
  if (runtime && typeof runtime === "object") {
    const r = runtime as { name?: string; options?: Record<string, unknown> };
    const nodeargs = r.options?.nodeargs;
    if (typeof nodeargs === "string" && /--import\s+tsx\b/.test(nodeargs)) {
      runtimeOut = {
        ...r,
        options: {
          ...r.options,
          nodeargs: nodeargs.replace(/--import\s+tsx\b/, `--import ${tsxLoaderUrl()}`),
        },
      };
    }
  }
  // `config` declarations stay: Pulumi then refuses a stack missing a required key up front.
  return { ...project.file, runtime: runtimeOut, main: mainPath };
}

function tsxLoaderUrl(): string {
  try {
    return import.meta.resolve("tsx");
  } catch {
    return "tsx";
  }
}

/** Keys without a namespace belong to the program's project (what `pulumi config set` does). */
function qualify(project: string, key: string): string {
  return key.includes(":") ? key : `${project}:${key}`;
}

/**
 * Stack configuration for a request. The request's own config comes first; the keys the
 * operator owns (region, node pools) are set last so a CloudProvider cannot contradict the
 * ProvisionedCluster it describes.
 */
export function stackConfigFor(req: ProvisionRequest, project: string): StackConfig {
  const out: StackConfig = {};
  for (const [k, v] of Object.entries(req.config)) out[qualify(project, k)] = { value: v, secret: false };
  for (const [k, v] of Object.entries(req.secretConfig))
    out[qualify(project, k)] = { value: v, secret: true };
  if (req.program === "oci") {
    out["oci:region"] = { value: req.region, secret: false };
  } else {
    out["azure-native:location"] = { value: req.region, secret: false };
    out[`${project}:location`] = { value: req.region, secret: false };
  }
  out[`${project}:nodePools`] = {
    value: JSON.stringify(
      req.nodePools.map((p) => ({
        name: p.name,
        shape: p.shape,
        nodes: p.nodes,
        gpusPerNode: p.gpusPerNode,
        gpuType: p.gpuType,
      })),
    ),
    secret: false,
  };
  // The single-pool keys would be ignored next to nodePools; dropping them avoids a reader of
  // the stack file believing they count.
  for (const k of ["gpuShape", "gpuNodeCount", "gpuPoolName"]) delete out[`${project}:${k}`];
  return out;
}

/** Every value that must never appear in a message: secret config and the passphrase. */
export function secretValues(req: ProvisionRequest, passphrase: string): string[] {
  return [...Object.values(req.secretConfig), passphrase].filter((v) => v !== "");
}

export type StackOutputs = Record<string, { value: unknown; secret: boolean }>;

/** Stack outputs → ProvisionOutputs. The kubeconfig must be a secret output. */
export function provisionOutputsFrom(outputs: StackOutputs, req: ProvisionRequest): ProvisionOutputs {
  const str = (k: string): string | undefined => {
    const v = outputs[k]?.value;
    return typeof v === "string" && v !== "" ? v : undefined;
  };
  const clusterId = str("clusterId");
  const kubeconfig = str("kubeconfig");
  if (!clusterId || !kubeconfig) {
    const missing = [clusterId ? "" : "clusterId", kubeconfig ? "" : "kubeconfig"].filter(Boolean);
    throw new ProvisionError(
      "ProviderError",
      `stack ${req.stackName} has no ${missing.join(" or ")} output (program infra/${req.program})`,
      false,
    );
  }
  if (outputs.kubeconfig && !outputs.kubeconfig.secret) {
    // A plain kubeconfig output would be printed by `pulumi stack output`: refuse to use a
    // program that leaks it rather than pass it on silently.
    throw new ProvisionError(
      "ProviderError",
      `stack ${req.stackName}: the kubeconfig output is not marked secret (program infra/${req.program})`,
      false,
    );
  }
  const bucket = str("bucket");
  const s3Endpoint = str("s3Endpoint");
  return {
    clusterId,
    kubeconfig,
    region: str("region") ?? req.region,
    ...(bucket ? { bucket } : {}),
    ...(s3Endpoint ? { s3Endpoint } : {}),
  };
}

/** Absolute, normalised, and inside `root` (stack names are validated, this is a second net). */
export function pathInside(root: string, ...parts: string[]): string {
  const p = resolve(root, ...parts);
  if (p !== resolve(root) && !p.startsWith(resolve(root) + sep)) throw new Error(`path escapes ${root}`);
  return p;
}
