/**
 * The objects Spillway creates on a target cluster for one placement attempt of a run
 * (placement step 6, "Dispatch"): the run's namespace, a headless Service for rendezvous and
 * an Indexed Job with one pod per node. Pure functions: the same inputs always render the
 * same objects, so a retried dispatch is an idempotent create.
 */
import type { TrainingRun } from "../../api/v1alpha1/index.ts";

export const LABEL_RUN_UID = "spillway.dev/run-uid";
export const LABEL_RUN_NAME = "spillway.dev/run-name";
export const LABEL_RUN_NAMESPACE = "spillway.dev/run-namespace";
export const LABEL_ATTEMPT = "spillway.dev/attempt";
export const LABEL_MANAGED_BY = "app.kubernetes.io/managed-by";
/** Identifies the management cluster that owns remote objects (the collector only touches its own). */
export const LABEL_ORIGIN = "spillway.dev/origin";
export const MANAGED_BY = "spillway";

/**
 * The sandbox's all-in-one trainer stand-in: a container of the Spillway image running
 * `spillway checkpoint workload` (restore → checkpoint agent → trainer, one process; see
 * operator/sandbox/trainer/workload.ts). A pod with it gets no restore/agent containers (it is
 * its own agent) and keeps the store Secret. The sandbox's demo and tests now use the split
 * form (`standInContainer()`: `spillway checkpoint trainer` beside Spillway's containers).
 */
export const TRAINER_STAND_IN_COMMAND = ["spillway", "checkpoint", "workload"] as const;

export function isTrainerStandIn(container: { command?: unknown }): boolean {
  const cmd = container.command;
  return (
    Array.isArray(cmd) &&
    cmd.length >= TRAINER_STAND_IN_COMMAND.length &&
    TRAINER_STAND_IN_COMMAND.every((w, i) => cmd[i] === w)
  );
}

/** Name of the emptyDir volume Spillway adds at the checkpoint path when nothing is mounted there. */
export const CHECKPOINT_VOLUME = "spillway-checkpoints";

/**
 * Spillway's own containers in a checkpointed run's pod (the user's trainer image does not
 * contain Spillway): the restore init container and the checkpoint agent, a native sidecar
 * (an init container with `restartPolicy: Always`, Kubernetes 1.29+: it starts before the
 * trainer, keeps running beside it, and is stopped after it, so it drains on SIGTERM).
 */
export const RESTORE_CONTAINER = "spillway-restore";
export const AGENT_CONTAINER = "spillway-checkpoint-agent";
export const RESTORE_COMMAND = ["spillway", "checkpoint", "restore"] as const;
export const AGENT_COMMAND = ["spillway", "checkpoint", "agent"] as const;
/** A small writable /tmp for Spillway's containers (their root filesystem is read-only). */
export const SPILLWAY_TMP_VOLUME = "spillway-tmp";
/**
 * The image of Spillway's own containers on remote clusters (checkpoint restore and agent,
 * dataset sync workers) when nothing names one: the chart's image (repository and
 * appVersion). Keep in step with charts/spillway/Chart.yaml.
 */
export const DEFAULT_AGENT_IMAGE = "ghcr.io/spillway-dev/spillway:0.1.0";

/**
 * The operator's own image, which it puts in the pods it creates: `$SPILLWAY_IMAGE` (the chart
 * sets it to exactly the operator's image), else DEFAULT_AGENT_IMAGE.
 */
export function spillwayImage(env: NodeJS.ProcessEnv = process.env): string {
  const v = env.SPILLWAY_IMAGE?.trim();
  return v ? v : DEFAULT_AGENT_IMAGE;
}

/** torchrun's default rendezvous port. */
export const RENDEZVOUS_PORT = 29500;

export interface DispatchInputs {
  run: TrainingRun;
  attempt: number;
  /** Name of the management cluster (the origin label value). */
  origin: string;
  provider: string;
  /** Where the dataset version is at the target, when the run has one. */
  dataset?: { uri: string; version: string };
  /** Where checkpoints go at the target, and the step to resume from. */
  checkpoints?: { uri: string; resumeStep?: number };
  /** Name of the Secret (in the remote namespace) holding only the target store's credentials. */
  storeSecretName?: string;
  /**
   * Image of Spillway's restore and agent containers: the operator's own image. Default
   * DEFAULT_AGENT_IMAGE.
   */
  agentImage?: string;
}

/** Environment names of a store's credentials, by the keys of a provider's storage Secret. */
const STORE_ENV: Record<string, string> = {
  connectionString: "AZURE_STORAGE_CONNECTION_STRING",
  accountKey: "AZURE_STORAGE_KEY",
  sas: "AZURE_STORAGE_SAS_TOKEN",
  accessKeyId: "AWS_ACCESS_KEY_ID",
  secretAccessKey: "AWS_SECRET_ACCESS_KEY",
  sessionToken: "AWS_SESSION_TOKEN",
};

