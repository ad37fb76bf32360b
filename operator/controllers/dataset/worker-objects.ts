/**
 * The objects of a sync-worker Job on a remote cluster, as pure functions (the same inputs
 * always render the same objects, so a restarted operator recognises what it created): names,
 * labels, the store URIs and credential environment the CLI reads, the Indexed Job and its
 * Secret. What runs them is `workers.ts`; the design is in docs/dataset-workers.md.
 */
import { createHash } from "node:crypto";
import type { CloudProvider, DataSet } from "../../api/v1alpha1/index.ts";
import type { StoreLocation } from "../../dataplane/store.ts";
import type { KubeObject } from "../../runtime/resources.ts";
import { DEFAULT_AGENT_IMAGE, LABEL_MANAGED_BY, LABEL_ORIGIN, MANAGED_BY } from "../remote/manifests.ts";

export const LABEL_DATASET_UID = "spillway.dev/dataset-uid";
export const LABEL_DATASET_NAME = "spillway.dev/dataset-name";
export const LABEL_DATASET_NAMESPACE = "spillway.dev/dataset-namespace";
export const LABEL_REPLICA = "spillway.dev/replica-provider";
export const LABEL_COMPONENT = "app.kubernetes.io/component";
export const COMPONENT_SYNC_WORKER = "sync-worker";
/** Digest of what the Job does (URIs, shard count, flags, image): a changed one is replaced. */
export const ANNOTATION_SYNC_SPEC = "spillway.dev/sync-spec";
export const WORKERS_FINALIZER = "spillway.dev/sync-workers";
export const DEFAULT_WORKER_NAMESPACE = "spillway-sync";
/** The chart's image when neither the option nor SPILLWAY_IMAGE says otherwise (one constant for every Spillway pod). */
export const DEFAULT_WORKER_IMAGE = DEFAULT_AGENT_IMAGE;
/** Exit code of `spillway sync` for bad input (URI, credentials, missing bucket): no retry helps. */
export const EXIT_BAD_INPUT = 2;

export interface SyncWorkerOptions {
  /** The workers' image: the operator's own. Default `$SPILLWAY_IMAGE`, else DEFAULT_WORKER_IMAGE. */
  image?: string;
  /** Namespace on the remote cluster. Default `spillway-sync`. */
  namespace?: string;
  /** Pod failures tolerated per index (backoffLimitPerIndex). Default 2. */
  backoffLimitPerIndex?: number;
  /** The whole Job's time limit. Default 6 h. */
  activeDeadlineSeconds?: number;
  /** Kubernetes removes a finished Job after this long if the operator never comes back. Default 1 day. */
  ttlSecondsAfterFinished?: number;
  /** Container resources of each worker. Default: requests 500m CPU / 256Mi, limit 1Gi memory. */
  resources?: Record<string, Record<string, string>>;
  /** How often a running Job is looked at when no watch event came. Default 2 s. */
  pollMs?: number;
}

/** Environment variable per key of a provider's credentials Secret (as the CLI reads them). */
const STORE_ENV: Record<"azure" | "s3", Record<string, string>> = {
  azure: {
    connectionString: "AZURE_STORAGE_CONNECTION_STRING",
    accountKey: "AZURE_STORAGE_KEY",
    sas: "AZURE_STORAGE_SAS_TOKEN",
  },
  s3: {
    accessKeyId: "AWS_ACCESS_KEY_ID",
    secretAccessKey: "AWS_SECRET_ACCESS_KEY",
    sessionToken: "AWS_SESSION_TOKEN",
  },
};

const short = (s: string, n: number) => createHash("sha256").update(s).digest("hex").slice(0, n);

/** The Job's (and its Secret's) name: a DNS label, deterministic per DataSet uid and replica. */
export function workerJobName(ds: DataSet, provider: string): string {
  const base = `sync-${ds.metadata?.name ?? ""}`
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, "-")
    .slice(0, 40)
    .replace(/-+$/, "");
  return `${base}-${short(`${ds.metadata?.uid ?? ""}/${provider}`, 10)}`;
}

export function workerLabels(ds: DataSet, provider: string, origin: string): Record<string, string> {
  return {
    [LABEL_DATASET_UID]: ds.metadata?.uid ?? "",
    [LABEL_DATASET_NAME]: ds.metadata?.name ?? "",
    [LABEL_DATASET_NAMESPACE]: ds.metadata?.namespace ?? "",
    [LABEL_REPLICA]: provider,
    [LABEL_COMPONENT]: COMPONENT_SYNC_WORKER,
    [LABEL_ORIGIN]: origin,
    [LABEL_MANAGED_BY]: MANAGED_BY,
  };
}

/** A store URI the CLI parses back to `loc` (no credentials in it: they travel by environment). */
export function storeUri(loc: StoreLocation): string {
  const path = (p: string) => p.split("/").map(encodeURIComponent).join("/");
  const q = new URLSearchParams();
  switch (loc.kind) {
    case "azblob":
      if (loc.endpoint) q.set("endpoint", loc.endpoint);
      return `azblob://${loc.account}/${loc.container}/${path(loc.prefix)}${q.size ? `?${q}` : ""}`;
    case "s3":
      q.set("region", loc.region);
      if (loc.endpoint) q.set("endpoint", loc.endpoint);
      return `s3://${loc.bucket}/${path(loc.prefix)}?${q}`;
    case "file":
      return `file://${path(loc.root)}`;
  }
}

