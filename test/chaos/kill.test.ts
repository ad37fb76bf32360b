/**
 * Chaos: the operator as its own OS process, killed with SIGKILL 30 times at seeded random
 * moments inside its flows and restarted each time:
 * - provisioning: a ProvisionedCluster's Pulumi-style `up` in progress (the sandbox
 *   provisioner lives in the operator process, so the kill leaves the stack locked);
 * - placement: an offer made, answered, a run placed, a Job dispatched, while runs arrive;
 * - staging: a DataSet replica syncing from Azure Blob (Azurite) to S3 (s3rver) for a run;
 * - checkpoints: a just-committed checkpoint being mirrored to Azure while its run runs on
 *   OCI, and replicated to Azure after the run's cluster was lost and the run moved.
 * Each kill waits for its stage to be visible in the API, then waits a random 0–N ms. The
 * seed (`CHAOS_SEED`) and every kill point are printed, so a failure can be replayed.
 * After the last restart every invariant is checked from the objects: every run Succeeded;
 * one offer per attempt; at most one `Placed` Event per attempt and each attempt's Job seen
 * on one cluster at most (the final attempt's on the placed one); no remote Job left on any
 * cluster; every stack has its ProvisionedCluster, every Ready one its stack, none locked;
 * every reservation released;
 * every dataset replica object and every replicated checkpoint file sha256-equal to its source.
 */
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import type { CloudProvider, DataSet, ProvisionedCluster } from "../../operator/api/v1alpha1/index.ts";
import { uploadCheckpoint } from "../../operator/checkpoints/index.ts";
import { META_PREFIX, readAll } from "../../operator/dataplane/manifest.ts";
import { withRetry } from "../../operator/dataplane/retry.ts";
import { type ObjectStore, openStore } from "../../operator/dataplane/store.ts";
import { type KubeObject, Resources, SpillwayResources } from "../../operator/runtime/resources.ts";
import { SIM_DURATION_ENV, SimulatedCluster } from "../../operator/sandbox/cluster/index.ts";
import { freePort } from "../../operator/sandbox/emulators/child.ts";
import { checkpointName } from "../../operator/sandbox/trainer/trainer.ts";
import { OPERATOR_NAMESPACE } from "../../operator/sandbox/wiring.ts";
import { trainerCheckpoint } from "../checkpoints/fixtures.ts";
import {
  AZURE_SKU,
  type E2E,
  eventually,
  type Offer,
  type Run,
  remoteJobs,
  startE2E,
  testScenario,
  trainingRun,
} from "../e2e/harness.ts";
import { prng } from "../fuzz/gen.ts";
import { bundleOperator, ChaosOperator, writeConfig } from "./operator-process.ts";

const SEED = Number(process.env.CHAOS_SEED ?? 4242);
const NS = "ml-team";
const KiB = 1024;
const MiB = 1024 * KiB;
/** Kills per flow: 6 + 12 + 6 + 6 = 30. */
const KILLS = { provisioning: 6, placement: 12, staging: 6, checkpoint: 6 };
const DATASETS = KILLS.staging;
const CKPT_STEP = 40;
/** Keys of step 40's marker and manifest in a run's checkpoint store. */
const STEP_KEY = /(^|\/)checkpoints\/0*40\//;

type PC = ProvisionedCluster & KubeObject;
type DS = DataSet & KubeObject;

let e: E2E;
let dir: string;
let entry: string;
let configFile: string;
let op: ChaosOperator;
const ops: ChaosOperator[] = [];
const random = prng(SEED);
const kills: Array<{ n: number; flow: string; stage: string; reached: boolean; delayMs: number }> = [];

/** The alternative with an existing cluster in this process (the one the checkpoint runs lose). */
let fixed: SimulatedCluster;
let fixedPort: number;
const fixedDir = mkdtempSync(join(tmpdir(), "spillway-kill-fixed-"));
const startFixed = () =>
  SimulatedCluster.start({
    name: "oci-fixed",
    pools: [{ name: "gpu", nodes: 4, gpusPerNode: 8, gpuType: "H100" }],
    podStartupMs: 100,
    jobDurationMs: 1500,
    port: fixedPort,
    stateDir: fixedDir,
  });

