/**
 * What the simulated kubelet needs to run a container of the Spillway image for real: which
 * containers it runs (`command[0] === "spillway"`), their environment resolved the way the
 * kubelet resolves it, `$(VAR)` references expanded, and container paths mapped to host
 * directories. Pure functions over the pod spec plus a lookup of Secrets and ConfigMaps, so
 * the rules are testable without processes.
 *
 * Kubernetes semantics kept:
 * - `envFrom` first (in order, later sources win), then `env` (wins over `envFrom`); names
 *   that are not valid environment variable names are skipped, as the kubelet does.
 * - `value` may reference variables defined before it with `$(NAME)`; `$$` is a literal `$`;
 *   an undefined reference stays as written. `command` and `args` are expanded the same way
 *   against the whole environment.
 * - `valueFrom.secretKeyRef` / `configMapKeyRef` and `envFrom.secretRef` / `configMapRef`
 *   are read from the pod's own cluster; a missing object or key (not `optional`) is a
 *   `ContainerConfigError` with the kubelet's message, and the container waits in
 *   `CreateContainerConfigError` until it appears.
 * - `valueFrom.fieldRef`: metadata.name, namespace, uid, labels['…'], annotations['…'],
 *   spec.nodeName, spec.serviceAccountName, status.hostIP, status.podIP.
 *
 * Sandbox-only mapping (there is no container filesystem): every volume of the pod is a host
 * directory `<podDir>/volumes/<name>`; a `volumeMount` maps its `mountPath` to that directory
 * (plus `subPath`). An env value or an argument that is a path under a `mountPath` (also as
 * `--flag=PATH` or `file://PATH`) is rewritten to the host path, so `SPILLWAY_CHECKPOINT_DIR=
 * /checkpoints` reaches the process as `<podDir>/volumes/checkpoints`. A mount at `/` is not
 * mapped (it would rewrite every path). Volume contents are not populated from their source
 * (a `secret` volume is an empty directory); use env for credentials.
 */
import type { V1Container, V1EnvVar, V1Pod } from "@kubernetes/client-node";

/** A container of the Spillway image: its command is the `spillway` CLI. */
export const SPILLWAY_COMMAND = "spillway";

export function isSpillwayContainer(c: V1Container): boolean {
  return c.command?.[0] === SPILLWAY_COMMAND;
}

/**
 * Whether the kubelet runs this pod's containers as processes: a main container is `spillway`.
 * Spillway's init containers beside a simulated trainer are simulated with it (see kubelet.ts).
 */
export function isExecutedPod(p: V1Pod): boolean {
  return (p.spec?.containers ?? []).some(isSpillwayContainer);
}

/** The kubelet's CreateContainerConfigError: the container cannot be configured (yet). */
export class ContainerConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ContainerConfigError";
  }
}

/** Reads a Secret's or ConfigMap's data (decoded) in the pod's namespace; undefined when absent. */
export interface ConfigSource {
  secret(namespace: string, name: string): Promise<Record<string, string> | undefined>;
  configMap(namespace: string, name: string): Promise<Record<string, string> | undefined>;
}

const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;

/**
 * Kubernetes' `$(VAR)` expansion (k8s.io/kubernetes third_party/forked/golang/expansion):
 * `$$` → `$`, `$(NAME)` → its value when defined, else left as written.
 */
export function expandVars(input: string, lookup: (name: string) => string | undefined): string {
  let out = "";
  for (let i = 0; i < input.length; i++) {
    const ch = input[i];
    if (ch === "$" && i + 1 < input.length) {
      const next = input[i + 1];
      if (next === "$") {
        out += "$";
        i++;
        continue;
      }
      if (next === "(") {
        const close = input.indexOf(")", i + 2);
        if (close !== -1) {
          const name = input.slice(i + 2, close);
          out += lookup(name) ?? `$(${name})`;
          i = close;
          continue;
        }
      }
    }
    out += ch;
  }
  return out;
}

