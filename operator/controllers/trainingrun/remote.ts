/**
 * The run's objects on its target cluster: dispatch (idempotent creates), the mirror of the
 * remote Job's status, and deletion with uid preconditions (never a same-name replacement).
 */
import type { TrainingRun } from "../../api/v1alpha1/index.ts";
import type { KubeClient } from "../../runtime/client.ts";
import { isAlreadyExists, isNotFound } from "../../runtime/client.ts";
import type { Informer } from "../../runtime/informer.ts";
import { type KubeObject, Resources } from "../../runtime/resources.ts";
import type { RemoteJob } from "../remote/clusters.ts";
import {
  type DispatchInputs,
  LABEL_ATTEMPT,
  LABEL_RUN_UID,
  remoteJobName,
  remoteNamespace,
  renderRemoteObjects,
  storeSecretName,
} from "../remote/manifests.ts";

const namespacesSeen = new WeakMap<KubeClient, Set<string>>();

export interface RemoteCluster {
  client: KubeClient;
  jobs: Informer<RemoteJob>;
}

/** The remote Job of this run (any attempt) from the cluster's cache. */
export function remoteJobOf(cluster: RemoteCluster, run: TrainingRun): RemoteJob | undefined {
  const job = cluster.jobs.get(`${remoteNamespace(run)}/${remoteJobName(run)}`);
  if (!job) return undefined;
  return job.metadata.labels?.[LABEL_RUN_UID] === run.metadata.uid ? job : undefined;
}

export function jobAttempt(job: RemoteJob): number {
  return Number(job.metadata.labels?.[LABEL_ATTEMPT] ?? 0);
}

async function createIgnoringExisting(
  client: KubeClient,
  r: (typeof Resources)[keyof typeof Resources],
  obj: Record<string, unknown>,
): Promise<boolean> {
  try {
    await client.create(r, obj as never);
    return true;
  } catch (err) {
    if (isAlreadyExists(err)) return false;
    throw err;
  }
}

/**
 * Creates the namespace, Service and Job of an attempt. Safe to repeat: existing objects are
 * left as they are (the Job is immutable and named after the run, so a repeat is a no-op).
 */
export async function dispatch(
  cluster: RemoteCluster,
  inputs: DispatchInputs,
  storeSecret?: Record<string, unknown>,
): Promise<boolean> {
  const objs = renderRemoteObjects({
    ...inputs,
    ...(storeSecret ? { storeSecretName: String((storeSecret.metadata as { name: string }).name) } : {}),
  });
  // Namespaces are created once per cluster client (and again after a restart): one request
  // per run saved. Spillway never deletes the namespaces it creates (teams share them).
  let known = namespacesSeen.get(cluster.client);
  if (!known) {
    known = new Set();
    namespacesSeen.set(cluster.client, known);
  }
  const ns = String((objs.namespace.metadata as { name: string }).name);
  if (!known.has(ns)) {
    await createIgnoringExisting(cluster.client, Resources.Namespace, objs.namespace);
    known.add(ns);
  }
  if (storeSecret) {
    // Replaced on every dispatch: rotated credentials reach the next attempt.
    const meta = storeSecret.metadata as { name: string; namespace: string };
    const existing = await cluster.client.tryGet(Resources.Secret, meta.name, meta.namespace);
    if (existing) {
      await cluster.client.update(Resources.Secret, {
        ...(storeSecret as unknown as KubeObject),
        metadata: { ...meta, resourceVersion: existing.metadata.resourceVersion },
      });
    } else await createIgnoringExisting(cluster.client, Resources.Secret, storeSecret);
  }
  await createIgnoringExisting(cluster.client, Resources.Service, objs.service);
  return createIgnoringExisting(cluster.client, Resources.Job, objs.job);
}

/** Deletes the run's Job (with its uid as precondition) and Service. Idempotent. */
export async function deleteRemote(cluster: RemoteCluster, run: TrainingRun, job?: RemoteJob): Promise<void> {
  const ns = remoteNamespace(run);
  const name = remoteJobName(run);
  const target = job ?? remoteJobOf(cluster, run);
  if (target?.metadata.uid) {
    try {
      await cluster.client.delete(Resources.Job, name, ns, {
        uid: target.metadata.uid,
        propagationPolicy: "Background",
      });
    } catch (err) {
      // 404: gone already; 409: the uid precondition failed — a different object now has the
      // name, which is not ours to delete.
      if (!isNotFound(err) && !(err instanceof Error && "statusCode" in err && err.statusCode === 409))
        throw err;
    }
  }
  try {
    const secret = await cluster.client.tryGet(Resources.Secret, storeSecretName(run), ns);
    if (secret && secret.metadata.labels?.[LABEL_RUN_UID] === run.metadata.uid) {
      await cluster.client.delete(Resources.Secret, storeSecretName(run), ns, { uid: secret.metadata.uid });
    }
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  try {
    const svc = await cluster.client.tryGet(Resources.Service, name, ns);
    if (svc && svc.metadata.labels?.[LABEL_RUN_UID] === run.metadata.uid) {
      await cluster.client.delete(Resources.Service, name, ns, { uid: svc.metadata.uid });
    }
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}

export type JobState = "Pending" | "Running" | "Succeeded" | "Failed";

export function jobState(job: RemoteJob): { state: JobState; message?: string } {
  const conds = job.status?.conditions ?? [];
  const complete = conds.find(
    (c) => (c.type === "Complete" || c.type === "SuccessCriteriaMet") && c.status === "True",
  );
  if (complete) return { state: "Succeeded" };
  const failed = conds.find(
    (c) => (c.type === "Failed" || c.type === "FailureTarget") && c.status === "True",
  );
  if (failed) return { state: "Failed", message: failed.message ?? failed.reason ?? "the Job failed" };
  if ((job.status?.active ?? 0) > 0) return { state: "Running" };
  return { state: "Pending" };
}

/**
 * Worker pods of one attempt still on the cluster (terminating ones included). A failback
 * deletes the Job and waits for this to reach 0: each pod got SIGTERM and its checkpoint agent
 * uploaded every checkpoint complete by then before exiting (the checkpoint boundary).
 */
export async function podsLeft(cluster: RemoteCluster, run: TrainingRun, attempt: number): Promise<number> {
  const pods = await cluster.client.list(Resources.Pod, {
    namespace: remoteNamespace(run),
    labelSelector: `${LABEL_RUN_UID}=${run.metadata.uid},${LABEL_ATTEMPT}=${attempt}`,
  });
  return pods.items.length;
}
