/** Store URIs → StoreLocation → ObjectStore. Secrets in URIs (`sas`) are split off and redacted. */
import { isAbsolute, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import {
  normalisePrefix,
  type ObjectStore,
  type StoreCredentials,
  StoreError,
  type StoreLocation,
} from "./store.ts";

const SECRET_PARAMS = ["sas", "sig", "key", "accountkey", "secret", "token"];

/** Replaces secret query parameters (sas, sig, …) and any userinfo in a URI with `***`. */
export function redactUri(uri: string): string {
  return uri
    .replace(/\/\/[^/@?#]*@/, "//***@")
    .replace(/([?&])([^=&#]+)=([^&#]*)/g, (m, sep: string, name: string) =>
      SECRET_PARAMS.includes(name.toLowerCase()) ? `${sep}${name}=***` : m,
    );
}

function bad(message: string): never {
  throw new StoreError("InvalidUri", message);
}

/** Parses a store URI; throws StoreError("InvalidUri") with a one-line message naming the problem. */
export function parseStoreUri(uri: string): StoreLocation {
  const shown = redactUri(uri);
  const m = /^([a-z][a-z0-9+.-]*):\/\//i.exec(uri);
  if (!m) bad(`not a store URI (want azblob://, s3:// or file://): ${shown}`);
  const scheme = m[1]!.toLowerCase();
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    bad(`malformed URI: ${shown}`);
  }
  const q = url.searchParams;
  const endpoint = q.get("endpoint") ?? undefined;
  if (endpoint !== undefined) {
    try {
      const e = new URL(endpoint);
      if (e.protocol !== "http:" && e.protocol !== "https:") bad(`endpoint must be http(s): ${shown}`);
    } catch (e) {
      if (e instanceof StoreError) throw e;
      bad(`malformed endpoint in ${shown}`);
    }
  }
  const path = decodeURIComponent(url.pathname).replace(/^\/+/, "");
  const prefixOf = (p: string) => {
    try {
      return normalisePrefix(p);
    } catch (e) {
      bad(`invalid prefix in ${shown}: ${(e as Error).message}`);
    }
  };
  switch (scheme) {
    case "azblob": {
      const account = url.hostname;
      if (!/^[a-z0-9]{3,24}$/.test(account)) bad(`invalid Azure storage account in ${shown}`);
      const [container = "", ...rest] = path.split("/");
      if (!/^[a-z0-9]([a-z0-9-]{1,61}[a-z0-9])$/.test(container))
        bad(`missing or invalid container in ${shown} (want azblob://<account>/<container>/<prefix>)`);
      return {
        kind: "azblob",
        account,
        container,
        prefix: prefixOf(rest.join("/")),
        ...(endpoint ? { endpoint } : {}),
        ...(q.get("sas") ? { sas: q.get("sas")! } : {}),
      };
    }
    case "s3": {
      const bucket = url.hostname;
      if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket))
        bad(`missing or invalid bucket in ${shown} (want s3://<bucket>/<prefix>)`);
      return {
        kind: "s3",
        bucket,
        prefix: prefixOf(path),
        ...(endpoint ? { endpoint } : {}),
        region: q.get("region") ?? "us-east-1",
      };
    }
    case "file": {
      if (url.hostname !== "" && url.hostname !== "localhost") bad(`file URIs take no host: ${shown}`);
      let root: string;
      try {
        root = fileURLToPath(`file://${url.pathname}`);
      } catch {
        bad(`malformed file URI: ${shown}`);
      }
      if (!isAbsolute(root)) bad(`file URI must be absolute: ${shown}`);
      return { kind: "file", root: resolve(root), prefix: "" };
    }
    default:
      bad(`unknown scheme '${scheme}' (want azblob, s3 or file): ${shown}`);
  }
}

/** Display form of a location: no secrets. */
export function displayLocation(loc: StoreLocation): string {
  switch (loc.kind) {
    case "azblob":
      return `azblob://${loc.account}/${loc.container}/${loc.prefix}${loc.endpoint ? `?endpoint=${loc.endpoint}` : ""}`;
    case "s3":
      return `s3://${loc.bucket}/${loc.prefix}${loc.endpoint ? `?endpoint=${loc.endpoint}` : ""}`;
    case "file":
      return `file://${loc.root}`;
  }
}

export async function openLocation(
  uri: string | StoreLocation,
  credentials: StoreCredentials,
): Promise<ObjectStore> {
  const loc = typeof uri === "string" ? parseStoreUri(uri) : uri;
  switch (loc.kind) {
    case "file": {
      const { FileStore } = await import("./file.ts");
      return new FileStore(loc.root, loc.prefix);
    }
    case "s3": {
      const { S3Store } = await import("./s3.ts");
      return S3Store.open(loc, credentials.s3 ?? {});
    }
    case "azblob": {
      const { AzureBlobStore } = await import("./azure.ts");
      return AzureBlobStore.open(loc, credentials.azure ?? {});
    }
  }
}
