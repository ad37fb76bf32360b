/** `spillway checkpoint …` on filesystem stores: list, replicate, restore, and refusals. */
import { mkdtempSync, rmSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Command } from "commander";
import { uploadCheckpoint } from "../../operator/checkpoints/upload.ts";
import { register } from "../../operator/cli/commands/checkpoint.ts";
import { openStore } from "../../operator/dataplane/store.ts";
import { checkpointName } from "../../operator/sandbox/trainer/trainer.ts";
import { digestTree, trainerCheckpoint } from "./fixtures.ts";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "spillway-ckcli-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs `spillway checkpoint <args>` in-process; returns stdout, stderr and the exit code. */
async function cli(...args: string[]): Promise<{ out: string; err: string; code: number }> {
  const program = new Command().exitOverride();
  register(program);
  const out: string[] = [];
  const err: string[] = [];
  const log = console.log;
  const error = console.error;
  console.log = (...a: unknown[]) => out.push(a.join(" "));
  console.error = (...a: unknown[]) => err.push(a.join(" "));
  process.exitCode = 0;
  try {
    await program.parseAsync(["checkpoint", ...args], { from: "user" });
    return { out: out.join("\n"), err: err.join("\n"), code: Number(process.exitCode ?? 0) };
  } finally {
    console.log = log;
    console.error = error;
    process.exitCode = 0;
  }
}

it("lists, replicates and restores a run's checkpoints by store URI", async () => {
  const a = `file://${join(dir, "store-a")}`;
  const b = `file://${join(dir, "store-b")}`;
  const work = join(dir, "work");
  const store = await openStore(a, {});
  for (const step of [10, 20]) {
    const d = await trainerCheckpoint(work, step);
    await uploadCheckpoint(store, d, checkpointName(step), { runUid: "u", step });
  }

  const listed = await cli("list", "--store", a, "--json");
  expect(JSON.parse(listed.out).committed.map((c: { step: number }) => c.step)).toEqual([20, 10]);

  const rep = await cli("replicate", "--from", a, "--to", b, "--json");
  expect(JSON.parse(rep.out)).toMatchObject({ step: 20, alreadyPresent: false });
  expect((await cli("replicate", "--from", a, "--to", b)).out).toBe(
    `step 20 already in file://${join(dir, "store-b")}`,
  );

  const into = join(dir, "restored");
  const resultFile = join(dir, "result.json");
  const restored = await cli(
    "restore",
    "--path",
    into,
    "--store",
    b,
    "--run-uid",
    "u",
    "--expect-step",
    "20",
    "--result-file",
    resultFile,
  );
  expect(restored.code).toBe(0);
  expect(restored.out).toBe(`restored step 20 into ${join(into, checkpointName(20))}`);
  expect(JSON.parse(await readFile(resultFile, "utf8"))).toMatchObject({
    outcome: "Restored",
    behindExpected: false,
  });
  expect(await digestTree(join(into, checkpointName(20)))).toEqual(
    await digestTree(join(work, checkpointName(20))),
  );
});

it("refuses a path outside the allowed root and another run's checkpoints, with one clear line", async () => {
  const a = `file://${join(dir, "store-c")}`;
  const store = await openStore(a, {});
  const d = await trainerCheckpoint(join(dir, "work-c"), 10);
  await uploadCheckpoint(store, d, checkpointName(10), { runUid: "other-run", step: 10 });

  const outside = await cli(
    "restore",
    "--path",
    join(dir, "elsewhere"),
    "--root",
    join(dir, "allowed"),
    "--store",
    a,
  );
  expect(outside.code).toBe(2);
  expect(outside.err).toMatch(
    /^spillway checkpoint: checkpoint path ".*elsewhere" .*refused: outside the allowed root/,
  );

  const foreign = await cli("restore", "--path", join(dir, "r2"), "--store", a, "--run-uid", "mine");
  expect(foreign.code).toBe(1);
  expect(foreign.out).toBe("every checkpoint rejected");
  expect(foreign.err).toContain("step 10 belongs to run other-run, not mine");

  const missing = await cli("replicate", "--from", `file://${join(dir, "empty")}`, "--to", a);
  expect(missing.code).toBe(2);
  expect(missing.err).toContain("no committed checkpoint in");
});

/** Runs the CLI capturing `process.stdout.write` too (where `--events` lines go). */
async function cliEvents(
  ...args: string[]
): Promise<{ events: Array<Record<string, unknown>>; code: number }> {
  const lines: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((chunk: string | Uint8Array) => {
    lines.push(String(chunk));
    return true;
  }) as typeof process.stdout.write;
  try {
    const r = await cli(...args);
    const events = lines
      .join("")
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    return { events, code: r.code };
  } finally {
    process.stdout.write = write;
  }
}

it("prints JSON events for log readers: the restore's outcome, the trainer's checkpoints and its resume point", async () => {
  const store = `file://${join(dir, "store-events")}`;
  const path = join(dir, "events-path");
  expect(await cliEvents("restore", "--path", path, "--store", store, "--events")).toEqual({
    events: [{ event: "fresh", rejected: [] }],
    code: 0,
  });
  const first = await cliEvents("trainer", "--path", path, "--steps", "4", "--every", "2", "--events");
  expect(first.events).toEqual([
    { event: "checkpoint", step: 2 },
    { event: "checkpoint", step: 4 },
    { event: "finished", step: 4 },
  ]);
  // Upload step 4 as the agent would, restore it elsewhere: the trainer there resumes from it.
  await uploadCheckpoint(await openStore(store, {}), join(path, checkpointName(4)), checkpointName(4), {
    runUid: "u",
    step: 4,
  });
  const other = join(dir, "events-other");
  const restored = await cliEvents(
    "restore",
    "--path",
    other,
    "--store",
    store,
    "--run-uid",
    "u",
    "--events",
  );
  expect(restored.events).toEqual([expect.objectContaining({ event: "restored", step: 4, rejected: [] })]);
  const resumed = await cliEvents("trainer", "--path", other, "--steps", "6", "--every", "2", "--events");
  expect(resumed.events).toEqual([
    { event: "checkpoint", step: 6 },
    { event: "finished", step: 6, resumedFrom: 4 },
  ]);
});