/** cluster → run → attempts whose Job was seen there; and the checkpoint store each Job was given. */
const jobsSeen = new Map<string, Map<string, Set<string>>>();
const checkpointStores = new Map<string, string>();
const resumeSteps = new Map<string, string>();
let polling = true;
let poller: Promise<void> | undefined;

let t0 = Date.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** `p`, or nothing after `ms` — the timer cleared either way (no handle left for the runner). */
async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

function record(cluster: string, jobs: KubeObject[]): void {
  const byRun = jobsSeen.get(cluster) ?? new Map<string, Set<string>>();
  jobsSeen.set(cluster, byRun);
  for (const j of jobs) {
    const name = j.metadata.labels?.["spillway.dev/run-name"];
    if (!name) continue;
    const attempt = j.metadata.labels?.["spillway.dev/attempt"] ?? "?";
    const s = byRun.get(name) ?? new Set<string>();
    s.add(attempt);
    byRun.set(name, s);
    const env = (j as { spec?: any }).spec?.template?.spec?.containers?.[0]?.env as
      | Array<{ name: string; value?: string }>
      | undefined;
    const store = env?.find((x) => x.name === "SPILLWAY_CHECKPOINT_STORE")?.value;
    if (store) checkpointStores.set(`${cluster}/${name}/${attempt}`, store);
    const resume = env?.find((x) => x.name === "SPILLWAY_RESUME_STEP")?.value;
    if (resume) resumeSteps.set(`${cluster}/${name}/${attempt}`, resume);
  }
}

/** Kubeconfigs of the provisioned clusters, from the Secrets the operator wrote. */
async function provisionedKubeconfigs(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const pcs = await e.client.list<PC>(SpillwayResources.ProvisionedCluster, {});
  for (const pc of pcs.items) {
    const ref = (pc.status as { outputs?: { kubeconfigSecretRef?: { name: string } } } | undefined)?.outputs
      ?.kubeconfigSecretRef;
    if (!ref) continue;
    const s = await e.client
      .get<KubeObject & { data?: Record<string, string> }>(Resources.Secret, ref.name, OPERATOR_NAMESPACE)
      .catch(() => undefined);
    const kc = s?.data?.kubeconfig;
    if (kc) out.set(`pc/${pc.metadata.name}`, Buffer.from(kc, "base64").toString("utf8"));
  }
  return out;
}

async function allClusters(): Promise<Map<string, string>> {
  const m = await provisionedKubeconfigs().catch(() => new Map<string, string>());
  m.set("aks", e.sandbox.aks.kubeconfig());
  m.set("oci-fixed", fixed.kubeconfig());
  return m;
}

async function restart(): Promise<void> {
  op = new ChaosOperator(entry, configFile);
  ops.push(op);
  await op.started;
}

/**
 * One kill point: waits (up to `waitMs`) for `stage` to be visible, then a seeded random
 * 0–`maxDelayMs` ms, SIGKILLs the operator and starts a new one.
 */
async function killAt(
  flow: string,
  stage: string,
  reached: () => Promise<boolean>,
  maxDelayMs: number,
  waitMs = 15_000,
): Promise<void> {
  const delayMs = Math.floor(random() * maxDelayMs);
  const deadline = Date.now() + waitMs;
  let ok = false;
  while (Date.now() < deadline) {
    if (await reached().catch(() => false)) {
      ok = true;
      break;
    }
    await sleep(25);
  }
  await sleep(delayMs);
  const pid = op.pid;
  await op.kill("SIGKILL");
  const k = { n: kills.length + 1, flow, stage, reached: ok, delayMs };
  kills.push(k);
  const t = Date.now();
  await restart();
  process.stdout.write(
    `chaos kill #${k.n} CHAOS_SEED=${SEED} at ${((t - t0) / 1000).toFixed(1)} s, pid ${pid}: ${flow}/${stage} ${ok ? "reached" : "NOT reached"}, +${delayMs} ms; restarted in ${Date.now() - t} ms (${op.startTimings()})\n`,
  );
}

const runs = async (batch: string) =>
  (
    await e.client.list<Run>(SpillwayResources.TrainingRun, {
      namespace: NS,
      labelSelector: `batch=${batch}`,
    })
  ).items;
const allOffers = async () =>
  (await e.client.list<Offer>(SpillwayResources.CapacityOffer, { namespace: NS })).items;

