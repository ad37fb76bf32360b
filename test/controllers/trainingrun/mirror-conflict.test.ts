/**
 * The checkpoint mirror's status write meeting a 409 (reliability finding 10): right after a
 * restart the operator's cache can be behind the status the previous process wrote, so the
 * write of a mirrored checkpoint answers Conflict. That is an ordinary optimistic-concurrency
 * conflict: the reconcile is requeued at once, logged at debug level only, and the next
 * reconcile writes the checkpoint. A real failure (a store that cannot be read) stays a warn.
 *
 * The whole sandbox and operator run (Azure accepts, the run executes on AKS); the checkpoint
 * planner is the real one except for `mirror`, which reports a committed checkpoint and, the
 * first time, writes the run's status behind the operator's back — the real API server then
 * answers the operator's write with a real 409.
 */
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { createLogger } from "../../../operator/runtime/logging.ts";
import { SpillwayResources } from "../../../operator/runtime/resources.ts";
import { SIM_DURATION_ENV } from "../../../operator/sandbox/cluster/index.ts";
import { sandboxAdapters } from "../../../operator/sandbox/wiring.ts";
import { type E2E, eventually, getRun, type Run, startE2E, trainingRun } from "../../e2e/harness.ts";

const MIRRORED = {
  step: 40,
  digest: `sha256:${"ab".repeat(32)}`,
  committedAt: "2026-11-22T00:00:00Z",
  replicatedTo: ["azure-eastus"],
};

let e: E2E;
const lines: Array<Record<string, unknown>> = [];
const mirrorCalls = new Map<string, number>();

/** A run with checkpoints that runs for `duration` on whichever cluster it is placed on. */
function checkpointedRun(name: string, duration: string): Run {
  const run = trainingRun(name);
  run.spec.checkpoints = { keep: 3 };
  run.spec.template.spec.containers[0]!.env = [{ name: SIM_DURATION_ENV, value: duration }];
  return run;
}

beforeAll(async () => {
  e = await startE2E();
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString("utf8").split("\n")) {
        if (!l.trim()) continue;
        try {
          lines.push(JSON.parse(l) as Record<string, unknown>);
        } catch {
          // not a log line
        }
      }
      done();
    },
  });
  const adapters = sandboxAdapters(e.sandbox);
  await e.startOperator({
    logger: createLogger({ level: "debug", stream: sink }),
    checkpointsFor: (ctx) => {
      const real = adapters.checkpointsFor!(ctx);
      return {
        prepare: (run, target, signal) => real.prepare(run, target, signal),
        async mirror(run) {
          const name = run.metadata.name ?? "";
          const n = (mirrorCalls.get(name) ?? 0) + 1;
          mirrorCalls.set(name, n);
          if (name.startsWith("unreadable")) throw new Error("the store of azure-eastus could not be read");
          if (n === 1) {
            // What a previous operator process wrote just before it died: newer than the cache.
            const stored = await getRun(e, name);
            stored.status = { ...stored.status, accruedCost: 0.01 };
            await e.client.updateStatus(SpillwayResources.TrainingRun, stored);
          }
          return MIRRORED;
        },
      };
    },
  });
}, 120_000);

afterAll(async () => {
  await e?.stop();
}, 60_000);

const ofRun = (name: string) => lines.filter((l) => l.run === `ml-team/${name}`);

describe("the checkpoint mirror's status write", () => {
  test("a 409 requeues the run at debug level, without a warn, and the next reconcile writes the checkpoint", async () => {
    await e.client.create(SpillwayResources.TrainingRun, checkpointedRun("conflicted", "8s"));
    const run = await eventually(
      () => getRun(e, "conflicted"),
      (r) => r.status?.checkpoint?.step === MIRRORED.step,
      "the mirrored checkpoint in status",
      60_000,
    );
    expect(run.status?.checkpoint).toEqual(MIRRORED);
    // The write behind the operator's back is kept: the checkpoint went on top of it.
    expect(run.status?.accruedCost).toBe(0.01);
    // Mirrored again by the requeued reconcile, not a poll later.
    expect(mirrorCalls.get("conflicted")).toBeGreaterThanOrEqual(2);

    const mine = ofRun("conflicted");
    const conflict = mine.findIndex(
      (l) => l.message === "checkpoint status write conflicted; writing it at the next reconcile",
    );
    expect(conflict).toBeGreaterThanOrEqual(0);
    expect(mine[conflict]!.level).toBe("debug");
    expect(
      mine.some((l) => l.message === "conflict on write; re-reading from the cache" && l.level === "debug"),
    ).toBe(true);
    const written = mine.findIndex((l) => l.message === "checkpoint mirrored to the primary");
    expect(written).toBeGreaterThan(conflict);
    expect(mine.filter((l) => l.level === "warn" || l.level === "error").map((l) => l.message)).toEqual([]);
  }, 90_000);

  test("a store that cannot be read is still a warn, and the run goes on", async () => {
    await e.client.create(SpillwayResources.TrainingRun, checkpointedRun("unreadable", "3s"));
    const done = await eventually(
      () => getRun(e, "unreadable"),
      (r) => r.status?.phase === "Succeeded" || r.status?.phase === "Failed",
      "the run done",
      60_000,
    );
    expect(done.status?.phase).toBe("Succeeded");
    expect(done.status?.checkpoint).toBeUndefined();
    const warns = ofRun("unreadable").filter((l) => l.level === "warn");
    expect(warns.map((l) => l.message)).toContain("could not mirror the newest checkpoint");
  }, 90_000);
});
