/**
 * The checkpoint agent beside a trainer, and whole moves between clouds: the sandbox trainer
 * workload runs as a real process against s3rver (OCI) and Azurite (Azure), is killed or
 * stopped, and resumes on the other cloud from the checkpoint the operator replicated.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdir, readFile, symlink, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import {
  CheckpointAgent,
  confineCheckpointPath,
  createCheckpointCatalog,
  latestCommitted,
  listCheckpoints,
  PathRefusedError,
  runCheckpointUri,
} from "../../operator/checkpoints/index.ts";
import type { UploadResult } from "../../operator/checkpoints/upload.ts";
import { checkpointName, runTrainer } from "../../operator/sandbox/trainer/trainer.ts";
import type { WorkloadEvent } from "../../operator/sandbox/trainer/workload.ts";
import { trainerCheckpoint } from "./fixtures.ts";
import { type Stores, startStores, tempDir } from "./helpers.ts";

let stores: Stores;
beforeAll(async () => {
  stores = await startStores();
});
afterAll(async () => {
  await stores?.stop();
});

const RUN = "run-uid-agent";

/** Resolves once `pred` holds, re-checking every 20 ms (bounded by the test timeout). */
async function until(pred: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await pred())) await new Promise((r) => setTimeout(r, 20));
}

describe("the agent beside the trainer", () => {
  it("uploads each checkpoint once the trainer finished it, deduplicates unchanged files and prunes", async () => {
    const store = await stores.open(stores.azureUri());
    const path = tempDir(stores, "ckpt");
    const committed: UploadResult[] = [];
    const agent = new CheckpointAgent({
      path,
      store,
      runUid: RUN,
      keep: 2,
      chunkSize: 16 * 1024,
      blobGraceMs: 0,
      onCommitted: (r) => committed.push(r),
    });
    await agent.start();
    await runTrainer({ dir: path, steps: 30, every: 10, keepLocal: 5, log: () => {} });
    await until(() => committed.length === 3);
    await agent.stop();

    expect(committed.map((c) => c.step)).toEqual([10, 20, 30]);
    // Frozen embeddings and 6 of 8 model tensors are unchanged between checkpoints.
    expect(committed[0]?.bytesDeduplicated).toBe(0);
    expect(committed[1]?.bytesDeduplicated).toBeGreaterThan(committed[1]!.totalBytes / 2);
    expect(committed[2]?.bytesSent).toBe(committed[1]?.bytesSent);
    expect((await listCheckpoints(store)).committed.map((c) => c.step)).toEqual([30, 20]);
  });

  it("never uploads a DCP checkpoint before its .metadata, even when the trainer stops", async () => {
    const store = await stores.open(stores.s3Uri());
    const path = tempDir(stores, "ckpt");
    const torn = join(path, "step-000040");
    await mkdir(torn);
    await writeFile(join(torn, "__0_0.distcp"), "rank 0");
    await writeFile(join(torn, "__1_0.distcp"), "rank 1");
    // A non-DCP directory is complete after the quiet period; one with the marker at once.
    const plain = join(path, "step-000030");
    await mkdir(plain);
    await writeFile(join(plain, "weights.bin"), "w");
    const marked = join(path, "step-000020");
    await mkdir(marked);
    await writeFile(join(marked, "weights.bin"), "m");
    await writeFile(join(marked, ".spillway-complete"), "");

    let clock = 1_000;
    const agent = new CheckpointAgent({ path, store, runUid: RUN, quietPeriodMs: 5_000, now: () => clock });
    expect((await agent.scanOnce(false)).map((r) => r.step)).toEqual([20]);
    clock += 5_000;
    expect((await agent.scanOnce(false)).map((r) => r.step)).toEqual([30]);
    expect(await agent.scanOnce(true)).toEqual([]);
    expect((await listCheckpoints(store)).committed.map((c) => c.step)).toEqual([30, 20]);
    // The trainer's ready marker is not part of the checkpoint.
    expect((await latestCommitted(store))?.totalBytes).toBe(1);

    await writeFile(join(torn, ".metadata"), "done");
    const late = await agent.scanOnce(false);
    expect(late.map((r) => [r.step, r.framework, r.worldSize])).toEqual([[40, "pytorch-dcp", 2]]);
  });

  it("refuses a checkpoint path outside the allowed root and a symlink out of it", async () => {
    const root = tempDir(stores, "root");
    const outside = tempDir(stores, "outside");
    expect(() => confineCheckpointPath(outside, root)).toThrow(PathRefusedError);
    expect(() => confineCheckpointPath(join(root, "..", "elsewhere"), root)).toThrow(
      "outside the allowed root",
    );
    expect(() => confineCheckpointPath("/", "/")).toThrow("filesystem root");
    const link = join(root, "link");
    await symlink(outside, link);
    expect(() => confineCheckpointPath(join(link, "ckpt"), root)).toThrow("outside the allowed root");

    const store = await stores.open(stores.fileUri());
    const path = join(root, "ckpt");
    await mkdir(join(path, "step-000010"), { recursive: true });
    await writeFile(join(outside, "secret.txt"), "not yours");
    await symlink(join(outside, "secret.txt"), join(path, "step-000010", "data.bin"));
    await writeFile(join(path, "step-000010", ".spillway-complete"), "");
    const lines: string[] = [];
    const agent = new CheckpointAgent({ path, root, store, runUid: RUN, log: (l) => lines.push(l) });
    expect(await agent.scanOnce(true)).toEqual([]);
    expect(lines.join("\n")).toMatch(/step-000010 refused: .*symlink to .*secret\.txt, outside/);
    expect(await latestCommitted(store)).toBeUndefined();
  });

  it("after a restart does not upload again what the store holds, nor older local checkpoints", async () => {
    const store = await stores.open(stores.azureUri());
    const path = tempDir(stores, "ckpt");
    await trainerCheckpoint(path, 10);
    await trainerCheckpoint(path, 20);
    const first = new CheckpointAgent({ path, store, runUid: RUN });
    expect((await first.scanOnce(true)).map((r) => r.step)).toEqual([10, 20]);
    // The pod restarts on the same node: the directory still holds every checkpoint.
    const restarted = new CheckpointAgent({ path, store, runUid: RUN, keep: 1, blobGraceMs: 0 });
    await restarted.start();
    await trainerCheckpoint(path, 30);
    await until(() => restarted.committed.length === 1);
    await restarted.stop();
    expect(restarted.committed.map((r) => r.step)).toEqual([30]);
    // keep 1 pruned 10 and 20 from the store; a second restart must not bring them back.
    const again = new CheckpointAgent({ path, store, runUid: RUN, keep: 1 });
    expect(await again.scanOnce(true)).toEqual([]);
  });
});

