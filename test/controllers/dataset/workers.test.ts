/**
 * Sync workers: a DataSet above its `workerThresholdBytes` is synced by an Indexed Job of
 * `spillway sync --shard` workers on the source's cluster. The management cluster and the
 * Azure provider's cluster are real (sandbox) API servers, the stores are Azurite and s3rver.
 * The test plays the remote kubelet: for each index of a worker Job it runs that shard's sync
 * with the real sync engine, from the Job's own command and Secret, then writes the Job's
 * status as the Job controller would.
 */
import type { DataSet } from "../../../operator/api/v1alpha1/index.ts";
import { parseShard } from "../../../operator/cli/commands/sync.ts";
import { dataSetController } from "../../../operator/controllers/dataset/controller.ts";
import {
  COMPONENT_SYNC_WORKER,
  LABEL_COMPONENT,
  LABEL_DATASET_UID,
  renderWorkerJob,
  storeUri,
  WORKERS_FINALIZER,
  workerEnv,
  workerJobName,
} from "../../../operator/controllers/dataset/worker-objects.ts";
import { collectWorkerOrphans } from "../../../operator/controllers/dataset/workers.ts";
import { credentialsFromEnv } from "../../../operator/dataplane/credentials.ts";
import { loadManifest, manifestDigest, manifestKey } from "../../../operator/dataplane/manifest.ts";
import { parseStoreUri } from "../../../operator/dataplane/open.ts";
import { DatasetSyncs } from "../../../operator/dataplane/stager.ts";
import { openStore } from "../../../operator/dataplane/store.ts";
import { syncStores } from "../../../operator/dataplane/sync.ts";
import { KubeClient } from "../../../operator/runtime/client.ts";
import type { Controller } from "../../../operator/runtime/controller.ts";
import { type KubeObject, Resources, SpillwayResources } from "../../../operator/runtime/resources.ts";
import { eventually, type Harness, providers, secret, startHarness, TEAM } from "./harness.ts";

type DS = DataSet & KubeObject;
type Job = KubeObject & {
  spec: {
    completions: number;
    parallelism: number;
    template: { spec: { containers: Array<Record<string, unknown>> } & Record<string, unknown> };
  } & Record<string, unknown>;
  status?: Record<string, unknown>;
};
const WORKER_NS = "spillway-sync";
/** Limits only end a hung test: the machine is shared, emulators and API servers can be slow. */
const LIMIT = 60_000;
const TEST_LIMIT = 180_000;

let h: Harness;
let aks: KubeClient;
let syncs: DatasetSyncs;
let controller: Controller;
let kubelet: PlayedKubelet;

/** What the played kubelet does with a Job: run every shard, hold, or fail one index. */
type Mode =
  | { kind: "run"; afterShards?: () => Promise<void>; afterShard?: (index: number) => Promise<void> }
  | { kind: "hold" }
  | { kind: "fail"; index: number; message: string };

class PlayedKubelet {
  private readonly seen = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private busy = false;
  mode: Mode = { kind: "run" };
  /** Shards this kubelet ran, by Job name. */
  readonly ran = new Map<string, number[]>();

  constructor(private readonly client: KubeClient) {}

  start(): void {
    this.timer = setInterval(() => void this.pass(), 100);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Uids of the Jobs of that name this kubelet has seen. */
  played(name: string): string[] {
    return [...this.names.entries()].filter(([, n]) => n === name).map(([uid]) => uid);
  }
  private readonly names = new Map<string, string>();

  /** Plays a held Job again under the current mode. */
  release(uid: string): void {
    this.seen.delete(uid);
  }

  private async pass(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const jobs = await this.client.list<Job>(Resources.Job, { namespace: WORKER_NS });
      for (const job of jobs.items) {
        const uid = job.metadata.uid!;
        if (this.seen.has(uid) || job.metadata.deletionTimestamp || job.status?.conditions) continue;
        this.seen.add(uid);
        this.names.set(uid, job.metadata.name!);
        await this.play(job).catch((e) => console.error("played kubelet:", e));
      }
    } catch {
      // the server is stopping
    } finally {
      this.busy = false;
    }
  }

