/**
 * The whole sandbox on one machine, no cloud account: the management cluster's API server
 * (with Spillway's CRDs applied), the simulated AKS cluster of the primary, the real storage
 * emulators (Azurite for Azure Blob, s3rver for OCI's S3 API), optionally the simulated Azure
 * Resource Manager, and the sandbox provisioner that stands up OCI clusters.
 *
 * Everything lives under the state directory, so a restarted sandbox finds its objects,
 * blobs, buckets and provisioned clusters again:
 *   kubeconfig               the management cluster's kubeconfig (what `kubectl` uses)
 *   sandbox.json             ports of the last run, reused when free (endpoints stay stable
 *                            for objects that recorded them, e.g. CloudProvider storage)
 *   sandbox.pid              the running sandbox (one per state directory)
 *   management/              management API server objects
 *   clusters/aks/            the AKS cluster's objects; its kubeconfig is clusters/aks/kubeconfig
 *   azurite/, s3rver/        emulator data
 *   provisioner/             stacks provisioned on the alternative cloud and their clusters
 *
 * `stop()` stops all of it, in reverse order; when it resolves, no child process is left and
 * every port is free.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import {
  ApiException,
  type KubeConfig,
  type KubernetesObject,
  KubernetesObjectApi,
} from "@kubernetes/client-node";
import { parseAllDocuments } from "yaml";
import { KubeClient } from "../runtime/client.ts";
import type { KubeObject, ResourceType } from "../runtime/resources.ts";
import { startApiServer } from "./apiserver/index.ts";
import { clientKubeconfig, kubeConfigFromYaml } from "./cluster/kubeconfig.ts";
import { SimulatedCluster } from "./cluster/simulated-cluster.ts";
import { AzuriteEmulator } from "./emulators/azurite.ts";
import { freePort } from "./emulators/child.ts";
import { S3rverEmulator } from "./emulators/s3rver.ts";
import { SandboxProvisioner } from "./provisioner.ts";
import { type Scenario, scenarioTimingsMs } from "./scenario.ts";

export const SANDBOX_FIELD_MANAGER = "spillway-sandbox";

/** A running ARM emulator, as the sandbox needs it. */
export interface ArmEmulatorHandle {
  url: string;
  close(): Promise<void>;
}

/** What the sandbox hands the ARM emulator's starter. */
export interface ArmEmulatorLaunch {
  /** The scenario's `clouds.azure.arm` section, as written. */
  scenario: Record<string, unknown>;
  /** Azure region of the primary. */
  region: string;
  port: number;
  /** Directory the emulator may keep state in. */
  stateDir: string;
}

/** What `spillway sandbox --demo` passes to `runDemo(sandbox, opts)` of `demo.ts`. */
export interface DemoOptions {
  /** Aborted when the user stops the sandbox (SIGINT/SIGTERM). */
  signal: AbortSignal;
  /** Writes one line of the story to the terminal. */
  out: (line: string) => void;
}

export interface SandboxOptions {
  /** Everything the sandbox keeps (see the file comment); created when missing. */
  stateDir: string;
  scenario: Scenario;
  /** Directory of the CRD files applied to the management cluster; default: the package's `crds/`. */
  crdsDir?: string;
  /**
   * Starts the simulated Azure Resource Manager (`operator/sandbox/arm`). Passed in rather
   * than imported so the sandbox runs (without ARM endpoints) where that module is absent.
   */
  startArm?: (launch: ArmEmulatorLaunch) => Promise<ArmEmulatorHandle>;
  /** Progress lines ("starting azurite …"); default: none. */
  log?: (line: string) => void;
  /** Errors the simulated kubelets retry; default: none. */
  onClusterError?: (cluster: string, e: unknown) => void;
}

export interface SandboxManagement {
  url: string;
  /** `<stateDir>/kubeconfig`. */
  kubeconfigPath: string;
  kubeconfig(): string;
  kubeConfig(): KubeConfig;
}

export interface SandboxAks {
  cluster: SimulatedCluster;
  /** `<stateDir>/clusters/aks/kubeconfig`. */
  kubeconfigPath: string;
  kubeconfig(): string;
}

/** Azurite: Azure Blob of the primary. The account key is Azurite's published dev key. */
export interface SandboxAzureStorage {
  emulator: AzuriteEmulator;
  blobEndpoint: string;
  accountName: string;
  accountKey: string;
  connectionString: string;
  container: string;
}

/** s3rver: the alternative's S3-compatible Object Storage. Its keys are s3rver's fixed ones. */
export interface SandboxS3Storage {
  emulator: S3rverEmulator;
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  bucket: string;
}