function newRun(name: string, batch: string, mutate?: (r: Run) => void): Run {
  const run = trainingRun(name);
  run.metadata.labels = { ...run.metadata.labels, batch, chaos: "kill" };
  mutate?.(run);
  return run;
}

const azureStore = (prefix: string) =>
  openStore(
    {
      kind: "azblob",
      account: e.sandbox.azureStorage.accountName,
      container: e.sandbox.azureStorage.container,
      prefix,
      endpoint: e.sandbox.azureStorage.blobEndpoint,
    },
    { azure: { connectionString: e.sandbox.azureStorage.connectionString } },
  );
const s3Store = (prefix: string) =>
  openStore(
    {
      kind: "s3",
      bucket: e.sandbox.s3Storage.bucket,
      prefix,
      endpoint: e.sandbox.s3Storage.endpoint,
      region: e.sandbox.s3Storage.region,
    },
    {
      s3: {
        accessKeyId: e.sandbox.s3Storage.accessKeyId,
        secretAccessKey: e.sandbox.s3Storage.secretAccessKey,
      },
    },
  );
const storeCreds = () => ({
  azure: { connectionString: e.sandbox.azureStorage.connectionString },
  s3: { accessKeyId: e.sandbox.s3Storage.accessKeyId, secretAccessKey: e.sandbox.s3Storage.secretAccessKey },
});

/** sha256 of every object of a store (Spillway's own metadata keys left out unless asked). */
async function digests(store: ObjectStore, withMeta = false): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const o of store.list()) {
    if (!withMeta && o.key.startsWith(META_PREFIX)) continue;
    out.set(o.key, sha(await readAll(await store.read(o.key))));
  }
  return out;
}

/** Seeded objects of 128–512 KiB: a few MiB per dataset, a sync of a second or two here. */
function datasetObjects(i: number): Record<string, Buffer> {
  const r = prng(SEED + 1000 + i);
  const out: Record<string, Buffer> = {};
  for (let k = 0; k < 8; k++) {
    const size = 128 * KiB + Math.floor(r() * 384 * KiB);
    const b = Buffer.alloc(size);
    for (let j = 0; j + 4 <= size; j += 4) b.writeUInt32LE(Math.floor(r() * 2 ** 32), j);
    out[`part-${k}.bin`] = b;
  }
  return out;
}