  private async play(job: Job): Promise<void> {
    const mode = this.mode;
    if (mode.kind === "hold") return;
    const c = job.spec.template.spec.containers[0]!;
    const ref = (c.envFrom as Array<{ secretRef: { name: string } }>)[0]!.secretRef.name;
    const s = await this.client.get<KubeObject & { data: Record<string, string> }>(
      Resources.Secret,
      ref,
      WORKER_NS,
    );
    const env = Object.fromEntries(
      Object.entries(s.data).map(([k, v]) => [k, Buffer.from(v, "base64").toString("utf8")]),
    );
    const n = job.spec.completions;
    const done: number[] = [];
    for (let i = 0; i < n; i++) {
      if (mode.kind === "fail" && mode.index === i) continue;
      const args = (c.command as string[]).map((a) => a.replace("$(JOB_COMPLETION_INDEX)", String(i)));
      expect(args.slice(0, 2)).toEqual(["spillway", "sync"]);
      const credentials = credentialsFromEnv(env);
      const summary = await syncStores(
        await openStore(args[2]!, credentials),
        await openStore(args[3]!, credentials),
        { shard: parseShard(args[args.indexOf("--shard") + 1]!), delete: args.includes("--delete") },
      );
      expect(summary.complete).toBe(true);
      done.push(i);
      if (mode.kind === "run" && mode.afterShard) {
        // The Job controller's view while the others still run: one more completed index.
        const running = await this.client.get<Job>(Resources.Job, job.metadata.name!, WORKER_NS);
        await this.client.updateStatus(Resources.Job, {
          ...running,
          status: { active: n - done.length, succeeded: done.length, completedIndexes: indexList(done) },
        } as KubeObject);
        await mode.afterShard(i);
      }
    }
    this.ran.set(job.metadata.name!, done);
    if (mode.kind === "run") await mode.afterShards?.();
    const latest = await this.client.get<Job>(Resources.Job, job.metadata.name!, WORKER_NS);
    const now = new Date().toISOString();
    const ranges = done.length ? indexList(done) : undefined;
    if (mode.kind === "fail") {
      // The failed worker's pod, with its last line as termination message (FallbackToLogsOnError).
      const pod = await this.client.create<KubeObject>(Resources.Pod, {
        apiVersion: "v1",
        kind: "Pod",
        metadata: {
          name: `${job.metadata.name}-${mode.index}-x`,
          namespace: WORKER_NS,
          labels: { "batch.kubernetes.io/job-name": job.metadata.name! },
        },
        spec: { restartPolicy: "Never", containers: [{ name: "sync", image: "spillway" }] },
      } as KubeObject);
      await this.client.updateStatus(Resources.Pod, {
        ...pod,
        status: {
          phase: "Failed",
          containerStatuses: [
            {
              name: "sync",
              ready: false,
              restartCount: 0,
              image: "spillway",
              imageID: "",
              state: { terminated: { exitCode: 1, reason: "Error", message: mode.message } },
            },
          ],
        },
      } as KubeObject);
    }
    await this.client.updateStatus(Resources.Job, {
      ...latest,
      status: {
        startTime: now,
        ...(ranges ? { completedIndexes: ranges } : {}),
        succeeded: done.length,
        ...(mode.kind === "fail"
          ? {
              failed: 1,
              failedIndexes: String(mode.index),
              conditions: [
                {
                  type: "Failed",
                  status: "True",
                  reason: "FailedIndexes",
                  message: "Job has failed indexes",
                  lastTransitionTime: now,
                },
              ],
            }
          : {
              completionTime: now,
              conditions: [
                { type: "SuccessCriteriaMet", status: "True", lastTransitionTime: now },
                { type: "Complete", status: "True", lastTransitionTime: now },
              ],
            }),
      },
    } as KubeObject);
  }
}

/** Consecutive indexes as the Job API lists them ("0-2"); these tests never skip one but the failed. */
function indexList(done: number[]): string {
  return done.length === 1
    ? `${done[0]}`
    : done.every((d, k) => k === 0 || d === done[k - 1]! + 1)
      ? `${done[0]}-${done.at(-1)}`
      : done.join(",");
}