/** The remote Secret's name for a run's store credentials. */
export function storeSecretName(run: TrainingRun): string {
  return `${run.metadata.name}-store`;
}

/**
 * The Secret the run's pods read their target store's credentials from: only the keys a store
 * client needs (unknown keys of the provider's Secret are not copied), as environment names.
 */
export function renderStoreSecret(
  run: TrainingRun,
  attempt: number,
  origin: string,
  data: Record<string, string>,
): Record<string, unknown> | undefined {
  const stringData: Record<string, string> = {};
  for (const [k, v] of Object.entries(data)) if (STORE_ENV[k]) stringData[STORE_ENV[k]!] = v;
  if (Object.keys(stringData).length === 0) return undefined;
  return {
    apiVersion: "v1",
    kind: "Secret",
    type: "Opaque",
    metadata: {
      name: storeSecretName(run),
      namespace: remoteNamespace(run),
      labels: remoteLabels(run, attempt, origin),
    },
    stringData,
  };
}

export interface RemoteObjects {
  namespace: Record<string, unknown>;
  service: Record<string, unknown>;
  job: Record<string, unknown>;
}

/** The remote Job's name: the run's name (≤ 56 characters by validation), stable across attempts. */
export function remoteJobName(run: TrainingRun): string {
  return run.metadata.name!;
}

/** Remote objects live in a namespace of the same name as the run's, so runs stay isolated per team. */
export function remoteNamespace(run: TrainingRun): string {
  return run.metadata.namespace!;
}

export function remoteLabels(run: TrainingRun, attempt: number, origin: string): Record<string, string> {
  return {
    [LABEL_RUN_UID]: run.metadata.uid!,
    [LABEL_RUN_NAME]: run.metadata.name!,
    [LABEL_RUN_NAMESPACE]: run.metadata.namespace!,
    [LABEL_ATTEMPT]: String(attempt),
    [LABEL_ORIGIN]: origin,
    [LABEL_MANAGED_BY]: MANAGED_BY,
  };
}

type Env = { name: string; value?: string; valueFrom?: Record<string, unknown> };

function rendezvousEnv(run: TrainingRun, inputs: DispatchInputs): Env[] {
  const name = remoteJobName(run);
  const ns = remoteNamespace(run);
  const nodes = run.spec.resources.nodes ?? 1;
  const master = `${name}-0.${name}.${ns}.svc`;
  const rank: Env = {
    name: "NODE_RANK",
    valueFrom: {
      fieldRef: { fieldPath: "metadata.annotations['batch.kubernetes.io/job-completion-index']" },
    },
  };
  const env: Env[] = [
    { name: "MASTER_ADDR", value: master },
    { name: "MASTER_PORT", value: String(RENDEZVOUS_PORT) },
    { name: "NNODES", value: String(nodes) },
    rank,
    { name: "NPROC_PER_NODE", value: String(run.spec.resources.gpu.count) },
    // torchrun reads its options from PET_* variables.
    { name: "PET_MASTER_ADDR", value: master },
    { name: "PET_MASTER_PORT", value: String(RENDEZVOUS_PORT) },
    { name: "PET_NNODES", value: String(nodes) },
    { name: "PET_NODE_RANK", valueFrom: rank.valueFrom },
    { name: "PET_NPROC_PER_NODE", value: String(run.spec.resources.gpu.count) },
    { name: "SPILLWAY_RUN", value: `${ns}/${name}` },
    { name: "SPILLWAY_RUN_UID", value: run.metadata.uid! },
    { name: "SPILLWAY_ATTEMPT", value: String(inputs.attempt) },
    { name: "SPILLWAY_PROVIDER", value: inputs.provider },
    { name: "SPILLWAY_NNODES", value: String(nodes) },
  ];
  if (inputs.dataset) {
    env.push(
      { name: "SPILLWAY_DATASET_URI", value: inputs.dataset.uri },
      { name: "SPILLWAY_DATASET_VERSION", value: inputs.dataset.version },
      { name: "SPILLWAY_DATASET_DIR", value: run.spec.data?.mountPath ?? "/data" },
    );
  }
  if (inputs.checkpoints) {
    env.push(
      { name: "SPILLWAY_CHECKPOINT_DIR", value: checkpointPath(run) },
      { name: "SPILLWAY_CHECKPOINT_STORE", value: inputs.checkpoints.uri },
      { name: "SPILLWAY_CHECKPOINT_KEEP", value: String(run.spec.checkpoints?.keep ?? 3) },
    );
    if (inputs.checkpoints.resumeStep !== undefined) {
      env.push({ name: "SPILLWAY_RESUME_STEP", value: String(inputs.checkpoints.resumeStep) });
    }
  }
  return env;
}