/** `metadata.labels['key']` → `key`; undefined for another shape. */
function subscript(path: string, field: "labels" | "annotations"): string | undefined {
  const m = new RegExp(`^metadata\\.${field}\\['(.+)'\\]$`).exec(path);
  return m?.[1];
}

/** The value of a downward-API `fieldRef` of a pod. */
export function fieldRefValue(pod: V1Pod, fieldPath: string): string {
  const meta = pod.metadata ?? {};
  switch (fieldPath) {
    case "metadata.name":
      return meta.name ?? "";
    case "metadata.namespace":
      return meta.namespace ?? "";
    case "metadata.uid":
      return meta.uid ?? "";
    case "spec.nodeName":
      return pod.spec?.nodeName ?? "";
    case "spec.serviceAccountName":
      return pod.spec?.serviceAccountName ?? "default";
    case "status.hostIP":
    case "status.podIP":
      return "127.0.0.1";
  }
  const label = subscript(fieldPath, "labels");
  if (label !== undefined) return meta.labels?.[label] ?? "";
  const annotation = subscript(fieldPath, "annotations");
  if (annotation !== undefined) return meta.annotations?.[annotation] ?? "";
  throw new ContainerConfigError(`unsupported fieldRef fieldPath ${fieldPath}`);
}

async function keyRef(
  kind: "Secret" | "ConfigMap",
  read: (ns: string, name: string) => Promise<Record<string, string> | undefined>,
  ns: string,
  ref: { name?: string; key: string; optional?: boolean },
): Promise<string | undefined> {
  const name = ref.name ?? "";
  const data = await read(ns, name);
  if (!data) {
    if (ref.optional) return undefined;
    throw new ContainerConfigError(`${kind === "Secret" ? "secret" : "configmap"} "${name}" not found`);
  }
  const v = data[ref.key];
  if (v === undefined && !ref.optional)
    throw new ContainerConfigError(`couldn't find key ${ref.key} in ${kind} ${ns}/${name}`);
  return v;
}

/** The container's environment as the kubelet hands it to the process (see the file comment). */
export async function resolveEnv(
  pod: V1Pod,
  container: V1Container,
  source: ConfigSource,
): Promise<Record<string, string>> {
  const ns = pod.metadata?.namespace ?? "default";
  const env: Record<string, string> = {};
  for (const from of container.envFrom ?? []) {
    const prefix = from.prefix ?? "";
    let data: Record<string, string> | undefined;
    if (from.secretRef) {
      data = await source.secret(ns, from.secretRef.name ?? "");
      if (!data && !from.secretRef.optional)
        throw new ContainerConfigError(`secret "${from.secretRef.name ?? ""}" not found`);
    } else if (from.configMapRef) {
      data = await source.configMap(ns, from.configMapRef.name ?? "");
      if (!data && !from.configMapRef.optional)
        throw new ContainerConfigError(`configmap "${from.configMapRef.name ?? ""}" not found`);
    }
    for (const [k, v] of Object.entries(data ?? {})) {
      if (ENV_NAME.test(prefix + k)) env[prefix + k] = v;
    }
  }
  const lookup = (name: string) => (Object.hasOwn(env, name) ? env[name] : undefined);
  for (const e of container.env ?? []) {
    const v = await envValue(pod, ns, e, source, lookup);
    if (v !== undefined) env[e.name] = v;
  }
  return env;
}

async function envValue(
  pod: V1Pod,
  ns: string,
  e: V1EnvVar,
  source: ConfigSource,
  lookup: (name: string) => string | undefined,
): Promise<string | undefined> {
  const from = e.valueFrom;
  if (!from) return expandVars(e.value ?? "", lookup);
  if (from.fieldRef) return fieldRefValue(pod, from.fieldRef.fieldPath);
  if (from.secretKeyRef) return keyRef("Secret", source.secret, ns, from.secretKeyRef);
  if (from.configMapKeyRef) return keyRef("ConfigMap", source.configMap, ns, from.configMapKeyRef);
  throw new ContainerConfigError(
    `env ${e.name}: only value, fieldRef, secretKeyRef and configMapKeyRef are supported`,
  );
}