export interface Sandbox {
  readonly stateDir: string;
  readonly scenario: Scenario;
  readonly management: SandboxManagement;
  readonly aks: SandboxAks;
  readonly azureStorage: SandboxAzureStorage;
  readonly s3Storage: SandboxS3Storage;
  /** The ARM emulator's base URL, when `startArm` was given. */
  readonly armUrl?: string;
  readonly provisioner: SandboxProvisioner;
  /** Stops everything; idempotent. No child process or port is left when it resolves. */
  stop(): Promise<void>;
}

interface SavedPorts {
  management?: number;
  aks?: number;
  azurite?: number;
  s3?: number;
  arm?: number;
}

export class SandboxError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "SandboxError";
  }
}

export async function startSandbox(opts: SandboxOptions): Promise<Sandbox> {
  const stateDir = resolve(opts.stateDir);
  const log = opts.log ?? (() => {});
  mkdirSync(stateDir, { recursive: true });
  const releasePid = claimStateDir(stateDir);
  const saved = readPorts(stateDir);
  const ports: SavedPorts = {};
  // Started parts, stopped in reverse order by `stop` or by a failed start.
  const stops: Array<{ name: string; stop: () => Promise<void> }> = [];
  let stopping: Promise<void> | undefined;
  const stopAll = (): Promise<void> => {
    stopping ??= (async () => {
      const failures: string[] = [];
      for (const part of stops.splice(0).reverse()) {
        try {
          await part.stop();
        } catch (e) {
          failures.push(`${part.name}: ${(e as Error).message}`);
        }
      }
      releasePid();
      if (failures.length > 0) throw new SandboxError(`sandbox stop: ${failures.join("; ")}`);
    })();
    return stopping;
  };

  try {
    const { scenario } = opts;
    const timings = scenarioTimingsMs(scenario);
    const azure = scenario.clouds.azure;
    const oci = scenario.clouds.oci;

    // The four servers do not depend on each other: start them together (the emulators are
    // child processes whose start-up is mostly loading their modules).
    const startManagement = async () => {
      log("starting the management cluster's API server");
      const server = await startOnPreferredPort(saved.management, (port) =>
        startApiServer({ name: "management", port, stateDir: join(stateDir, "management") }),
      );
      stops.push({ name: "management API server", stop: () => server.close() });
      ports.management = portOf(server.url);
      const kubeconfigPath = join(stateDir, "kubeconfig");
      const kubeconfig = () => clientKubeconfig(server.kubeconfig());
      const api: SandboxManagement = {
        url: server.url,
        kubeconfigPath,
        kubeconfig,
        kubeConfig: () => kubeConfigFromYaml(kubeconfig()),
      };
      const crdsDir = opts.crdsDir ?? findCrdsDir();
      log(`applying CRDs from ${crdsDir}`);
      await applyManifests(api.kubeConfig(), crdFiles(crdsDir));
      // Written last: a kubeconfig on disk means a management cluster that serves Spillway's kinds.
      writePrivate(kubeconfigPath, kubeconfig());
      return api;
    };
    const startAks = async () => {
      log(`starting the simulated AKS cluster (${describeSize(azure.cluster)})`);
      const cluster = await startOnPreferredPort(saved.aks, (port) =>
        SimulatedCluster.start({
          name: "aks",
          pools: [
            {
              name: azure.arm.nodePool === undefined ? "gpu" : String(azure.arm.nodePool),
              ...azure.cluster,
              instanceType: azure.capacity.find((c) => c.type === azure.cluster.gpuType)?.sku,
            },
          ],
          region: azure.region,
          ...timings,
          port,
          stateDir: join(stateDir, "clusters", "aks"),
          onError: (e) => opts.onClusterError?.("aks", e),
        }),
      );
      stops.push({ name: "AKS cluster", stop: () => cluster.stop() });
      ports.aks = cluster.port;
      return cluster;
    };
    const startAzurite = async () => {
      log("starting Azurite (Azure Blob)");
      const emulator = await AzuriteEmulator.start({
        dir: join(stateDir, "azurite"),
        port: await preferredPort(saved.azurite),
        containers: [azure.storage.container],
      });
      stops.push({ name: "azurite", stop: () => emulator.stop() });
      ports.azurite = emulator.port;
      return emulator;
    };
    const startS3 = async () => {
      log("starting s3rver (OCI Object Storage, S3 API)");
      const emulator = await S3rverEmulator.start({
        dir: join(stateDir, "s3rver"),
        port: await preferredPort(saved.s3),
        buckets: [oci.storage.bucket],
      });
      stops.push({ name: "s3rver", stop: () => emulator.stop() });
      ports.s3 = emulator.port;
      return emulator;
    };
    const [managementApi, aksCluster, azurite, s3] = await allOrFirstError([
      startManagement(),
      startAks(),
      startAzurite(),
      startS3(),
    ] as const);
    const aksKubeconfigPath = join(stateDir, "clusters", "aks", "kubeconfig");
    aksCluster.writeKubeconfig(aksKubeconfigPath);

    let armUrl: string | undefined;
    if (opts.startArm) {
      log("starting the Azure Resource Manager emulator");
      const arm = await opts.startArm({
        scenario: azure.arm,
        region: azure.region,
        port: await preferredPort(saved.arm),
        stateDir: join(stateDir, "arm"),
      });
      stops.push({ name: "ARM emulator", stop: () => arm.close() });
      armUrl = arm.url;
      ports.arm = portOf(arm.url);
    }

    log("opening the sandbox provisioner");
    const provisioner = await SandboxProvisioner.open({
      stateDir: join(stateDir, "provisioner"),
      cloud: oci,
      ...timings,
      s3Endpoint: s3.endpoint,
      onClusterError: opts.onClusterError,
    });
    stops.push({ name: "provisioner", stop: () => provisioner.close() });
    writePorts(stateDir, ports);

    return {
      stateDir,
      scenario,
      management: managementApi,
      aks: {
        cluster: aksCluster,
        kubeconfigPath: aksKubeconfigPath,
        kubeconfig: () => aksCluster.kubeconfig(),
      },
      azureStorage: {
        emulator: azurite,
        blobEndpoint: azurite.blobEndpoint,
        accountName: azurite.accountName,
        accountKey: azurite.accountKey,
        connectionString: azurite.connectionString,
        container: azure.storage.container,
      },
      s3Storage: {
        emulator: s3,
        endpoint: s3.endpoint,
        region: s3.region,
        accessKeyId: s3.accessKeyId,
        secretAccessKey: s3.secretAccessKey,
        bucket: oci.storage.bucket,
      },
      armUrl,
      provisioner,
      stop: stopAll,
    };
  } catch (e) {
    await stopAll().catch(() => undefined);
    throw e;
  }
}

