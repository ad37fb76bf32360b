/**
 * A process whose Azure store has an account key or a SAS never loads `@azure/storage-blob` or
 * `@azure/core-rest-pipeline` for what a sync does with small objects: the container check,
 * puts, listings, reads, deletes, and whole syncs into Azure (journal segments written and
 * dropped, the manifest read and written, a no-op resync, `--delete`). Each case runs
 * azure-sdk-probe.ts in its own process (a module loaded once stays loaded), which reports the
 * `@azure/` modules it resolved; with SPILLWAY_STORE_SDK_ONLY=1 the same work must load the SDK,
 * which shows the probe sees it when it is there.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  ContainerSASPermissions,
  generateBlobSASQueryParameters,
  SASProtocol,
  StorageSharedKeyCredential,
} from "@azure/storage-blob";
import { AzuriteEmulator } from "../../operator/sandbox/emulators/index.ts";
import { runNode } from "./fixtures.ts";

const here = join(fileURLToPath(import.meta.url), "..");
const root = join(here, "..", "..");

interface Probe {
  azureModules: string[];
  /** How many resolutions the hook saw (the data plane's own modules among them). */
  modules: number;
  listed: string[];
  read: string;
  headed: (number | null)[];
  syncs: { complete: boolean; copied: number; skipped: number }[];
  copied: string;
}

let dir: string;
let azurite: AzuriteEmulator;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "spillway-azfree-"));
  azurite = await AzuriteEmulator.start({ dir, containers: ["key", "sas", "sdk"] });
});
afterAll(async () => {
  await azurite.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** Runs the probe against `container` with the given credentials and switches. */
function probe(
  container: string,
  credentials: { key?: string; sas?: string },
  sdkOnly = false,
): Promise<Probe> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  // The route under test is the one a sync takes without a proxy or the SDK switch.
  for (const v of ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "SPILLWAY_STORE_SDK_ONLY"])
    delete env[v];
  Object.assign(env, {
    PROBE_ENDPOINT: azurite.blobEndpoint,
    PROBE_ACCOUNT: azurite.accountName,
    PROBE_CONTAINER: container,
    ...(credentials.key ? { PROBE_KEY: credentials.key } : {}),
    ...(credentials.sas ? { PROBE_SAS: credentials.sas } : {}),
    ...(sdkOnly ? { SPILLWAY_STORE_SDK_ONLY: "1" } : {}),
  });
  return runNode(["--import", "tsx", join(here, "azure-sdk-probe.ts")], { cwd: root, env }).then(
    ({ code, stdout, stderr }) => {
      if (code !== 0) throw new Error(`probe exited ${code}: ${stderr}`);
      return JSON.parse(stdout.trim().split("\n").at(-1)!) as Probe;
    },
  );
}

/** What the probe's work must return whichever route it took. */
const work = {
  listed: ["a.txt", "b/c.bin"],
  read: "alpha",
  headed: [70_000, null],
  syncs: [
    { complete: true, copied: 2, skipped: 0 },
    { complete: true, copied: 0, skipped: 2 },
    { complete: true, copied: 1, skipped: 1 },
  ],
  copied: "alpha two",
};

describe("a process working an Azure store", () => {
  it("with an account key loads neither @azure/storage-blob nor @azure/core-rest-pipeline", async () => {
    const { modules, ...r } = await probe("key", { key: azurite.accountKey });
    expect(r).toEqual({ ...work, azureModules: [] });
    expect(modules).toBeGreaterThan(20);
  });

  it("with a SAS in the URI loads neither", async () => {
    const sas = generateBlobSASQueryParameters(
      {
        containerName: "sas",
        permissions: ContainerSASPermissions.parse("racwdl"),
        expiresOn: new Date(Date.now() + 3600_000),
        protocol: SASProtocol.HttpsAndHttp,
      },
      new StorageSharedKeyCredential(azurite.accountName, azurite.accountKey),
    ).toString();
    const { modules, ...r } = await probe("sas", { sas });
    expect(r).toEqual({ ...work, azureModules: [] });
    expect(modules).toBeGreaterThan(20);
  });

  it("with SPILLWAY_STORE_SDK_ONLY=1 does the same work through the SDK, which the probe sees loaded", async () => {
    const { azureModules, modules: _, ...rest } = await probe("sdk", { key: azurite.accountKey }, true);
    expect(rest).toEqual(work);
    expect(azureModules.some((u) => u.includes("/@azure/storage-blob/"))).toBe(true);
    expect(azureModules.some((u) => u.includes("/@azure/core-rest-pipeline/"))).toBe(true);
  });
});
