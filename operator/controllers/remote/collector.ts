/**
 * The orphan collector: removes remote Jobs this management cluster created whose run no
 * longer wants them — the run is gone (deleted while its cluster was unreachable, or while
 * the operator was down), or the run has moved to another cluster or attempt. Only objects
 * carrying this management cluster's origin label are ever touched.
 */
import type { TrainingRun } from "../../api/v1alpha1/index.ts";
import type { Informer } from "../../runtime/informer.ts";
import type { Logger } from "../../runtime/logging.ts";
import { type KubeObject, Resources } from "../../runtime/resources.ts";
import type { RemoteClusters, RemoteJob } from "./clusters.ts";
import { LABEL_ATTEMPT, LABEL_RUN_UID } from "./manifests.ts";

/** Why a remote Job is an orphan, or undefined when its run still wants it. */
export function orphanReason(
  job: RemoteJob,
  clusterId: string,
  runs: Informer<TrainingRun & KubeObject>,
): string | undefined {
  const uid = job.metadata.labels?.[LABEL_RUN_UID];
  if (!uid) return undefined;
  const run = runs.getByUid(uid);
  if (!run) return "its run no longer exists";
  const p = run.status?.placement;
  const attempt = Number(job.metadata.labels?.[LABEL_ATTEMPT] ?? 0);
  const here = p?.cluster !== undefined && `${p.provider}/${p.cluster}` === clusterId;
  if ((run.status?.attempt ?? 0) > attempt && !(here && p?.attempt === attempt)) {
    return `its run moved on to attempt ${run.status?.attempt}`;
  }
  return undefined;
}

export interface CollectorResult {
  deleted: Array<{ cluster: string; job: string; reason: string }>;
}

/** One pass over every connected cluster's Job cache. */
export async function collectOrphans(
  remote: RemoteClusters,
  runs: Informer<TrainingRun & KubeObject>,
  log: Logger,
): Promise<CollectorResult> {
  const deleted: CollectorResult["deleted"] = [];
  if (!runs.hasSynced()) return { deleted };
  for (const id of remote.ids()) {
    const entry = remote.get(id);
    if (!entry?.jobs.hasSynced()) continue;
    for (const job of entry.jobs.list()) {
      const reason = orphanReason(job, id, runs);
      if (!reason) continue;
      try {
        await entry.client.delete(Resources.Job, job.metadata.name!, job.metadata.namespace, {
          uid: job.metadata.uid,
          propagationPolicy: "Background",
        });
        deleted.push({ cluster: id, job: `${job.metadata.namespace}/${job.metadata.name}`, reason });
        log.info("orphaned remote Job deleted", { cluster: id, job: job.metadata.name, reason });
      } catch (err) {
        log.warn("could not delete an orphaned remote Job; will retry", {
          cluster: id,
          job: job.metadata.name,
          err,
        });
      }
    }
  }
  return { deleted };
}