/** Container path → host path, for one container of a pod (see the file comment). */
export class PathMap {
  /** Longest mount path first, so nested mounts win. */
  private readonly mounts: Array<{ mountPath: string; hostPath: string }>;

  constructor(mounts: Array<{ mountPath: string; hostPath: string }>) {
    this.mounts = mounts
      .map((m) => ({ mountPath: m.mountPath.replace(/\/+$/, ""), hostPath: m.hostPath }))
      .filter((m) => m.mountPath !== "")
      .sort((a, b) => b.mountPath.length - a.mountPath.length);
  }

  /** A container path under a mount → its host path; anything else unchanged. */
  path(p: string): string {
    for (const m of this.mounts) {
      if (p === m.mountPath) return m.hostPath;
      if (p.startsWith(`${m.mountPath}/`)) return m.hostPath + p.slice(m.mountPath.length);
    }
    return p;
  }

  /** A value that is a path, `file://PATH`, or `--flag=PATH` (argument), mapped. */
  value(v: string): string {
    if (v.startsWith("file://")) return `file://${this.path(v.slice("file://".length))}`;
    if (v.startsWith("/")) return this.path(v);
    const flag = /^(--?[^=\s]+=)(.*)$/s.exec(v);
    if (flag && flag[2] !== "" && (flag[2]!.startsWith("/") || flag[2]!.startsWith("file://")))
      return flag[1]! + this.value(flag[2]!);
    return v;
  }
}

/** The host directory of each volume of a pod, under `podDir`. */
export function volumeDirs(pod: V1Pod, podDir: string): Map<string, string> {
  const dirs = new Map<string, string>();
  for (const v of pod.spec?.volumes ?? []) dirs.set(v.name, `${podDir}/volumes/${v.name}`);
  return dirs;
}

/** The container's mounts as host paths; a mount of an undeclared volume is a config error. */
export function containerMounts(
  container: V1Container,
  volumes: Map<string, string>,
): Array<{ mountPath: string; hostPath: string }> {
  return (container.volumeMounts ?? []).map((m) => {
    const dir = volumes.get(m.name);
    if (dir === undefined) throw new ContainerConfigError(`unable to find volume "${m.name}" for the mount`);
    const sub = m.subPath ? `/${m.subPath.replace(/^\/+/, "")}` : "";
    if (sub.split("/").includes(".."))
      throw new ContainerConfigError(`subPath ${m.subPath} must not contain ..`);
    return { mountPath: m.mountPath, hostPath: dir + sub };
  });
}

/** What the kubelet runs for one container: the CLI arguments after `spillway`, env and cwd. */
export interface ProcessPlan {
  container: string;
  args: string[];
  env: Record<string, string>;
  /** Host directories to create before the start (the mounts' targets). */
  dirs: string[];
  cwd?: string;
}

/** The plan of one `spillway` container: env resolved and mapped, command and args expanded. */
export async function planContainer(
  pod: V1Pod,
  container: V1Container,
  podDir: string,
  source: ConfigSource,
): Promise<ProcessPlan> {
  const mounts = containerMounts(container, volumeDirs(pod, podDir));
  const paths = new PathMap(mounts);
  const raw = await resolveEnv(pod, container, source);
  const lookup = (name: string) => (Object.hasOwn(raw, name) ? raw[name] : undefined);
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw)) env[k] = paths.value(v);
  const words = [...(container.command ?? []).slice(1), ...(container.args ?? [])];
  const args = words.map((w) => paths.value(expandVars(w, lookup)));
  return {
    container: container.name,
    args,
    env,
    dirs: mounts.map((m) => m.hostPath),
    ...(container.workingDir ? { cwd: paths.path(container.workingDir) } : {}),
  };
}