// ---------------------------------------------------------------- CRDs

/** The package's `crds/` directory, found upwards from this module (source and dist layouts). */
export function findCrdsDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, "crds");
    if (existsSync(join(dir, "package.json")) && existsSync(candidate)) return candidate;
    const parent = dirname(dir);
    if (parent === dir) throw new SandboxError("cannot find the crds/ directory of the Spillway package");
    dir = parent;
  }
}

function crdFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f))
    .sort()
    .map((f) => join(dir, f));
}

/**
 * Creates every object of the files, or replaces it when it exists (so a restarted sandbox
 * picks up regenerated CRDs). Replace rather than server-side apply: the sandbox is the only
 * writer of these objects, and a replace needs nothing of the server beyond the basic verbs.
 */
const CRD_RESOURCE: ResourceType = {
  group: "apiextensions.k8s.io",
  version: "v1",
  kind: "CustomResourceDefinition",
  plural: "customresourcedefinitions",
  namespaced: false,
};

/** Create, or replace at the current resourceVersion, with the object's JSON as written. */
async function applyRaw(kc: KubeConfig, r: ResourceType, obj: KubeObject): Promise<void> {
  const client = new KubeClient(kc, { rateLimit: { qps: 1000, burst: 1000 } });
  const current = await client.tryGet(r, obj.metadata.name!, obj.metadata.namespace);
  if (!current) {
    await client.create(r, obj);
    return;
  }
  await client.update(r, {
    ...obj,
    metadata: { ...obj.metadata, resourceVersion: current.metadata.resourceVersion },
  });
}

export async function applyManifests(kc: KubeConfig, files: string[]): Promise<void> {
  const api = KubernetesObjectApi.makeApiClient(kc);
  for (const file of files) {
    for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
      const obj = doc.toJS() as KubernetesObject | null;
      if (!obj?.kind) continue;
      if (obj.kind === "CustomResourceDefinition") {
        // Raw JSON: client-node's typed model would drop the schemas' `default`s.
        await applyRaw(kc, CRD_RESOURCE, obj as KubeObject);
        continue;
      }
      let current: KubernetesObject | undefined;
      try {
        current = await api.read({
          apiVersion: obj.apiVersion!,
          kind: obj.kind,
          metadata: { name: obj.metadata?.name ?? "", namespace: obj.metadata?.namespace },
        });
      } catch (e) {
        if (!(e instanceof ApiException && e.code === 404)) throw e;
      }
      if (!current) {
        await api.create(obj, undefined, undefined, SANDBOX_FIELD_MANAGER);
        continue;
      }
      const metadata = { ...obj.metadata, resourceVersion: current.metadata?.resourceVersion };
      await api.replace({ ...obj, metadata }, undefined, undefined, SANDBOX_FIELD_MANAGER);
    }
  }
}