beforeAll(async () => {
  process.stdout.write(`chaos kill suite: CHAOS_SEED=${SEED}\n`);
  e = await startE2E(
    testScenario((s) => {
      // Provisioning long enough for kills to land inside an `up`; room for every run at once.
      s.clouds.oci.provisioning = { ...s.clouds.oci.provisioning, latency: "2s", destroyLatency: "100ms" };
      s.clouds.oci.cluster = { ...s.clouds.oci.cluster, nodes: 12 };
      s.clouds.oci.maxClusters = 4;
      // Clusters are sized for the run that asked (one node): none goes idle during the test.
      s.clouds.oci.idleTTL = "10m";
    }),
  );
  dir = mkdtempSync(join(tmpdir(), "spillway-kill-"));
  [entry, fixedPort] = await Promise.all([bundleOperator(), freePort()]);
  fixed = await startFixed();
  await e.client.create(Resources.Secret, {
    metadata: { name: "oci-fixed-kubeconfig", namespace: OPERATOR_NAMESPACE },
    stringData: { kubeconfig: fixed.kubeconfig() },
  } as KubeObject);
  const ashburn = await e.client.get<CloudProvider & KubeObject>(
    SpillwayResources.CloudProvider,
    "oci-ashburn",
  );
  const fixedProvider = {
    apiVersion: "spillway.dev/v1alpha1",
    kind: "CloudProvider",
    metadata: { name: "oci-fixed" },
    spec: {
      ...structuredClone(ashburn.spec),
      cluster: {
        existing: { kubeconfigSecretRef: { name: "oci-fixed-kubeconfig", namespace: OPERATOR_NAMESPACE } },
      },
    },
  } as CloudProvider & KubeObject;
  await e.client.create(SpillwayResources.CloudProvider, fixedProvider);

  // The staging datasets' sources, on Azure Blob.
  const src = await azureStore("");
  for (let i = 0; i < DATASETS; i++) {
    // Retried like the data plane retries (a reused keep-alive socket Azurite has just closed
    // answers ECONNRESET; the store adapters leave retries to their callers).
    for (const [k, v] of Object.entries(datasetObjects(i)))
      await withRetry(() => src.put(`corpora/ds-${i}/${k}`, v));
  }

  configFile = writeConfig(dir, {
    kubeconfigPath: e.sandbox.management.kubeconfigPath,
    namespace: OPERATOR_NAMESPACE,
    origin: "e2e",
    arm: { ca: e.arm.ca, url: e.arm.url },
    provisioner: {
      stateDir: join(dir, "pulumi"),
      cloud: e.sandbox.scenario.clouds.oci,
      podStartupMs: 100,
      jobDurationMs: 1500,
      s3Endpoint: e.sandbox.s3Storage.endpoint,
    },
    // A declined run with no alternative free is offered again after 5 s, not 60 s.
    settings: { reofferBaseMs: 5_000, remotePollMs: 500, clusterLostTimeoutMs: 2_000 },
    collectIntervalMs: 1_000,
    logLevel: process.env.E2E_LOG ?? "info",
  });
  await restart();
  // Each cluster is asked in a loop of its own, each request with a time limit, so one that is
  // down or slow (a provisioned cluster dies with the operator process until the next one starts
  // it) delays no other: a Job lives ~1.5 s (jobDurationMs), and one round that waited for every
  // cluster once missed a Job on a live cluster (kp-stage-5, a loaded CI-like run). A cluster
  // whose kubeconfig changed gets a new loop; the old one ends.
  poller = (async () => {
    const current = new Map<string, string>();
    const loops: Promise<void>[] = [];
    while (polling) {
      const clusters = await allClusters().catch(() => new Map<string, string>());
      for (const [name, kc] of clusters) {
        if (current.get(name) === kc) continue;
        current.set(name, kc);
        loops.push(
          (async () => {
            while (polling && current.get(name) === kc) {
              await withTimeout(
                remoteJobs(kc).then(
                  (j) => record(name, j),
                  () => {},
                ),
                3_000,
              );
              await sleep(100);
            }
          })(),
        );
      }
      await sleep(250);
    }
    await Promise.allSettled(loops);
  })();
}, 180_000);

afterAll(async () => {
  polling = false;
  await poller;
  for (const o of ops) await o.kill("SIGKILL");
  await fixed?.stop();
  await e?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
  rmSync(fixedDir, { recursive: true, force: true });
  if (entry) rmSync(entry, { force: true });
}, 60_000);