function startController(): void {
  syncs = new DatasetSyncs({
    sync: { retry: { attempts: 2, baseDelayMs: 1, maxDelayMs: 5 } },
    retryBaseMs: 60_000,
    retryMaxMs: 60_000,
  });
  controller = dataSetController(h.ctx, syncs, {
    progressIntervalMs: 200,
    workers: { pollMs: 200, image: "spillway:test" },
  });
  controller.start();
}

async function stopController(): Promise<void> {
  await controller.stop(5_000);
  await syncs.cancel();
}

beforeAll(async () => {
  h = await startHarness({ remote: true });
  aks = KubeClient.fromKubeconfig(h.aks!.kubeconfig(), { rateLimit: { qps: 1000, burst: 1000 } });
  for (const p of providers(h)) await h.client.create(SpillwayResources.CloudProvider, p);
  await h.client.create(Resources.Secret, secret("azure-storage", { accountKey: h.azurite.accountKey }));
  await h.client.create(
    Resources.Secret,
    secret("oci-s3-credentials", { accessKeyId: h.s3.accessKeyId, secretAccessKey: h.s3.secretAccessKey }),
  );
  kubelet = new PlayedKubelet(aks);
  kubelet.start();
  startController();
});
afterAll(async () => {
  kubelet?.stop();
  await stopController();
  await h?.close();
});

const azure = () =>
  openStore(
    {
      kind: "azblob",
      account: h.azurite.accountName,
      container: "datasets",
      prefix: "",
      endpoint: h.azurite.blobEndpoint,
    },
    { azure: { accountKey: h.azurite.accountKey } },
  );
const oci = (prefix: string) =>
  openStore(
    { kind: "s3", bucket: "spillway-datasets", prefix, endpoint: h.s3.endpoint, region: h.s3.region },
    { s3: { accessKeyId: h.s3.accessKeyId, secretAccessKey: h.s3.secretAccessKey } },
  );

async function seed(name: string, count: number): Promise<void> {
  const src = await azure();
  for (let i = 0; i < count; i++)
    await src.put(
      `corpora/${name}/part ${i} é.jsonl`,
      Buffer.from(`{"i":${i},"pad":"${"x".repeat(i * 7)}"}\n`),
    );
}

function dataset(name: string, threshold: number, workers = 3): DS {
  return {
    apiVersion: "spillway.dev/v1alpha1",
    kind: "DataSet",
    metadata: { name, namespace: TEAM },
    spec: {
      source: { provider: "azure-eastus", prefix: `corpora/${name}/` },
      replicas: [{ provider: "oci-ashburn", prefix: `replicas/${name}/` }],
      syncPolicy: { mode: "OnDemand", workerThresholdBytes: threshold, workers },
    },
  } as DS;
}

const get = (name: string) => h.client.get<DS>(SpillwayResources.DataSet, name, TEAM);
const workerObjects = async (uid: string) => {
  const sel = { namespace: WORKER_NS, labelSelector: `${LABEL_DATASET_UID}=${uid}` };
  const [jobs, secrets] = await Promise.all([
    aks.list<Job>(Resources.Job, sel),
    aks.list<KubeObject>(Resources.Secret, sel),
  ]);
  return { jobs: jobs.items, secrets: secrets.items };
};
const cond = (ds: DS, type: string) => ds.status?.conditions?.find((c) => c.type === type);