/**
 * The workers' environment: each store's credentials under the names the CLI reads. Two stores
 * of one kind needing different values cannot share one environment: undefined, with why.
 */
export function workerEnv(
  ends: { provider: CloudProvider; secret: Record<string, string> }[],
): { env: Record<string, string> } | { conflict: string } {
  const env: Record<string, string> = {};
  for (const { provider, secret } of ends) {
    const kind = provider.spec.storage?.azureBlob ? "azure" : "s3";
    for (const [key, name] of Object.entries(STORE_ENV[kind])) {
      const v = secret[key];
      if (!v) continue;
      if (env[name] !== undefined && env[name] !== v)
        return {
          conflict: `source and replica are both ${kind} stores with different credentials (${name}); one worker environment cannot hold both`,
        };
      env[name] = v;
    }
  }
  return { env };
}

export interface WorkerJobInputs {
  ds: DataSet;
  provider: string;
  origin: string;
  namespace: string;
  image: string;
  workers: number;
  src: string;
  dst: string;
  options: SyncWorkerOptions;
}

/** The Indexed Job of sync workers (pure: the same inputs render the same object). */
export function renderWorkerJob(i: WorkerJobInputs): KubeObject & Record<string, unknown> {
  const name = workerJobName(i.ds, i.provider);
  const labels = workerLabels(i.ds, i.provider, i.origin);
  const policy = i.ds.spec.syncPolicy ?? {};
  const command = [
    "spillway",
    "sync",
    i.src,
    i.dst,
    "--shard",
    `$(JOB_COMPLETION_INDEX)/${i.workers}`,
    "--json",
    "--no-progress",
    ...(policy.concurrency ? ["--concurrency", String(policy.concurrency)] : []),
    ...(policy.delete ? ["--delete"] : []),
  ];
  const spec = short(JSON.stringify({ command, image: i.image }), 16);
  const perIndex = i.options.backoffLimitPerIndex ?? 2;
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: { name, namespace: i.namespace, labels, annotations: { [ANNOTATION_SYNC_SPEC]: spec } },
    spec: {
      completionMode: "Indexed",
      completions: i.workers,
      parallelism: i.workers,
      // Each shard retries on its own; the global limit caps the whole Job (and is what a
      // cluster without per-index limits honours).
      backoffLimitPerIndex: perIndex,
      backoffLimit: perIndex * i.workers,
      podFailurePolicy: {
        rules: [
          // Bad input fails the same way every time: the index fails without retries.
          {
            action: "FailIndex",
            onExitCodes: { containerName: "sync", operator: "In", values: [EXIT_BAD_INPUT] },
          },
          { action: "Ignore", onPodConditions: [{ type: "DisruptionTarget" }] },
        ],
      },
      activeDeadlineSeconds: i.options.activeDeadlineSeconds ?? 6 * 3600,
      ttlSecondsAfterFinished: i.options.ttlSecondsAfterFinished ?? 86_400,
      template: {
        metadata: { labels },
        spec: {
          restartPolicy: "Never",
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: 65532,
            runAsGroup: 65532,
            seccompProfile: { type: "RuntimeDefault" },
          },
          containers: [
            {
              name: "sync",
              image: i.image,
              imagePullPolicy: "IfNotPresent",
              command,
              // No NODE_OPTIONS for the heap: the sync command caps its own young generation
              // (`capYoungGeneration` in cli/commands/sync.ts, at run time, so the CLI, these
              // workers and the benchmark behave alike), and the image's launcher starts
              // `spillway sync` with its V8 flags (bin/sync-runtime.mjs).
              env: [{ name: "HOME", value: "/tmp" }],
              envFrom: [{ secretRef: { name } }],
              // The summary (or the error line) becomes the pod's termination message.
              terminationMessagePolicy: "FallbackToLogsOnError",
              resources: i.options.resources ?? {
                requests: { cpu: "500m", memory: "256Mi" },
                limits: { memory: "1Gi" },
              },
              securityContext: {
                allowPrivilegeEscalation: false,
                readOnlyRootFilesystem: true,
                runAsNonRoot: true,
                capabilities: { drop: ["ALL"] },
                seccompProfile: { type: "RuntimeDefault" },
              },
              volumeMounts: [{ name: "tmp", mountPath: "/tmp" }],
            },
          ],
          // The sync writes the new manifest to a temp file as it goes (≈ 150–200 B per object,
          // twice that while out-of-order keys are merged in): 1 GiB holds a shard of a few
          // million objects. It is disk, not memory: the engine holds no per-object state.
          volumes: [{ name: "tmp", emptyDir: { sizeLimit: "1Gi" } }],
        },
      },
    },
  };
}

export function renderWorkerSecret(
  ds: DataSet,
  provider: string,
  origin: string,
  namespace: string,
  env: Record<string, string>,
): KubeObject & { stringData: Record<string, string>; type: string } {
  return {
    apiVersion: "v1",
    kind: "Secret",
    type: "Opaque",
    metadata: { name: workerJobName(ds, provider), namespace, labels: workerLabels(ds, provider, origin) },
    stringData: env,
  };
}

/** `"0-2,5"` → [0,1,2,5] (the Job API's index-list format). */
export function parseIndexes(s: string | undefined): number[] {
  const out: number[] = [];
  for (const part of (s ?? "").split(",")) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) continue;
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    for (let n = a; n <= b && out.length < 10_000; n++) out.push(n);
  }
  return out;
}