/** The trainer workload as a process, its JSON events collected as they arrive. */
class WorkloadProcess {
  readonly events: WorkloadEvent[] = [];
  readonly stderr: string[] = [];
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcess;

  constructor(env: Record<string, string>) {
    this.child = spawn(
      process.execPath,
      [resolve("bin/run-ts.mjs"), resolve("operator/sandbox/trainer/main.ts")],
      { env: { PATH: process.env.PATH ?? "", ...env }, stdio: ["ignore", "pipe", "pipe"] },
    );
    createInterface({ input: this.child.stdout! }).on("line", (l) =>
      this.events.push(JSON.parse(l) as WorkloadEvent),
    );
    createInterface({ input: this.child.stderr! }).on("line", (l) => this.stderr.push(l));
    this.exited = new Promise((r) => this.child.once("exit", (code) => r(code)));
  }

  of<K extends WorkloadEvent["event"]>(kind: K): Array<Extract<WorkloadEvent, { event: K }>> {
    return this.events.filter((e): e is Extract<WorkloadEvent, { event: K }> => e.event === kind);
  }

  signal(sig: NodeJS.Signals): void {
    if (this.child.exitCode === null) this.child.kill(sig);
  }
}

describe("moving a run between clouds", () => {
  const running: WorkloadProcess[] = [];
  afterEach(async () => {
    for (const p of running.splice(0)) {
      p.signal("SIGKILL");
      await p.exited;
    }
  });

  const prefix = (uid: string) => `runs/${uid}`;
  function start(storeBase: string, uid: string, dir: string, extra: Record<string, string> = {}) {
    const p = new WorkloadProcess({
      SPILLWAY_CHECKPOINT_DIR: dir,
      SPILLWAY_CHECKPOINT_STORE: runCheckpointUri(storeBase, prefix(uid)),
      SPILLWAY_RUN_UID: uid,
      SPILLWAY_NNODES: "2",
      SPILLWAY_TRAINER_STEPS: "40",
      SPILLWAY_TRAINER_EVERY: "5",
      AZURE_STORAGE_CONNECTION_STRING: stores.azurite.connectionString,
      AWS_ACCESS_KEY_ID: stores.s3rver.accessKeyId,
      AWS_SECRET_ACCESS_KEY: stores.s3rver.secretAccessKey,
      ...extra,
    });
    running.push(p);
    return p;
  }

  it("a run on OCI loses its cluster (killed) and resumes on Azure from the newest committed step", async () => {
    const catalog = createCheckpointCatalog((uri) => stores.open(uri));
    const oci = stores.s3Uri();
    const azure = stores.azureUri();
    const uid = "uid-failover";
    const onOci = start(oci, uid, tempDir(stores, "oci-node"), { SPILLWAY_TRAINER_STEP_DELAY: "40ms" });
    await until(() => onOci.of("committed").some((e) => e.step >= 20));
    onOci.signal("SIGKILL");
    expect(await onOci.exited).toBeNull();

    // The operator: newest committed step on the lost cloud's store, replicated to the target.
    const latest = await catalog.latestCommitted(oci, prefix(uid));
    expect(latest?.step).toBeGreaterThanOrEqual(20);
    expect(latest?.step).toBeLessThan(40);
    const rep = await catalog.replicate(oci, azure, prefix(uid), latest!.step);
    expect(rep?.manifestDigest).toBe(latest?.manifestDigest);

    const onAzure = start(azure, uid, tempDir(stores, "azure-node"), {
      SPILLWAY_RESUME_STEP: String(latest!.step),
    });
    expect(await onAzure.exited).toBe(0);
    expect(onAzure.of("restored")).toEqual([
      {
        event: "restored",
        step: latest!.step,
        digest: latest!.manifestDigest,
        behindExpected: false,
        rejected: [],
      },
    ]);
    expect(onAzure.of("finished")).toEqual([{ event: "finished", step: 40, resumedFrom: latest!.step }]);
    // The step counter continues: the first checkpoint on Azure is the next one after the resume point.
    const steps = onAzure.of("checkpoint").map((e) => e.step);
    expect(steps[0]).toBe(latest!.step + 5);
    expect(steps.at(-1)).toBe(40);
    // The restored checkpoint is not uploaded again; every later one is committed on Azure.
    expect(onAzure.of("committed").map((e) => e.step)).toEqual(steps);
    expect((await catalog.latestCommitted(azure, prefix(uid)))?.step).toBe(40);
  }, 120_000);

  it("failback: stopped at a checkpoint boundary on OCI, the run moves to Azure losing no committed step", async () => {
    const catalog = createCheckpointCatalog((uri) => stores.open(uri));
    const oci = stores.s3Uri();
    const azure = stores.azureUri();
    const uid = "uid-failback";
    const dir = tempDir(stores, "oci-node");
    const onOci = start(oci, uid, dir, { SPILLWAY_TRAINER_STEP_DELAY: "40ms" });
    await until(() => onOci.of("checkpoint").length >= 3);
    onOci.signal("SIGTERM");
    expect(await onOci.exited).toBe(143);
    // The agent drained: the last checkpoint the trainer wrote is committed.
    const written = onOci.of("checkpoint").map((e) => e.step);
    const latest = await catalog.latestCommitted(oci, prefix(uid));
    expect(latest?.step).toBe(written.at(-1));
    const state = JSON.parse(
      await readFile(join(dir, checkpointName(latest!.step), "trainer_state.json"), "utf8"),
    ) as { step: number };
    expect(state.step).toBe(latest?.step);

    await catalog.replicate(oci, azure, prefix(uid));
    const onAzure = start(azure, uid, tempDir(stores, "azure-node"), {
      SPILLWAY_RESUME_STEP: String(latest!.step),
    });
    expect(await onAzure.exited).toBe(0);
    expect(onAzure.of("restored")[0]?.step).toBe(latest?.step);
    expect(onAzure.of("finished")).toEqual([{ event: "finished", step: 40, resumedFrom: latest!.step }]);
  }, 120_000);

  it("a bad environment is refused with the variable's name", async () => {
    const p = new WorkloadProcess({ SPILLWAY_CHECKPOINT_DIR: tempDir(stores, "x") });
    running.push(p);
    expect(await p.exited).toBe(1);
    expect(p.stderr.join("\n")).toContain("SPILLWAY_CHECKPOINT_STORE is required");
  });
});