describe("the operator process SIGKILLed inside its flows", () => {
  test(`${Object.values(KILLS).reduce((a, b) => a + b)} kills over provisioning, placement, staging and checkpoint replication: every invariant holds`, async () => {
    t0 = Date.now();
    const names: string[] = [];
    const create = async (run: Run) => {
      await e.client.create(SpillwayResources.TrainingRun, run);
      names.push(run.metadata.name!);
    };

    // ---- provisioning: Azure is full, two runs need a new OCI cluster; kill inside its `up`.
    e.arm.setCapacity("eastus", AZURE_SKU, 0);
    for (let i = 0; i < 2; i++)
      await create(
        newRun(`kp-prov-${i}`, "prov", (r) => (r.spec.placement = { alternatives: ["oci-ashburn"] })),
      );
    const provisioning = async () =>
      (await e.client.list<PC>(SpillwayResources.ProvisionedCluster, {})).items.some(
        (pc) => pc.status?.phase === "Provisioning",
      );
    for (let k = 0; k < KILLS.provisioning; k++)
      await killAt("provisioning", "up in progress", provisioning, 1_500);

    // ---- placement: runs keep arriving while Azure has room for some; kill at each stage.
    e.arm.setCapacity("eastus", AZURE_SKU, 3);
    const stages: Array<[string, (rs: Run[], os: Offer[]) => boolean]> = [
      ["offer created", (_rs, os) => os.some((o) => !o.status?.outcome)],
      [
        "offer answered",
        (rs, os) =>
          rs.some(
            (r) =>
              !r.status?.placement &&
              os.some((o) => o.spec.run.uid === r.metadata.uid && o.status?.outcome !== undefined),
          ),
      ],
      ["placed", (rs) => rs.some((r) => r.status?.placement && !r.status?.remote?.job)],
      ["dispatched", (rs) => rs.some((r) => r.status?.remote?.job && r.status.phase !== "Succeeded")],
    ];
    for (let k = 0; k < KILLS.placement; k++) {
      if (k % 2 === 0) {
        for (let j = 0; j < 2; j++)
          await create(
            newRun(
              `kp-${names.length}`,
              "place",
              (r) => (r.spec.placement = { alternatives: ["oci-ashburn"] }),
            ),
          );
      }
      const [stage, reached] = stages[k % stages.length]!;
      await killAt(
        "placement",
        stage,
        async () => reached(await runs("place"), await allOffers()),
        200,
        8_000,
      );
    }

    // ---- staging: Azure full again; each run's dataset must be copied Azure Blob → S3 first.
    e.arm.setCapacity("eastus", AZURE_SKU, 0);
    for (let i = 0; i < DATASETS; i++) {
      const ds = {
        apiVersion: "spillway.dev/v1alpha1",
        kind: "DataSet",
        metadata: { name: `ds-${i}`, namespace: NS },
        spec: {
          source: { provider: "azure-eastus", prefix: `corpora/ds-${i}/` },
          replicas: [{ provider: "oci-ashburn", prefix: `replicas/ds-${i}/` }],
          syncPolicy: { mode: "OnDemand" },
        },
      } as DS;
      await e.client.create(SpillwayResources.DataSet, ds);
    }
    for (let k = 0; k < KILLS.staging; k++) {
      await create(
        newRun(`kp-stage-${k}`, "stage", (r) => {
          r.spec.placement = { alternatives: ["oci-ashburn"] };
          r.spec.data = { dataset: `ds-${k}`, mountPath: "/data" };
        }),
      );
      const syncing = async () =>
        (await e.client.get<DS>(SpillwayResources.DataSet, `ds-${k}`, NS)).status?.replicas?.some(
          (r) => r.phase === "Syncing",
        ) ?? false;
      await killAt("staging", `ds-${k} replica syncing`, syncing, 400);
    }

    // ---- checkpoints: two runs on oci-fixed commit checkpoints (steps 10, 20, 30, uploaded
    // here as the trainer's agent would); the operator mirrors each to Azure while they run —
    // killed during each mirror. Then the cluster goes dark right after step 40 is committed
    // there: the runs move to Azure, which needs step 40 replicated first — killed again.
    // Azure declines them: once the earlier runs' reservations are released (each release
    // gives its nodes back to the region, so a release after the next line would hand Azure
    // capacity again), its capacity is taken away.
    await eventually(
      () => e.arm.reservations(),
      (r) => r.length === 0,
      "earlier reservations released",
      120_000,
    );
    e.arm.setCapacity("eastus", AZURE_SKU, 0);
    for (let i = 0; i < 2; i++)
      await create(
        newRun(`kp-ckpt-${i}`, "ckpt", (r) => {
          r.spec.placement = { alternatives: ["oci-fixed"] };
          r.spec.checkpoints = { keep: 5 };
          // Outlasts three commit-and-kill rounds on oci-fixed (lost before it ends); the
          // moved attempt runs as long again. 50 s was not enough on a loaded machine (restarts
          // of up to 13 s each: the Job finished on oci-fixed before it went dark, so no move);
          // 90 s was not either with a benchmark running beside the suite.
          r.spec.template.spec.containers[0]!.env = [{ name: SIM_DURATION_ENV, value: "120s" }];
        }),
      );
    // Dispatched there is enough: the mirror follows a run whose Job exists (its pods may
    // still be starting). The Job is read from oci-fixed itself, not left to the poller.
    const fixedJobs = () => remoteJobs(fixed.kubeconfig());
    const dispatched = await eventually(
      async () => {
        const jobs = await fixedJobs();
        return (await runs("ckpt")).map((r) => {
          const job = jobs.find((j) => j.metadata.labels?.["spillway.dev/run-name"] === r.metadata.name);
          const env = (job as { spec?: any } | undefined)?.spec?.template?.spec?.containers?.[0]?.env as
            | Array<{ name: string; value?: string }>
            | undefined;
          return {
            name: r.metadata.name!,
            phase: r.status?.phase,
            provider: r.status?.placement?.provider,
            store: env?.find((x) => x.name === "SPILLWAY_CHECKPOINT_STORE")?.value,
          };
        });
      },
      (rs) => rs.length === 2 && rs.every((r) => r.store !== undefined),
      "checkpoint runs dispatched to oci-fixed",
      120_000,
    );
    for (const d of dispatched) {
      expect([d.name, d.provider, d.phase !== "Succeeded"]).toEqual([d.name, "oci-fixed", true]);
      checkpointStores.set(`oci-fixed/${d.name}/1`, d.store!);
    }
    const onFixed = await runs("ckpt");
    const work = mkdtempSync(join(tmpdir(), "spillway-kill-ckpt-"));
    const sources = new Map<string, Map<string, string>>();
    const commit = async (step: number) => {
      const ckptDir = await trainerCheckpoint(join(work, String(step)), step, {
        tensors: 4,
        tensorBytes: 4 * MiB,
      });
      for (const r of onFixed) {
        const store = await openStore(checkpointStores.get(`oci-fixed/${r.metadata.name}/1`)!, storeCreds());
        await uploadCheckpoint(store, ckptDir, checkpointName(step), { runUid: r.metadata.uid!, step });
        sources.set(r.metadata.name!, await digests(store, true));
      }
    };
    for (const step of [10, 20, 30]) {
      await commit(step);
      // The mirror starts within a poll (500 ms) of the commit and takes a second or two.
      await killAt("checkpoint", `mirror of step ${step} to Azure`, async () => true, 1_500);
    }
    await commit(CKPT_STEP);
    e.arm.setCapacity("eastus", AZURE_SKU, 4);
    await fixed.stop();
    rmSync(work, { recursive: true, force: true });
    await killAt(
      "checkpoint",
      "moving (offer for attempt 2)",
      async () =>
        (await allOffers()).some((o) => o.spec.run.name.startsWith("kp-ckpt-") && o.spec.attempt === 2),
      300,
    );
    const replicating = async () =>
      (await runs("ckpt")).some((r) => (r.status?.attempt ?? 1) >= 2 && !r.status?.remote?.job);
    for (let k = 4; k < KILLS.checkpoint; k++)
      await killAt("checkpoint", "moved, step 40 replicating before dispatch", replicating, 400, 8_000);
    // Both runs move before oci-fixed comes back: the kills above wait for one run's move only,
    // and a run whose loss the restarts delayed past the cluster's return finished there,
    // unmoved (kp-ckpt-0 in a clean-clone CI run, 2026-12-07).
    await eventually(
      () => runs("ckpt"),
      (rs) => rs.length === 2 && rs.every((r) => (r.status?.attempt ?? 1) >= 2),
      "both checkpoint runs moved off the lost oci-fixed",
      120_000,
    );

    // ---- after the last restart: everything settles.
    fixed = await startFixed();
    const listRuns = async () =>
      (
        await e.client.list<Run>(SpillwayResources.TrainingRun, {
          namespace: NS,
          labelSelector: "chaos=kill",
        })
      ).items;
    const finished = (r: Run) => r.status?.phase === "Succeeded" || r.status?.phase === "Failed";
    const done = await eventually(
      listRuns,
      (rs) => rs.length === names.length && rs.every(finished),
      "every run to finish after the last restart",
      240_000,
    ).catch(async (err: unknown) => {
      // Name the runs that did not finish, with what their conditions say: the whole list is
      // too long for the timeout's message (it showed only the first, finished, run).
      const stuck = (await listRuns())
        .filter((r) => !finished(r))
        .map((r) => ({
          name: r.metadata.name,
          phase: r.status?.phase,
          attempt: r.status?.attempt,
          remote: r.status?.remote,
          conditions: (r.status?.conditions ?? [])
            .filter((c) => c.status !== "True")
            .map((c) => `${c.type}=${c.status} ${c.reason ?? ""}: ${c.message ?? ""}`),
        }));
      throw new Error(`${(err as Error).message.split(";")[0]}; not finished: ${JSON.stringify(stuck)}`);
    });
    const diag = join(tmpdir(), `spillway-chaos-kill-${SEED}.json`);
    writeFileSync(
      diag,
      JSON.stringify(
        {
          seed: SEED,
          kills,
          runs: done.map((r) => ({ name: r.metadata.name, status: r.status })),
          offers: (await allOffers()).map((o) => ({ name: o.metadata.name, status: o.status })),
          events: (
            await e.client.list<KubeObject & { reason?: string; message?: string }>(Resources.Event, {
              namespace: NS,
            })
          ).items.map((ev) => [ev.metadata.name, ev.reason, ev.message]),
          jobsSeen: [...jobsSeen].map(([c, m]) => [c, [...m].map(([r, a]) => [r, [...a]])]),
          warnings: ops
            .flatMap((o, i) => o.lines.filter((l) => !l.includes('"level":"info"')).map((l) => `${i} ${l}`))
            .slice(-2000),
        },
        null,
        1,
      ),
    );
    process.stdout.write(
      `chaos kill suite CHAOS_SEED=${SEED} (details in ${diag}): ${kills.length} kills, ${kills.filter((k) => k.reached).length} inside their stage; ${done.length} runs\n`,
    );
    expect(kills.length).toBe(30);
    for (const flow of Object.keys(KILLS))
      expect([flow, kills.some((k) => k.flow === flow && k.reached)]).toEqual([flow, true]);

    const ledger = (await allOffers()).filter((o) => o.spec.run.name.startsWith("kp-"));
    const events = (
      await e.client.list<
        KubeObject & { reason?: string; message?: string; count?: number; involvedObject?: { name?: string } }
      >(Resources.Event, { namespace: NS })
    ).items;
    for (const r of done) {
      const name = r.metadata.name!;
      const attempt = r.status?.attempt ?? 1;
      expect([name, r.status?.phase]).toEqual([name, "Succeeded"]);
      // Moves only where a cluster was lost; other attempts are re-offers after a wait.
      expect([name, r.status?.moves ?? 0]).toEqual([name, name.startsWith("kp-ckpt-") ? 1 : 0]);
      // One offer per attempt, named in status.
      const mine = ledger.filter((o) => o.spec.run.uid === r.metadata.uid);
      expect([name, mine.map((o) => o.spec.attempt).sort()]).toEqual([
        name,
        Array.from({ length: attempt }, (_, i) => i + 1),
      ]);
      expect([name, r.status?.offers?.length]).toEqual([name, attempt]);
      // At most one Placed Event per attempt (an Event may be lost with the process, never doubled).
      for (let a = 1; a <= attempt; a++) {
        const placed = events
          .filter(
            (ev) =>
              ev.involvedObject?.name === name &&
              ev.reason === "Placed" &&
              ev.message?.startsWith(`attempt ${a} placed`),
          )
          .reduce((n, ev) => n + (ev.count ?? 1), 0);
        expect([name, a, placed <= 1]).toEqual([name, a, true]);
      }
      // The placement follows the last offer's answer; each attempt's Job was on one cluster.
      const last = mine.find((o) => o.spec.attempt === attempt)!;
      const expected =
        last.status?.outcome === "Accepted" ? "azure-eastus" : r.spec.placement?.alternatives?.[0];
      expect([name, r.status?.placement?.provider]).toEqual([name, expected]);
      // (An attempt that waited for a re-offer never dispatched: no Job anywhere.)
      for (let a = 1; a <= attempt; a++) {
        const where = [...jobsSeen.entries()].filter(([, m]) => m.get(name)?.has(String(a))).map(([c]) => c);
        expect([name, a, where.length <= 1]).toEqual([name, a, true]);
      }
      const finalWhere = [...jobsSeen.entries()]
        .filter(([, m]) => m.get(name)?.has(String(attempt)))
        .map(([c]) => c);
      if (expected === "azure-eastus") expect([name, finalWhere]).toEqual([name, ["aks"]]);
      else if (expected === "oci-fixed") expect([name, finalWhere]).toEqual([name, ["oci-fixed"]]);
      else expect([name, finalWhere[0]?.startsWith("pc/")]).toEqual([name, true]);
    }

    // No remote Job left on any cluster (attempt 1's on the returned oci-fixed included).
    await eventually(
      async () => {
        const left: string[] = [];
        for (const [c, kc] of await allClusters())
          for (const j of await remoteJobs(kc))
            if (j.metadata.name?.startsWith("kp-")) left.push(`${c}/${j.metadata.name}`);
        return left;
      },
      (left) => left.length === 0,
      "no remote Job left on any cluster",
      90_000,
    );
    await eventually(
      () => e.arm.reservations(),
      (rs) => rs.every((x) => !x.name.includes("kp-")),
      "every reservation released",
      60_000,
    );
    // ProvisionedClusters and the provisioner's stacks: every stack has its ProvisionedCluster
    // (no cloud cluster orphaned), every Ready one has its stack, ready and unlocked; a
    // ProvisionedCluster refused by the cloud (Failed, e.g. the cluster limit) has no stack.
    const stacksFile = join(dir, "pulumi", "stacks.json");
    const clusters = await eventually(
      async () => {
        const pcs = (await e.client.list<PC>(SpillwayResources.ProvisionedCluster, {})).items;
        const stacks = JSON.parse(readFileSync(stacksFile, "utf8")).stacks as Record<
          string,
          { state: string; lockPid?: number }
        >;
        return {
          pcs: pcs.map((p) => ({
            stack: p.spec.stackName,
            phase: p.status?.phase,
            why: p.status?.conditions?.find((c) => c.status === "False" || c.type === "Stalled")?.message,
          })),
          stacks: Object.entries(stacks).map(([name, x]) => ({
            name,
            state: x.state,
            locked: x.lockPid !== undefined,
          })),
        };
      },
      ({ pcs, stacks }) =>
        stacks.every((st) => pcs.some((p) => p.stack === st.name)) &&
        stacks.every((st) => st.state === "ready" && !st.locked) &&
        pcs.every((p) => (p.phase === "Ready") === stacks.some((st) => st.name === p.stack)) &&
        pcs.every((p) => p.phase === "Ready" || p.phase === "Failed"),
      "ProvisionedClusters and stacks to match, unlocked",
      60_000,
    );
    process.stdout.write(`chaos kill suite: provisioned clusters ${JSON.stringify(clusters)}\n`);
    expect(clusters.stacks.length).toBeGreaterThan(0);

    // Every staged dataset: the replica holds exactly the source's objects, byte for byte.
    for (let i = 0; i < DATASETS; i++) {
      const want = new Map(Object.entries(datasetObjects(i)).map(([k, v]) => [k, sha(v)]));
      expect([`ds-${i}`, await digests(await azureStore(`corpora/ds-${i}/`))]).toEqual([`ds-${i}`, want]);
      expect([`ds-${i}`, await digests(await s3Store(`replicas/ds-${i}/`))]).toEqual([`ds-${i}`, want]);
    }
    // Every replicated checkpoint: what attempt 2 was given on Azure is the committed original.
    for (const r of done.filter((x) => x.metadata.name!.startsWith("kp-ckpt-"))) {
      const name = r.metadata.name!;
      expect([name, r.status?.checkpoint?.step]).toEqual([name, CKPT_STEP]);
      const uri = checkpointStores.get(`aks/${name}/${r.status?.attempt}`);
      expect([name, uri?.startsWith("azblob://")]).toEqual([name, true]);
      const copy = await digests(await openStore(uri!, storeCreds()), true);
      const original = sources.get(name)!;
      // Step 40's marker and manifest, and every chunk its manifest names.
      const own = [...original.keys()].filter((k) => STEP_KEY.test(k));
      const manifestKey = own.find((k) => /manifest-[0-9a-f]{64}\.json$/.test(k));
      expect([name, manifestKey !== undefined]).toEqual([name, true]);
      const manifest = await readAll(
        await (await openStore(checkpointStores.get(`oci-fixed/${name}/1`)!, storeCreds())).read(
          manifestKey!,
        ),
      );
      const chunks = new Set(manifest.toString("utf8").match(/[0-9a-f]{64}/g) ?? []);
      const blobs = [...original.keys()].filter(
        (k) => k.startsWith("blobs/") && chunks.has(k.slice("blobs/".length)),
      );
      expect([name, blobs.length > 0]).toEqual([name, true]);
      for (const k of [...own, ...blobs]) expect([name, k, copy.get(k)]).toEqual([name, k, original.get(k)]);
      expect([name, resumeSteps.get(`aks/${name}/${r.status?.attempt}`)]).toEqual([name, String(CKPT_STEP)]);
    }
  }, 900_000);
});