// ---------------------------------------------------------------- ports and state directory

/** Like Promise.all, but waits for every promise to settle, so nothing is still starting after a failure. */
async function allOrFirstError<T extends readonly unknown[]>(
  promises: { [K in keyof T]: Promise<T[K]> },
): Promise<T> {
  const results = await Promise.allSettled(promises);
  const failed = results.find((r) => r.status === "rejected");
  if (failed) throw (failed as PromiseRejectedResult).reason;
  return results.map((r) => (r as PromiseFulfilledResult<unknown>).value) as unknown as T;
}

function portOf(url: string): number {
  return Number(new URL(url).port);
}

/** The saved port when nobody holds it, else a free one. */
async function preferredPort(saved: number | undefined): Promise<number> {
  if (saved !== undefined && (await bindable(saved))) return saved;
  return freePort();
}

async function startOnPreferredPort<T>(
  saved: number | undefined,
  start: (port?: number) => Promise<T>,
): Promise<T> {
  if (saved !== undefined && (await bindable(saved))) {
    try {
      return await start(saved);
    } catch (e) {
      // Taken between the check and the bind: any free port will do.
      if ((e as NodeJS.ErrnoException).code !== "EADDRINUSE") throw e;
    }
  }
  return start(undefined);
}

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once("error", () => resolve(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
}

/**
 * `sandbox --demo` tells its story from a clean slate: the state of a previous sandbox in
 * `stateDir` (its runs, clusters, stored data) would make the demo's fixed names collide.
 * It is moved aside to `<stateDir>.previous` (replacing an older one), not deleted. Refuses
 * while a sandbox still serves from it (its management API port answers). Returns what it did.
 */
export async function setAsidePreviousState(stateDir: string): Promise<string | undefined> {
  if (!existsSync(stateDir) || readdirSync(stateDir).length === 0) return undefined;
  const port = readPorts(stateDir).management;
  if (port !== undefined && !(await bindable(port)))
    throw new Error(
      `a sandbox is still running from ${stateDir} (its management API holds port ${port}); stop it first`,
    );
  const aside = `${stateDir.replace(/\/+$/, "")}.previous`;
  rmSync(aside, { recursive: true, force: true });
  renameSync(stateDir, aside);
  return `the demo starts from a fresh sandbox: the previous state is in ${aside}`;
}

function readPorts(stateDir: string): SavedPorts {
  try {
    return (
      (JSON.parse(readFileSync(join(stateDir, "sandbox.json"), "utf8")) as { ports?: SavedPorts }).ports ?? {}
    );
  } catch {
    return {};
  }
}

function writePorts(stateDir: string, ports: SavedPorts): void {
  writeFileSync(join(stateDir, "sandbox.json"), `${JSON.stringify({ ports }, null, 2)}\n`);
}

function writePrivate(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text, { mode: 0o600 });
}

/** State directories claimed by sandboxes of this process (the pid file cannot tell them apart). */
const claimedHere = new Set<string>();

/**
 * One sandbox per state directory: two would write the same files and fight over the
 * persisted objects. A pid file left by a killed sandbox is taken over.
 */
function claimStateDir(stateDir: string): () => void {
  const pidFile = join(stateDir, "sandbox.pid");
  if (claimedHere.has(stateDir)) {
    throw new SandboxError(`another sandbox (pid ${process.pid}) is using ${stateDir}`);
  }
  let other = 0;
  try {
    other = Number(readFileSync(pidFile, "utf8").trim());
  } catch {
    // no pid file: nobody has it
  }
  if (other > 0 && other !== process.pid && pidAlive(other)) {
    throw new SandboxError(`another sandbox (pid ${other}) is using ${stateDir}`);
  }
  writeFileSync(pidFile, `${process.pid}\n`);
  claimedHere.add(stateDir);
  return () => {
    claimedHere.delete(stateDir);
    rmSync(pidFile, { force: true });
  };
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

function describeSize(c: { nodes: number; gpusPerNode: number; gpuType: string }): string {
  return `${c.nodes} nodes × ${c.gpusPerNode} ${c.gpuType}`;
}
