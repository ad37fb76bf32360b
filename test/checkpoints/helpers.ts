/**
 * Real stores for checkpoint tests: Azurite (Azure Blob) and s3rver (OCI's S3 API), started
 * once per test file, plus the filesystem store. Each test gets fresh prefixes so tests in a
 * file never see each other's checkpoints.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ObjectStore, openStore, type StoreCredentials } from "../../operator/dataplane/store.ts";
import { AZURITE_ACCOUNT, AzuriteEmulator, S3rverEmulator } from "../../operator/sandbox/emulators/index.ts";

export const CONTAINER = "checkpoints";
export const BUCKET = "spillway-checkpoints";

export interface Stores {
  dir: string;
  azurite: AzuriteEmulator;
  s3rver: S3rverEmulator;
  credentials: StoreCredentials;
  /** A fresh azblob:// URI (own prefix) on Azurite. */
  azureUri(): string;
  /** A fresh s3:// URI (own prefix) on s3rver. */
  s3Uri(): string;
  /** A fresh file:// URI. */
  fileUri(): string;
  open(uri: string): Promise<ObjectStore>;
  stop(): Promise<void>;
}

export async function startStores(): Promise<Stores> {
  const dir = mkdtempSync(join(tmpdir(), "spillway-ckpt-"));
  const [azurite, s3rver] = await Promise.all([
    AzuriteEmulator.start({ dir: join(dir, "azurite"), containers: [CONTAINER] }),
    S3rverEmulator.start({ dir: join(dir, "s3rver"), buckets: [BUCKET] }),
  ]);
  const credentials: StoreCredentials = {
    azure: { connectionString: azurite.connectionString },
    s3: { accessKeyId: s3rver.accessKeyId, secretAccessKey: s3rver.secretAccessKey },
  };
  const id = () => randomBytes(4).toString("hex");
  return {
    dir,
    azurite,
    s3rver,
    credentials,
    azureUri: () =>
      `azblob://${AZURITE_ACCOUNT}/${CONTAINER}/runs/${id()}?endpoint=${encodeURIComponent(azurite.blobEndpoint)}`,
    s3Uri: () => `s3://${BUCKET}/runs/${id()}?endpoint=${encodeURIComponent(s3rver.endpoint)}`,
    fileUri: () => `file://${join(dir, "file-stores", id())}`,
    open: (uri) => openStore(uri, credentials),
    stop: async () => {
      await Promise.all([azurite.stop(), s3rver.stop()]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A fresh temp directory under the stores' directory. */
export function tempDir(stores: Stores, name: string): string {
  return mkdtempSync(join(stores.dir, `${name}-`));
}
