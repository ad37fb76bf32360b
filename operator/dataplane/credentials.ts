/**
 * Where store credentials come from: the environment (CLI) or a CloudProvider's credentials
 * Secret (operator). Values are never logged; errors name the variable or key, not its value.
 *
 * Secret keys (decoded `data` values) for `spec.storage.credentialsSecretRef`:
 * - Azure Blob: `connectionString`, or `accountKey` (for spec.storage.azureBlob.account), or
 *   `sas` (a container or account SAS token, without the leading `?`).
 * - S3-compatible (OCI Customer Secret Keys): `accessKeyId` and `secretAccessKey`, optional
 *   `sessionToken`.
 */
import type { CloudProvider } from "../api/v1alpha1/index.ts";
import {
  normalisePrefix,
  type ObjectStore,
  type StoreCredentials,
  StoreError,
  type StoreLocation,
} from "./store.ts";

export const SECRET_KEYS = {
  azure: ["connectionString", "accountKey", "sas"],
  s3: ["accessKeyId", "secretAccessKey", "sessionToken"],
} as const;

/** Credentials from the usual SDK environment variables. */
export function credentialsFromEnv(env: NodeJS.ProcessEnv = process.env): StoreCredentials {
  const pick = (v: string | undefined) => (v && v.length > 0 ? v : undefined);
  const cs = pick(env.AZURE_STORAGE_CONNECTION_STRING);
  const key = pick(env.AZURE_STORAGE_KEY);
  const sas = pick(env.AZURE_STORAGE_SAS_TOKEN);
  const id = pick(env.AWS_ACCESS_KEY_ID);
  const secret = pick(env.AWS_SECRET_ACCESS_KEY);
  const token = pick(env.AWS_SESSION_TOKEN);
  return {
    azure: {
      ...(cs ? { connectionString: cs } : {}),
      ...(key ? { accountKey: key } : {}),
      ...(sas ? { sas } : {}),
    },
    s3: {
      ...(id ? { accessKeyId: id } : {}),
      ...(secret ? { secretAccessKey: secret } : {}),
      ...(token ? { sessionToken: token } : {}),
    },
  };
}

/** Maps a CloudProvider's spec.storage and its Secret's data to a store location and credentials. */
export function locationForProvider(
  provider: CloudProvider,
  secretData: Record<string, string>,
  prefix: string,
): { location: StoreLocation; credentials: StoreCredentials } {
  const storage = provider.spec.storage;
  const name = provider.metadata?.name ?? "?";
  if (!storage) throw new StoreError("InvalidUri", `CloudProvider ${name} has no spec.storage`);
  let p: string;
  try {
    p = normalisePrefix(prefix);
  } catch (e) {
    throw new StoreError("InvalidUri", `invalid prefix for CloudProvider ${name}: ${(e as Error).message}`);
  }
  const get = (k: string) => (secretData[k] && secretData[k]!.length > 0 ? secretData[k] : undefined);
  if (storage.azureBlob) {
    const a = storage.azureBlob;
    const connectionString = get("connectionString");
    const accountKey = get("accountKey");
    const sas = get("sas");
    return {
      location: {
        kind: "azblob",
        account: a.account,
        container: a.container,
        prefix: p,
        ...(a.endpoint ? { endpoint: a.endpoint } : {}),
      },
      credentials: {
        azure: {
          ...(connectionString ? { connectionString } : {}),
          ...(accountKey ? { accountKey } : {}),
          ...(sas ? { sas } : {}),
        },
      },
    };
  }
  if (storage.s3) {
    const b = storage.s3;
    const accessKeyId = get("accessKeyId");
    const secretAccessKey = get("secretAccessKey");
    const sessionToken = get("sessionToken");
    return {
      location: {
        kind: "s3",
        bucket: b.bucket,
        prefix: p,
        endpoint: b.endpoint,
        region: b.region ?? "us-east-1",
      },
      credentials: {
        s3: {
          ...(accessKeyId ? { accessKeyId } : {}),
          ...(secretAccessKey ? { secretAccessKey } : {}),
          ...(sessionToken ? { sessionToken } : {}),
        },
      },
    };
  }
  throw new StoreError("InvalidUri", `CloudProvider ${name}: spec.storage names no store`);
}

/** The ObjectStore for `prefix` in a CloudProvider's object store. */
export async function storeForProvider(
  provider: CloudProvider,
  secretData: Record<string, string>,
  prefix: string,
): Promise<ObjectStore> {
  const { location, credentials } = locationForProvider(provider, secretData, prefix);
  const { openLocation } = await import("./open.ts");
  return openLocation(location, credentials);
}
