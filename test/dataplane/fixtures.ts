/** Emulators and stores for data-plane tests: one Azurite and one s3rver per test file. */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type ObjectStore,
  openStore,
  type StoreCredentials,
  StoreError,
} from "../../operator/dataplane/index.ts";
import { readAll } from "../../operator/dataplane/manifest.ts";
import { AzuriteEmulator, S3rverEmulator } from "../../operator/sandbox/emulators/index.ts";

export interface Emulators {
  dir: string;
  azurite: AzuriteEmulator;
  s3: S3rverEmulator;
  credentials: StoreCredentials;
  /** `azblob://devstoreaccount1/<container>/<prefix>?endpoint=…` */
  azUri(container: string, prefix?: string): string;
  s3Uri(bucket: string, prefix?: string): string;
  fileUri(sub: string): string;
  open(uri: string): Promise<ObjectStore>;
  /** Creates a fresh container in Azurite and a bucket in s3rver with this name. */
  containers(name: string): Promise<void>;
  stop(): Promise<void>;
}

export async function startEmulators(): Promise<Emulators> {
  const dir = mkdtempSync(join(tmpdir(), "spillway-dp-"));
  const [azurite, s3] = await Promise.all([
    AzuriteEmulator.start({ dir: join(dir, "azurite") }),
    S3rverEmulator.start({ dir: join(dir, "s3rver") }),
  ]);
  const credentials: StoreCredentials = {
    azure: { connectionString: azurite.connectionString },
    s3: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
  };
  const q = (s: string) => encodeURIComponent(s);
  return {
    dir,
    azurite,
    s3,
    credentials,
    azUri: (c, p = "") => `azblob://${azurite.accountName}/${c}/${p}?endpoint=${q(azurite.blobEndpoint)}`,
    s3Uri: (b, p = "") => `s3://${b}/${p}?endpoint=${q(s3.endpoint)}&region=${s3.region}`,
    fileUri: (sub) => `file://${join(dir, "files", sub)}`,
    open: (uri) => openStore(uri, credentials),
    async containers(name) {
      await Promise.all([azurite.createContainer(name), s3.createBucket(name)]);
    },
    async stop() {
      await Promise.all([azurite.stop(), s3.stop()]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Every data object (not Spillway's `.spillway/` files) of a store, as key → content. */
export async function contents(store: ObjectStore): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for await (const o of store.list()) {
    if (o.key.startsWith(".spillway/")) continue;
    out.set(o.key, await readAll(await store.read(o.key)));
  }
  return out;
}

export async function putAll(store: ObjectStore, objects: Record<string, string | Buffer>): Promise<void> {
  for (const [k, v] of Object.entries(objects)) await store.put(k, Buffer.from(v));
}

/** Where a StoreError-returning promise fails: its code, or "resolved". */
export async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "resolved";
  } catch (e) {
    return e instanceof StoreError ? e.code : `not a StoreError: ${String(e)}`;
  }
}

/** A child process run to its end: its exit code and what it wrote. */
export function runNode(
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, args, {
    env: options.env ?? process.env,
    ...(options.cwd ? { cwd: options.cwd } : {}),
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  return new Promise((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr })));
}
