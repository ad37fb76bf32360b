/**
 * The data plane's public surface: stores, the sync engine and the helpers the DataSet
 * controller calls. See docs/dataplane.md.
 */
import { createHash } from "node:crypto";
import type { CloudProvider } from "../api/v1alpha1/index.ts";
import { storeForProvider } from "./credentials.ts";
import type { ObjectStore } from "./store.ts";
import { type SyncOptions, type SyncSummary, syncStores } from "./sync.ts";

export { credentialsFromEnv, locationForProvider, SECRET_KEYS, storeForProvider } from "./credentials.ts";
export {
  loadManifest,
  type Manifest,
  type ManifestEntry,
  META_PREFIX,
  manifestDigest,
  manifestKey,
  mergeShardManifests,
  type ShardSpec,
  shardOf,
} from "./manifest.ts";
export { displayLocation, parseStoreUri, redactUri } from "./open.ts";
export * from "./store.ts";
export {
  ByteBudget,
  DEFAULT_CONCURRENCY,
  DEFAULT_PART_SIZE,
  DEFAULT_UPLOAD_CUTOFF,
  type SyncOptions,
  type SyncProgress,
  type SyncSummary,
  syncStores,
} from "./sync.ts";

/** One end of a dataset sync as the controller sees it: a provider, its Secret's data, a prefix. */
export interface DatasetEndpoint {
  provider: CloudProvider;
  /** Decoded data of the provider's spec.storage.credentialsSecretRef Secret (see SECRET_KEYS). */
  secretData: Record<string, string>;
  prefix: string;
}

/**
 * Syncs a DataSet's source into one replica. `options.onProgress` feeds status; abort through
 * `options.signal` (completed objects are journaled, the next call resumes). The returned
 * summary's `version` is the replica's dataset version, set only when the sync completed.
 */
export async function syncDataset(
  source: DatasetEndpoint,
  replica: DatasetEndpoint,
  options: SyncOptions = {},
): Promise<SyncSummary> {
  const src = await storeForProvider(source.provider, source.secretData, source.prefix);
  const dst = await storeForProvider(replica.provider, replica.secretData, replica.prefix);
  return syncStores(src, dst, options);
}

/**
 * The version a replica currently holds (digest of its committed manifest), or undefined. The
 * controller gates a run's start on this equalling the source's version. Computed over the
 * manifest read as a stream (never held whole); a manifest not in key order (an older engine's)
 * is read whole and sorted instead, and a damaged one counts as absent.
 */
export async function replicaVersion(store: ObjectStore, signal?: AbortSignal): Promise<string | undefined> {
  const { compareKeys, loadManifest, manifestDigest, manifestKey } = await import("./manifest.ts");
  const { ManifestReader } = await import("./manifest-stream.ts");
  const reader = await ManifestReader.open(store, manifestKey(), signal ? { signal } : {});
  if (!reader) return undefined;
  const h = createHash("sha256");
  let last: string | undefined;
  try {
    for await (const [key, e] of reader.rows()) {
      if (last !== undefined && compareKeys(key, last) <= 0) {
        const m = await loadManifest(store, manifestKey(), signal);
        return m ? manifestDigest(m) : undefined;
      }
      last = key;
      h.update(`${key}\t${e.size}\t${e.sha256}\n`);
    }
  } finally {
    reader.close();
  }
  return reader.truncated ? undefined : `sha256:${h.digest("hex")}`;
}