function checkpointPath(run: TrainingRun): string {
  return run.spec.checkpoints?.path ?? "/checkpoints";
}

type Mount = { name?: unknown; mountPath?: unknown };

/** Whether one of the mounts holds `path` (the path itself or a directory above it). */
function mounted(mounts: Mount[], path: string): boolean {
  return mounts.some((m) => {
    const at = typeof m.mountPath === "string" ? m.mountPath.replace(/\/+$/, "") : undefined;
    return at !== undefined && (path === at || path.startsWith(`${at}/`) || at === "");
  });
}

/**
 * The checkpoint path must be a volume: the checkpoint agent (a sidecar) reads what the
 * trainer writes, and the trainer stand-in needs it writable. When the user mounted nothing
 * there, an emptyDir goes at that path in the first container (and in the stand-in's).
 * Returns the first container's mount that holds the path (Spillway's containers mount the
 * same volume at the same place, so they see the same files).
 */
function addCheckpointVolume(
  podSpec: Record<string, unknown> & { containers: Array<Record<string, unknown>> },
  path: string,
): Mount | undefined {
  const volumes = Array.isArray(podSpec.volumes) ? (podSpec.volumes as Array<{ name?: unknown }>) : [];
  let added = false;
  podSpec.containers = podSpec.containers.map((c, i) => {
    if (i !== 0 && !isTrainerStandIn(c)) return c;
    const mounts = Array.isArray(c.volumeMounts) ? (c.volumeMounts as Mount[]) : [];
    if (mounted(mounts, path)) return c;
    added = true;
    return { ...c, volumeMounts: [...mounts, { name: CHECKPOINT_VOLUME, mountPath: path }] };
  });
  if (added && !volumes.some((v) => v.name === CHECKPOINT_VOLUME)) {
    podSpec.volumes = [...volumes, { name: CHECKPOINT_VOLUME, emptyDir: {} }];
  }
  const first = podSpec.containers[0];
  const mounts = Array.isArray(first?.volumeMounts) ? (first.volumeMounts as Mount[]) : [];
  // The deepest mount holding the path is the one the trainer writes through.
  return mounts
    .filter((m) => mounted([m], path))
    .sort((a, b) => String(b.mountPath).length - String(a.mountPath).length)[0];
}

/** The restricted Pod Security Standard, for Spillway's own containers. */
const RESTRICTED_CONTAINER = {
  runAsNonRoot: true,
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  capabilities: { drop: ["ALL"] },
  seccompProfile: { type: "RuntimeDefault" },
};

/**
 * The restore init container and the checkpoint agent sidecar. They get the checkpoint part
 * of the environment contract (every `SPILLWAY_*` variable), the store Secret (the only
 * containers that do), the checkpoint volume at the trainer's mount, and a small /tmp.
 * Their flags default from that environment (operator/cli/commands/checkpoint.ts);
 * `--events` makes them print one JSON line per outcome (restored/fresh, committed).
 */
function checkpointContainers(
  image: string,
  env: Env[],
  checkpointMount: Mount,
  storeSecret: string | undefined,
): Array<Record<string, unknown>> {
  const common = {
    image,
    imagePullPolicy: "IfNotPresent",
    env: [...env.filter((e) => e.name.startsWith("SPILLWAY_")), { name: "HOME", value: "/tmp" }],
    ...(storeSecret ? { envFrom: [{ secretRef: { name: storeSecret } }] } : {}),
    volumeMounts: [
      {
        name: checkpointMount.name,
        mountPath: checkpointMount.mountPath,
        ...(typeof (checkpointMount as { subPath?: unknown }).subPath === "string"
          ? { subPath: (checkpointMount as { subPath: string }).subPath }
          : {}),
      },
      { name: SPILLWAY_TMP_VOLUME, mountPath: "/tmp" },
    ],
    resources: { requests: { cpu: "100m", memory: "256Mi" }, limits: { memory: "1Gi" } },
    securityContext: RESTRICTED_CONTAINER,
    // The restore's last line (or its error) is the termination message the operator reads.
    terminationMessagePolicy: "FallbackToLogsOnError",
  };
  return [
    { name: RESTORE_CONTAINER, ...common, command: [...RESTORE_COMMAND], args: ["--events"] },
    {
      name: AGENT_CONTAINER,
      ...common,
      command: [...AGENT_COMMAND],
      args: ["--events"],
      // Native sidecar: runs beside the trainer, stopped (SIGTERM → drain) after it exits.
      restartPolicy: "Always",
    },
  ];
}