describe("sync workers", () => {
  it(
    "renders an Indexed Job of restricted workers whose command carries no credential",
    () => {
      const [azureP, ociP] = providers(h);
      const ds = {
        ...dataset("render", 0, 5),
        metadata: { name: "render", namespace: TEAM, uid: "u-1" },
      } as DS;
      const src = storeUri(
        parseStoreUri(`azblob://acct/datasets/corpora/a%20b/?endpoint=${h.azurite.blobEndpoint}`),
      );
      expect(parseStoreUri(src)).toMatchObject({
        kind: "azblob",
        prefix: "corpora/a b/",
        endpoint: h.azurite.blobEndpoint,
      });
      const env = workerEnv([
        { provider: azureP!, secret: { accountKey: "AZ-KEY" } },
        { provider: ociP!, secret: { accessKeyId: "AK", secretAccessKey: "SK" } },
      ]);
      expect(env).toEqual({
        env: { AZURE_STORAGE_KEY: "AZ-KEY", AWS_ACCESS_KEY_ID: "AK", AWS_SECRET_ACCESS_KEY: "SK" },
      });
      // Two Azure accounts with different keys cannot share one environment: no Job for them.
      expect(
        workerEnv([
          { provider: azureP!, secret: { accountKey: "A" } },
          { provider: azureP!, secret: { accountKey: "B" } },
        ]),
      ).toHaveProperty("conflict");
      const render = () =>
        renderWorkerJob({
          ds,
          provider: "oci-ashburn",
          origin: "test",
          namespace: WORKER_NS,
          image: "img:1",
          workers: 5,
          src,
          dst: "s3://b/p/?region=r",
          options: {},
        }) as unknown as Job;
      const job = render();
      expect(render()).toEqual(job); // deterministic: a restarted operator renders the same Job
      expect(job.metadata.name).toBe(workerJobName(ds, "oci-ashburn"));
      expect(job.metadata.name!.length).toBeLessThanOrEqual(63);
      expect(job.metadata.labels).toMatchObject({
        [LABEL_DATASET_UID]: "u-1",
        "spillway.dev/origin": "test",
        [LABEL_COMPONENT]: COMPONENT_SYNC_WORKER,
      });
      expect(job.spec).toMatchObject({
        completionMode: "Indexed",
        completions: 5,
        parallelism: 5,
        backoffLimitPerIndex: 2,
        activeDeadlineSeconds: expect.any(Number),
      });
      const pod = job.spec.template.spec;
      const c = pod.containers[0]!;
      expect(c.command).toEqual(
        expect.arrayContaining([
          "spillway",
          "sync",
          src,
          "s3://b/p/?region=r",
          "--shard",
          "$(JOB_COMPLETION_INDEX)/5",
          "--json",
        ]),
      );
      expect(c.envFrom).toEqual([{ secretRef: { name: job.metadata.name } }]);
      expect(c.securityContext).toMatchObject({
        runAsNonRoot: true,
        readOnlyRootFilesystem: true,
        allowPrivilegeEscalation: false,
        capabilities: { drop: ["ALL"] },
        seccompProfile: { type: "RuntimeDefault" },
      });
      expect(pod).toMatchObject({ restartPolicy: "Never", automountServiceAccountToken: false });
      expect(JSON.stringify(job)).not.toMatch(/AZ-KEY|"SK"/);
    },
    TEST_LIMIT,
  );

  it(
    "syncs a DataSet above the threshold with 3 workers near the data, verifies the version, then removes Job and Secret",
    async () => {
      await seed("big", 12);
      // After the first shard, the replica's progress shows it before the other shards run.
      let during: DS | undefined;
      kubelet.mode = {
        kind: "run",
        afterShard: async (i) => {
          if (i !== 0) return;
          during = await eventually(async () => {
            const d = await get("big");
            return d.status?.replicas?.[0]?.message?.startsWith("1/3 shards done") && d;
          }, LIMIT);
        },
      };
      await h.client.create(SpillwayResources.DataSet, dataset("big", 10, 3));
      const created = await eventually(async () => {
        const { jobs, secrets } = await workerObjects((await get("big")).metadata.uid!);
        return jobs.length === 1 && secrets.length === 1 && { job: jobs[0]!, secret: secrets[0]! };
      }, LIMIT);
      // On the source's (Azure) cluster, 3 indexes, the store credentials only in the Secret.
      expect(created.job.spec).toMatchObject({ completions: 3, parallelism: 3, completionMode: "Indexed" });
      const jobText = JSON.stringify(created.job);
      expect(jobText).not.toContain(h.azurite.accountKey);
      expect(jobText).not.toContain(h.s3.secretAccessKey);
      expect(
        Object.keys((created.secret as unknown as { data: Record<string, string> }).data).sort(),
      ).toEqual(["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AZURE_STORAGE_KEY"]);

      const ds = await eventually(async () => {
        const d = await get("big");
        return d.status?.replicasSynced === 1 && d;
      }, LIMIT);
      kubelet.mode = { kind: "run" };
      expect(kubelet.ran.get(created.job.metadata.name!)).toEqual([0, 1, 2]);
      const shard0 = await loadManifest(await oci("replicas/big/"), manifestKey({ index: 0, count: 3 }));
      expect(during?.status?.replicas?.[0]).toMatchObject({ phase: "Syncing", objectsSynced: shard0?.size });
      expect(cond(during!, "Reconciling")).toMatchObject({ status: "True" });
      // The replica's committed manifest is the merge of the 3 shards, and it is the version.
      const replica = await oci("replicas/big/");
      const merged = await loadManifest(replica, manifestKey());
      expect(merged?.size).toBe(12);
      expect(ds.status?.version?.digest).toBe(manifestDigest(merged!));
      expect(ds.status?.replicas?.[0]).toMatchObject({
        provider: "oci-ashburn",
        phase: "Synced",
        version: ds.status?.version?.digest,
        objectsSynced: 12,
      });
      expect(ds.status?.replicas?.[0]?.message).toContain("3 sync workers on azure-eastus/existing");
      expect(cond(ds, "WorkersFailed")).toMatchObject({ status: "False" });
      expect(ds.metadata.finalizers).toContain(WORKERS_FINALIZER);
      // The same bytes as an in-operator copy would give: every object present.
      expect((await replica.head("part 11 é.jsonl"))?.size).toBeGreaterThan(0);
      // Job and Secret are gone once the version is in.
      await eventually(async () => {
        const { jobs, secrets } = await workerObjects(ds.metadata.uid!);
        return jobs.length === 0 && secrets.length === 0;
      }, LIMIT);
      expect(JSON.stringify(ds.status)).not.toContain(h.azurite.accountKey);

      await h.client.delete(SpillwayResources.DataSet, "big", TEAM);
      await eventually(async () => !(await h.client.tryGet(SpillwayResources.DataSet, "big", TEAM)), LIMIT);
    },
    TEST_LIMIT,
  );

  it(
    "keeps a small DataSet's sync in the operator: no Job",
    async () => {
      await seed("small", 2);
      await h.client.create(SpillwayResources.DataSet, dataset("small", 1_000_000));
      const ds = await eventually(async () => {
        const d = await get("small");
        return d.status?.replicasSynced === 1 && d;
      }, LIMIT);
      expect((await workerObjects(ds.metadata.uid!)).jobs).toHaveLength(0);
      expect(cond(ds, "WorkersFailed")).toBeUndefined();
      expect(ds.metadata.finalizers ?? []).not.toContain(WORKERS_FINALIZER);
    },
    TEST_LIMIT,
  );

  it(
    "runs the workers on the replica's cluster when the source's provider has none (S3 → Azure)",
    async () => {
      const src = await oci("corpora/s3src/");
      for (let i = 0; i < 5; i++) await src.put(`obj-${i}.bin`, Buffer.alloc(100 + i, i));
      const d = dataset("s3src", 10, 2);
      d.spec.source = { provider: "oci-ashburn", prefix: "corpora/s3src/" };
      d.spec.replicas = [{ provider: "azure-eastus", prefix: "replicas/s3src/" }];
      await h.client.create(SpillwayResources.DataSet, d);
      const ds = await eventually(async () => {
        const x = await get("s3src");
        return x.status?.replicasSynced === 1 && x;
      }, LIMIT);
      expect(ds.status?.replicas?.[0]?.message).toContain("2 sync workers on azure-eastus/existing");
      expect(ds.status?.version).toMatchObject({ objects: 5 });
    },
    TEST_LIMIT,
  );

  it(
    "syncs in the operator, saying why, when no cluster near the data is known",
    async () => {
      const other = providers(h)[1]!;
      other.metadata.name = "oci-other";
      await h.client.create(SpillwayResources.CloudProvider, other);
      const src = await oci("corpora/nocluster/");
      for (let i = 0; i < 3; i++) await src.put(`o-${i}`, Buffer.alloc(50, i));
      const d = dataset("nocluster", 10, 2);
      d.spec.source = { provider: "oci-ashburn", prefix: "corpora/nocluster/" };
      d.spec.replicas = [{ provider: "oci-other", prefix: "replicas/nocluster/" }];
      await h.client.create(SpillwayResources.DataSet, d);
      const ds = await eventually(async () => {
        const x = await get("nocluster");
        return x.status?.replicasSynced === 1 && x;
      }, LIMIT);
      expect(ds.status?.replicas?.[0]?.message).toContain(
        "(in the operator: no reachable cluster near the data for sync workers)",
      );
      expect((await workerObjects(ds.metadata.uid!)).jobs).toHaveLength(0);
    },
    TEST_LIMIT,
  );

  it(
    "starts no Job for a replica whose bucket does not exist: the replica is Stalled",
    async () => {
      const broken = providers(h)[1]!;
      broken.metadata.name = "oci-nobucket";
      (broken.spec.storage!.s3 as { bucket: string }).bucket = "no-such-bucket";
      await h.client.create(SpillwayResources.CloudProvider, broken);
      await seed("nobucket", 2);
      const d = dataset("nobucket", 10, 2);
      d.spec.replicas = [{ provider: "oci-nobucket", prefix: "x/" }];
      await h.client.create(SpillwayResources.DataSet, d);
      const ds = await eventually(async () => {
        const x = await get("nobucket");
        return x.status?.replicas?.[0]?.phase === "Failed" && x;
      }, LIMIT);
      expect(cond(ds, "Stalled")).toMatchObject({ status: "True" });
      expect(ds.status?.replicas?.[0]?.message).toContain("bucket not found");
      expect((await workerObjects(ds.metadata.uid!)).jobs).toHaveLength(0);
    },
    TEST_LIMIT,
  );

  it(
    "does not mark the replica synced when the source changed while the workers ran",
    async () => {
      await seed("moving", 6);
      kubelet.mode = {
        kind: "run",
        afterShards: async () => {
          await (await azure()).put("corpora/moving/part 0 é.jsonl", Buffer.from("changed meanwhile\n"));
        },
      };
      try {
        await h.client.create(SpillwayResources.DataSet, dataset("moving", 10, 3));
        const ds = await eventually(async () => {
          const d = await get("moving");
          return d.status?.replicas?.[0]?.phase === "Failed" && d;
        }, LIMIT);
        expect(ds.status?.replicas?.[0]?.message).toContain(
          "part 0 é.jsonl changed at the source during the sync",
        );
        expect(ds.status?.replicasSynced).toBe(0);
        expect(ds.status?.version).toBeUndefined();
        // The Job itself succeeded: no WorkersFailed.
        expect(cond(ds, "WorkersFailed")).toMatchObject({ status: "False", reason: "NoJobFailed" });
      } finally {
        kubelet.mode = { kind: "run" };
      }
    },
    TEST_LIMIT,
  );

  it(
    "reports a failed worker index with the worker's message, and removes the Job and Secret",
    async () => {
      kubelet.mode = { kind: "fail", index: 1, message: "spillway sync: 2 objects failed: throttled" };
      try {
        await seed("failing", 6);
        await h.client.create(SpillwayResources.DataSet, dataset("failing", 10, 3));
        const ds = await eventually(async () => {
          const d = await get("failing");
          return d.status?.replicas?.[0]?.phase === "Failed" && d;
        }, LIMIT);
        const failed = cond(ds, "WorkersFailed");
        expect(failed).toMatchObject({ status: "True", reason: "JobFailed" });
        expect(failed?.message).toContain("index 1 of 3 failed");
        expect(failed?.message).toContain("throttled");
        expect(cond(ds, "Ready")).toMatchObject({ status: "False" });
        expect(h.events.some((e) => e.name === "failing" && e.reason === "SyncFailed")).toBe(true);
        await eventually(async () => {
          const { jobs, secrets } = await workerObjects(ds.metadata.uid!);
          return jobs.length === 0 && secrets.length === 0;
        }, LIMIT);
      } finally {
        kubelet.mode = { kind: "run" };
      }
    },
    TEST_LIMIT,
  );

  it(
    "adopts its running Job after an operator restart instead of starting a second one",
    async () => {
      kubelet.mode = { kind: "hold" };
      await seed("held", 4);
      await h.client.create(SpillwayResources.DataSet, dataset("held", 10, 2));
      const uid = (await get("held")).metadata.uid!;
      const first = await eventually(async () => (await workerObjects(uid)).jobs[0], LIMIT);

      await stopController();
      startController();
      // The restarted operator watches the same Job; when its workers finish it merges their work.
      kubelet.mode = { kind: "run" };
      kubelet.release(first.metadata.uid!);
      const ds = await eventually(async () => {
        const d = await get("held");
        return d.status?.replicasSynced === 1 && d;
      }, LIMIT);
      expect(ds.status?.replicas?.[0]?.message).toContain("2 sync workers");
      expect([...kubelet.ran.keys()].filter((n) => n === first.metadata.name)).toHaveLength(1);
      expect(kubelet.played(first.metadata.name!)).toEqual([first.metadata.uid]);
    },
    TEST_LIMIT,
  );

  it(
    "removes a Job left from before a restart when the new settings sync the replica in the operator",
    async () => {
      kubelet.mode = { kind: "hold" };
      try {
        await seed("shrunk", 3);
        await h.client.create(SpillwayResources.DataSet, dataset("shrunk", 10, 2));
        const uid = (await get("shrunk")).metadata.uid!;
        await eventually(async () => (await workerObjects(uid)).jobs[0], LIMIT);
        await stopController();
        const d = await get("shrunk");
        d.spec.syncPolicy = { ...d.spec.syncPolicy, workerThresholdBytes: 1_000_000 };
        await h.client.update(SpillwayResources.DataSet, d);
        startController();
        const ds = await eventually(async () => {
          const x = await get("shrunk");
          return x.status?.replicasSynced === 1 && x.metadata.generation === x.status.observedGeneration && x;
        }, LIMIT);
        expect(ds.status?.replicas?.[0]?.message).not.toContain("sync workers");
        const left = await workerObjects(uid);
        expect(left.jobs.length + left.secrets.length).toBe(0);
      } finally {
        kubelet.mode = { kind: "run" };
      }
    },
    TEST_LIMIT,
  );

  it(
    "deletes a running Job and its Secret before a deleted DataSet goes (finalizer)",
    async () => {
      kubelet.mode = { kind: "hold" };
      try {
        await seed("doomed", 3);
        await h.client.create(SpillwayResources.DataSet, dataset("doomed", 10, 2));
        const uid = (await get("doomed")).metadata.uid!;
        await eventually(
          async () => (await workerObjects(uid)).secrets.length === 1 && (await workerObjects(uid)).jobs[0],
          LIMIT,
        );
        expect((await get("doomed")).metadata.finalizers).toContain(WORKERS_FINALIZER);
        await h.client.delete(SpillwayResources.DataSet, "doomed", TEAM);
        await eventually(
          async () => !(await h.client.tryGet(SpillwayResources.DataSet, "doomed", TEAM)),
          LIMIT,
        );
        const left = await workerObjects(uid);
        expect(left.jobs.length + left.secrets.length).toBe(0);
      } finally {
        kubelet.mode = { kind: "run" };
      }
    },
    TEST_LIMIT,
  );

  it(
    "collects worker Jobs whose DataSet is gone",
    async () => {
      const labels = {
        [LABEL_DATASET_UID]: "no-such-uid",
        [LABEL_COMPONENT]: COMPONENT_SYNC_WORKER,
        "spillway.dev/origin": "test",
      };
      const meta = { name: "sync-orphan-1", namespace: WORKER_NS, labels };
      await aks.create(Resources.Secret, { apiVersion: "v1", kind: "Secret", metadata: meta } as KubeObject);
      await aks.create(Resources.Job, {
        apiVersion: "batch/v1",
        kind: "Job",
        metadata: meta,
        spec: {
          template: {
            spec: { restartPolicy: "Never", containers: [{ name: "sync", image: "x", command: ["true"] }] },
          },
        },
      } as KubeObject);
      kubelet.mode = { kind: "hold" };
      const entry = h.ctx.remote.get("azure-eastus/existing")!;
      await eventually(() => entry.jobs.get(`${WORKER_NS}/sync-orphan-1`), LIMIT);
      const collected = await collectWorkerOrphans(h.ctx);
      kubelet.mode = { kind: "run" };
      expect(collected).toEqual([{ cluster: "azure-eastus/existing", job: `${WORKER_NS}/sync-orphan-1` }]);
      const left = await workerObjects("no-such-uid");
      expect(left.jobs.length + left.secrets.length).toBe(0);
    },
    TEST_LIMIT,
  );
});
