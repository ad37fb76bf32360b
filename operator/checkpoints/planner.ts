/**
 * The `CheckpointPlanner` port (operator/ports/staging.ts) over CloudProviders' object stores:
 * where a run's checkpoints live on a target cloud, and the newest committed checkpoint to
 * resume from there — replicated to the target first when it was written elsewhere. Plus
 * `mirror`, which copies the newest committed checkpoint of the cloud a run is on to the
 * primary's store (the system of record) and returns what TrainingRun status shows.
 *
 * Where to look for the newest checkpoint: the target's store, the primary's, the store of the
 * provider the run was last placed on, and every provider status says holds a copy. A store
 * that cannot be reached (a lost cloud) is skipped and named in `unreachable`: resuming from the
 * primary's copy is what the system of record is for.
 *
 * `prepare` replicates synchronously: it returns once the target holds the checkpoint (only
 * missing blobs are sent, so a repeat is cheap). Call it with an AbortSignal bounded by the
 * reconcile's deadline.
 */
import type { CloudProvider, TrainingRun } from "../api/v1alpha1/index.ts";
import { locationForProvider } from "../dataplane/credentials.ts";
import { openLocation } from "../dataplane/open.ts";
import type { StoreResolver } from "../dataplane/stager.ts";
import type { ObjectStore, StoreLocation } from "../dataplane/store.ts";
import type { CheckpointLocation, CheckpointPlanner } from "../ports/staging.ts";
import { runPrefixFor } from "./catalog.ts";
import { replicateCheckpoint } from "./replicate.ts";
import { type CommittedCheckpoint, latestCommitted } from "./repository.ts";

export interface PlannerResolver extends StoreResolver {
  /** Every CloudProvider (the primary is the one with `spec.role: primary`). */
  providers(): CloudProvider[];
}

export interface PlannedLocation extends CheckpointLocation {
  /** Providers whose stores could not be read (name and one-line reason, no secrets). */
  unreachable: Array<{ provider: string; message: string }>;
  /** Bytes sent to the target to make the resume checkpoint available there. */
  bytesCopied: number;
}

export interface CheckpointMirror {
  step: number;
  digest: string;
  committedAt: string;
  replicatedTo: string[];
  bytesCopied: number;
}

/** The run's checkpoint store URI on a location (no credentials: no SAS; endpoint and region kept). */
export function checkpointUri(loc: StoreLocation): string {
  const q = (params: Array<[string, string | undefined]>) => {
    const s = params
      .filter((p): p is [string, string] => p[1] !== undefined)
      .map(([k, v]) => `${k}=${encodeURIComponent(v)}`)
      .join("&");
    return s ? `?${s}` : "";
  };
  const path = loc.prefix.replace(/\/+$/, "");
  switch (loc.kind) {
    case "azblob":
      return `azblob://${loc.account}/${loc.container}/${path}${q([["endpoint", loc.endpoint]])}`;
    case "s3":
      return `s3://${loc.bucket}/${path}${q([
        ["endpoint", loc.endpoint],
        ["region", loc.region],
      ])}`;
    case "file":
      return `file://${loc.root.replace(/\/+$/, "")}${path ? `/${path}` : ""}`;
  }
}

export class StoreCheckpointPlanner implements CheckpointPlanner {
  constructor(private readonly resolver: PlannerResolver) {}

  async prepare(run: TrainingRun, target: CloudProvider, signal?: AbortSignal): Promise<PlannedLocation> {
    const targetName = target.metadata?.name ?? "?";
    const targetRef = this.open(run, target);
    const base = { uri: targetRef.uri, unreachable: [] as PlannedLocation["unreachable"], bytesCopied: 0 };
    if (run.spec.checkpoints?.resume === "None") return base;

    const found = await this.survey(run, [target, ...this.candidates(run)], signal);
    base.unreachable = found.unreachable;
    const best = newest(found.latest);
    if (!best) return base;
    let bytesCopied = 0;
    const here = found.latest.get(targetName);
    if (here?.checkpoint.manifestDigest !== best.checkpoint.manifestDigest) {
      signal?.throwIfAborted();
      const dst = await targetRef.store();
      const r = await replicateCheckpoint(best.store, dst, best.checkpoint.step);
      bytesCopied = r.bytesCopied;
      found.latest.set(targetName, { provider: targetName, store: dst, checkpoint: best.checkpoint });
    }
    return {
      ...base,
      bytesCopied,
      resumeStep: best.checkpoint.step,
      digest: best.checkpoint.manifestDigest,
      committedAt: best.checkpoint.committedAt,
      replicatedTo: holders(found.latest, best.checkpoint.manifestDigest),
    };
  }