function mergeEnv(existing: unknown, added: Env[]): Env[] {
  const user = Array.isArray(existing) ? (existing as Env[]) : [];
  const ours = new Set(added.map((e) => e.name));
  // The user's values win for names they set themselves, except ours, which must be right.
  return [...user.filter((e) => !ours.has(e.name)), ...added];
}

/** Renders the namespace, headless Service and Indexed Job for one attempt. */
export function renderRemoteObjects(inputs: DispatchInputs): RemoteObjects {
  const { run, attempt, origin } = inputs;
  const name = remoteJobName(run);
  const ns = remoteNamespace(run);
  const labels = remoteLabels(run, attempt, origin);
  const nodes = run.spec.resources.nodes ?? 1;
  const gpus = run.spec.resources.gpu.count;
  const podSpec = structuredClone(run.spec.template.spec) as Record<string, unknown> & {
    containers: Array<Record<string, unknown>>;
  };
  const env = rendezvousEnv(run, inputs);
  // Spillway's containers restore and upload checkpoints, so the trainer needs no store
  // credentials for them. It keeps the store Secret only when it reads the dataset from that
  // store itself, or when it is the sandbox's all-in-one stand-in (its own agent), or when the
  // run has no checkpoints (the Secret is then there for the trainer alone).
  const standIn = podSpec.containers.some(isTrainerStandIn);
  const withAgent = inputs.checkpoints !== undefined && !standIn;
  const trainerGetsStore =
    inputs.storeSecretName !== undefined && (!withAgent || inputs.dataset !== undefined);
  podSpec.containers = podSpec.containers.map((c, i) => {
    const container: Record<string, unknown> = { ...c, env: mergeEnv(c.env, env) };
    if (i === 0) {
      const resources = (c.resources ?? {}) as {
        limits?: Record<string, unknown>;
        requests?: Record<string, unknown>;
      };
      container.resources = {
        ...resources,
        limits: { ...(resources.limits ?? {}), "nvidia.com/gpu": String(gpus) },
        requests: { ...(resources.requests ?? {}), "nvidia.com/gpu": String(gpus) },
      };
      if (trainerGetsStore) {
        // Only the target store's credentials, under the names the SDKs read; never the
        // operator's own Secrets.
        container.envFrom = [
          ...((c.envFrom as unknown[]) ?? []),
          { secretRef: { name: inputs.storeSecretName } },
        ];
      }
      container.ports = [
        ...((c.ports as unknown[]) ?? []),
        { name: "rendezvous", containerPort: RENDEZVOUS_PORT, protocol: "TCP" },
      ];
    }
    return container;
  });
  if (inputs.checkpoints) {
    const mount = addCheckpointVolume(podSpec, checkpointPath(run));
    if (withAgent && mount) {
      const userInits = Array.isArray(podSpec.initContainers) ? (podSpec.initContainers as unknown[]) : [];
      // Restore runs first (before any user init container could read the path), then the
      // agent starts, then the user's own init containers and the trainer.
      podSpec.initContainers = [
        ...checkpointContainers(inputs.agentImage ?? spillwayImage(), env, mount, inputs.storeSecretName),
        ...userInits,
      ];
      const volumes = Array.isArray(podSpec.volumes) ? (podSpec.volumes as unknown[]) : [];
      podSpec.volumes = [...volumes, { name: SPILLWAY_TMP_VOLUME, emptyDir: { sizeLimit: "64Mi" } }];
    }
  }
  podSpec.subdomain = name;
  podSpec.restartPolicy = "Never";
  podSpec.automountServiceAccountToken = podSpec.automountServiceAccountToken ?? false;
  const templateMeta = run.spec.template.metadata ?? {};
  return {
    namespace: {
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name: ns, labels: { [LABEL_MANAGED_BY]: MANAGED_BY, [LABEL_ORIGIN]: origin } },
    },
    service: {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name, namespace: ns, labels },
      spec: {
        clusterIP: "None",
        publishNotReadyAddresses: true,
        selector: { [LABEL_RUN_UID]: run.metadata.uid! },
        ports: [{ name: "rendezvous", port: RENDEZVOUS_PORT, targetPort: RENDEZVOUS_PORT }],
      },
    },
    job: {
      apiVersion: "batch/v1",
      kind: "Job",
      metadata: { name, namespace: ns, labels },
      spec: {
        completionMode: "Indexed",
        completions: nodes,
        parallelism: nodes,
        backoffLimit: run.spec.runPolicy?.backoffLimit ?? 3,
        ...(run.spec.runPolicy?.activeDeadlineSeconds
          ? { activeDeadlineSeconds: run.spec.runPolicy.activeDeadlineSeconds }
          : {}),
        template: {
          metadata: {
            labels: { ...(templateMeta.labels ?? {}), ...labels },
            annotations: { ...(templateMeta.annotations ?? {}) },
          },
          spec: podSpec,
        },
      },
    },
  };
}