  /**
   * Copies the newest committed checkpoint of the cloud the run is placed on to the primary's
   * store; returns the status' `checkpoint` (undefined while none is committed anywhere).
   */
  async mirror(run: TrainingRun, signal?: AbortSignal): Promise<CheckpointMirror | undefined> {
    const primary = this.resolver.providers().find((p) => p.spec.role === "primary");
    const placed = run.status?.placement?.provider;
    const current = placed ? this.resolver.provider(placed) : undefined;
    const involved = [current, primary].filter((p): p is CloudProvider => p !== undefined);
    const found = await this.survey(run, [...involved, ...this.candidates(run)], signal);
    const best = newest(found.latest);
    if (!best) return undefined;
    let bytesCopied = 0;
    const primaryName = primary?.metadata?.name;
    if (
      primary &&
      primaryName &&
      found.latest.get(primaryName)?.checkpoint.manifestDigest !== best.checkpoint.manifestDigest
    ) {
      const dst = await this.open(run, primary).store();
      const r = await replicateCheckpoint(best.store, dst, best.checkpoint.step);
      bytesCopied = r.bytesCopied;
      found.latest.set(primaryName, { provider: primaryName, store: dst, checkpoint: best.checkpoint });
    }
    return {
      step: best.checkpoint.step,
      digest: best.checkpoint.manifestDigest,
      committedAt: best.checkpoint.committedAt,
      replicatedTo: holders(found.latest, best.checkpoint.manifestDigest),
      bytesCopied,
    };
  }

  /** The primary, the last placement's provider and the providers status says hold a copy. */
  private candidates(run: TrainingRun): CloudProvider[] {
    const names = new Set<string>([
      ...(run.status?.placement?.provider ? [run.status.placement.provider] : []),
      ...(run.status?.checkpoint?.replicatedTo ?? []),
    ]);
    const out = this.resolver.providers().filter((p) => p.spec.role === "primary");
    for (const n of names) {
      const p = this.resolver.provider(n);
      if (p) out.push(p);
    }
    return out;
  }

  private open(
    run: TrainingRun,
    provider: CloudProvider,
  ): { uri: string; store: () => Promise<ObjectStore> } {
    const uid = run.metadata?.uid;
    if (!uid) throw new Error("the run has no uid yet");
    const name = provider.metadata?.name ?? "?";
    const secret = this.resolver.secret(provider);
    const { location, credentials } = locationForProvider(provider, secret ?? {}, runPrefixFor(uid));
    return {
      uri: checkpointUri(location),
      store: async () => {
        if (secret === undefined)
          throw new Error(`the credentials Secret of CloudProvider ${name} is missing`);
        return openLocation(location, credentials);
      },
    };
  }

  /** The newest committed checkpoint in each provider's store (once per provider). */
  private async survey(
    run: TrainingRun,
    providers: CloudProvider[],
    signal?: AbortSignal,
  ): Promise<{ latest: Map<string, Found>; unreachable: PlannedLocation["unreachable"] }> {
    const latest = new Map<string, Found>();
    const unreachable: PlannedLocation["unreachable"] = [];
    const seen = new Set<string>();
    for (const p of providers) {
      const name = p.metadata?.name ?? "?";
      if (seen.has(name)) continue;
      seen.add(name);
      signal?.throwIfAborted();
      try {
        const store = await this.open(run, p).store();
        const checkpoint = await latestCommitted(store);
        if (checkpoint && (!run.metadata?.uid || checkpoint.runUid === run.metadata.uid)) {
          latest.set(name, { provider: name, store, checkpoint });
        }
      } catch (e) {
        unreachable.push({ provider: name, message: (e as Error).message });
      }
    }
    return { latest, unreachable };
  }
}

interface Found {
  provider: string;
  store: ObjectStore;
  checkpoint: CommittedCheckpoint;
}

function newest(latest: Map<string, Found>): Found | undefined {
  let best: Found | undefined;
  for (const f of latest.values()) if (!best || f.checkpoint.step > best.checkpoint.step) best = f;
  return best;
}

function holders(latest: Map<string, Found>, digest: string): string[] {
  return [...latest.values()]
    .filter((f) => f.checkpoint.manifestDigest === digest)
    .map((f) => f.provider)
    .sort();
}
