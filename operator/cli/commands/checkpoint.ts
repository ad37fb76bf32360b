/**
 * `spillway checkpoint agent|restore|list|replicate|trainer`: the checkpoint sidecar, its init
 * step, a listing of a store's checkpoints, a verified copy between stores, and the sandbox's
 * trainer stand-in. See operator/checkpoints/README.md.
 */
import { writeFile } from "node:fs/promises";
import type { Command } from "commander";
import { CheckpointAgent } from "../../checkpoints/agent.ts";
import { confineCheckpointPath } from "../../checkpoints/paths.ts";
import { replicateCheckpoint } from "../../checkpoints/replicate.ts";
import { latestCommitted, listCheckpoints } from "../../checkpoints/repository.ts";
import { restoreLatest, summarizeRestore } from "../../checkpoints/restore.ts";
import { credentialsFromEnv } from "../../dataplane/credentials.ts";
import { type ObjectStore, openStore } from "../../dataplane/store.ts";
import { runTrainer } from "../../sandbox/trainer/trainer.ts";
import { workloadProcess } from "../../sandbox/trainer/workload.ts";
import { parseDuration } from "../../util/duration.ts";

async function open(uri: string): Promise<ObjectStore> {
  return openStore(uri, credentialsFromEnv());
}

const log = (line: string) => console.error(`${new Date().toISOString()} checkpoint: ${line}`);

function expectStepOf(raw: string | undefined): { expectStep?: number } {
  if (raw === undefined || raw === "") return {};
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`expected step must be a step number, got ${raw}`);
  return { expectStep: n };
}

function nonNegativeInt(what: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 0)
      throw new Error(`${what} must be a non-negative integer, got ${v}`);
    return n;
  };
}

function positiveInt(what: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${what} must be a positive integer, got ${v}`);
    return n;
  };
}

/** One JSON event line on stdout (`--events`): what log readers (the sandbox's tests and demo) parse. */
const emit = (event: Record<string, unknown>): void => {
  process.stdout.write(`${JSON.stringify(event)}\n`);
};

/** A positive integer from the environment, else the fallback (a flag's default). */
function envInt(name: string, fallback: number): number {
  const n = Number(process.env[name]);
  return Number.isInteger(n) && n >= 1 ? n : fallback;
}

/** Runs an action, turning a thrown error into one clear line and exit code 2. */
function guarded<A extends unknown[]>(fn: (...args: A) => Promise<void>) {
  return async (...args: A): Promise<void> => {
    try {
      await fn(...args);
    } catch (e) {
      console.error(`spillway checkpoint: ${(e as Error).message}`);
      process.exitCode = 2;
    }
  };
}

export function register(program: Command): void {
  const cmd = program
    .command("checkpoint")
    .description("Portable checkpoints: agent, restore, list, replicate; sandbox trainer and workload.");

  cmd
    .command("agent")
    .description("Watch a checkpoint path and upload, verify, commit and prune checkpoints (native sidecar).")
    .requiredOption(
      "--path <dir>",
      "checkpoint path the trainer writes, one subdirectory per step (default $SPILLWAY_CHECKPOINT_DIR)",
      process.env.SPILLWAY_CHECKPOINT_DIR,
    )
    .requiredOption(
      "--store <uri>",
      "store URI of this run's checkpoints: azblob://, s3://, file:// (default $SPILLWAY_CHECKPOINT_STORE)",
      process.env.SPILLWAY_CHECKPOINT_STORE,
    )
    .requiredOption(
      "--run-uid <uid>",
      "the TrainingRun's uid, recorded in every manifest (default $SPILLWAY_RUN_UID)",
      process.env.SPILLWAY_RUN_UID,
    )
    .option("--root <dir>", "allowed root the path must lie under (default: the path itself)")
    .option(
      "--keep <n>",
      "committed checkpoints kept in the store (default $SPILLWAY_CHECKPOINT_KEEP, else 3)",
      positiveInt("--keep"),
      envInt("SPILLWAY_CHECKPOINT_KEEP", 3),
    )
    .option(
      "--quiet-period <duration>",
      "a directory unchanged this long is complete (no DCP, no marker)",
      "5s",
    )
    .option("--chunk-size <bytes>", "chunk size for deduplication", positiveInt("--chunk-size"))
    .option("--events", "print one JSON line per committed checkpoint on stdout")
    .action(
      guarded(
        async (o: {
          path: string;
          store: string;
          runUid: string;
          root?: string;
          keep: number;
          quietPeriod: string;
          chunkSize?: number;
          events?: boolean;
        }) => {
          const agent = new CheckpointAgent({
            path: o.path,
            ...(o.root ? { root: o.root } : {}),
            store: await open(o.store),
            runUid: o.runUid,
            keep: o.keep,
            quietPeriodMs: parseDuration(o.quietPeriod),
            ...(o.chunkSize ? { chunkSize: o.chunkSize } : {}),
            log,
            ...(o.events
              ? {
                  onCommitted: (r) =>
                    emit({
                      event: "committed",
                      step: r.step,
                      bytesSent: r.bytesSent,
                      bytesDeduplicated: r.bytesDeduplicated,
                    }),
                }
              : {}),
          });
          // Listen before starting: a SIGTERM during the first scan still drains.
          const stopped = new Promise<void>((resolve) => {
            const done = () => resolve();
            process.once("SIGTERM", done);
            process.once("SIGINT", done);
          });
          await agent.start();
          log(`watching ${agent.path} (keep ${o.keep}, quiet period ${o.quietPeriod})`);
          // As a native sidecar it runs until the kubelet stops it, after the trainer exited
          // (or the pod is deleted): then it uploads every complete checkpoint and exits 0.
          await stopped;
          log("stopping: uploading what is complete");
          await agent.stop(true);
          log("drained");
        },
      ),
    );

  cmd
    .command("restore")
    .description("Restore the newest committed checkpoint that verifies into the path (init step).")
    .requiredOption(
      "--path <dir>",
      "checkpoint path to restore into (default $SPILLWAY_CHECKPOINT_DIR)",
      process.env.SPILLWAY_CHECKPOINT_DIR,
    )
    .requiredOption(
      "--store <uri>",
      "store URI of the run's checkpoints (default $SPILLWAY_CHECKPOINT_STORE)",
      process.env.SPILLWAY_CHECKPOINT_STORE,
    )
    .option("--root <dir>", "allowed root the path must lie under (default: the path itself)")
    .option(
      "--run-uid <uid>",
      "refuse checkpoints of another run (default $SPILLWAY_RUN_UID)",
      process.env.SPILLWAY_RUN_UID,
    )
    .option(
      "--world-size <n>",
      "world size of the resumed run (default $SPILLWAY_NNODES)",
      positiveInt("--world-size"),
      process.env.SPILLWAY_NNODES ? envInt("SPILLWAY_NNODES", 1) : undefined,
    )
    .option("--allow-reshard", "allow a DCP checkpoint of another world size (DCP reshards on load)")
    .option(
      "--expect-step <n>",
      "step the operator replicated for this attempt (default $SPILLWAY_RESUME_STEP); an older restore is reported",
    )
    .option("--json", "print the result as JSON on stdout")
    .option("--result-file <file>", "also write a JSON summary (under 4 KiB) here, e.g. /dev/termination-log")
    .option("--events", "print the outcome as one JSON event line (restored or fresh) on stdout")
    .action(
      guarded(
        async (o: {
          path: string;
          store: string;
          root?: string;
          runUid?: string;
          worldSize?: number;
          allowReshard?: boolean;
          expectStep?: string;
          json?: boolean;
          resultFile?: string;
          events?: boolean;
        }) => {
          const { path } = confineCheckpointPath(o.path, o.root);
          const result = await restoreLatest(await open(o.store), path, {
            ...(o.runUid ? { runUid: o.runUid } : {}),
            ...(o.worldSize ? { worldSize: o.worldSize } : {}),
            allowReshard: o.allowReshard ?? false,
            ...expectStepOf(o.expectStep ?? process.env.SPILLWAY_RESUME_STEP),
            log,
          });
          if (o.resultFile) await writeFile(o.resultFile, JSON.stringify(summarizeRestore(result)));
          const rejected = result.rejected.map((r) => r.step);
          if (o.events && result.restored)
            emit({
              event: "restored",
              step: result.restored.step,
              digest: result.restored.manifestDigest,
              behindExpected: result.behindExpected,
              rejected,
            });
          else if (o.events && result.outcome !== "AllRejected") emit({ event: "fresh", rejected });
          if (o.json) console.log(JSON.stringify(result));
          else if (o.events) {
            // The event line says it.
          } else if (result.restored)
            console.log(`restored step ${result.restored.step} into ${result.restored.directory}`);
          else
            console.log(
              result.outcome === "NoCheckpoint" ? "no committed checkpoint" : "every checkpoint rejected",
            );
          // Starting fresh when committed checkpoints exist but none verifies would lose work silently.
          if (result.outcome === "AllRejected") process.exitCode = 1;
        },
      ),
    );

  cmd
    .command("list")
    .description("List a store's checkpoints: committed, invalid and partial.")
    .requiredOption("--store <uri>", "store URI of the run's checkpoints")
    .option("--json", "print JSON")
    .action(
      guarded(async (o: { store: string; json?: boolean }) => {
        const listing = await listCheckpoints(await open(o.store));
        if (o.json) {
          console.log(JSON.stringify(listing));
          return;
        }
        console.log(["STEP", "STATE", "BYTES", "FRAMEWORK", "WORLD", "COMMITTED", "DIGEST"].join("\t"));
        for (const c of listing.committed) {
          console.log(
            [
              c.step,
              "Committed",
              c.totalBytes,
              c.framework,
              c.worldSize ?? "-",
              c.committedAt,
              c.manifestDigest.slice(0, 19),
            ].join("\t"),
          );
        }
        for (const i of listing.invalid)
          console.log([i.step, "Invalid", "-", "-", "-", "-", i.reason].join("\t"));
        for (const s of listing.uncommitted) console.log([s, "Partial", "-", "-", "-", "-", "-"].join("\t"));
      }),
    );

  cmd
    .command("replicate")
    .description("Copy a committed checkpoint (default: the newest) from one store to another, verified.")
    .requiredOption("--from <uri>", "source store URI of the run's checkpoints")
    .requiredOption("--to <uri>", "destination store URI of the run's checkpoints")
    .option(
      "--step <n>",
      "the step to copy (default: the source's newest committed)",
      nonNegativeInt("--step"),
    )
    .option("--json", "print the result as JSON")
    .action(
      guarded(async (o: { from: string; to: string; step?: number; json?: boolean }) => {
        const src = await open(o.from);
        const dst = await open(o.to);
        const step = o.step ?? (await latestCommitted(src))?.step;
        if (step === undefined) throw new Error(`no committed checkpoint in ${src.displayUri}`);
        const r = await replicateCheckpoint(src, dst, step);
        if (o.json) console.log(JSON.stringify(r));
        else
          console.log(
            r.alreadyPresent
              ? `step ${r.step} already in ${dst.displayUri}`
              : `replicated step ${r.step} to ${dst.displayUri}: ${r.blobsCopied} blobs (${r.bytesCopied} bytes) copied, ${r.blobsSkipped} already there`,
          );
      }),
    );

  cmd
    .command("workload")
    .description(
      "Sandbox training pod: restore, agent and trainer stand-in from SPILLWAY_CHECKPOINT_DIR/STORE/RESUME_STEP; JSON events on stdout.",
    )
    .action(async () => {
      process.exitCode = await workloadProcess();
    });

  cmd
    .command("trainer")
    .description(
      "Sandbox trainer stand-in: trains N steps, writes real checkpoints every K, resumes from the newest complete one in the path.",
    )
    .requiredOption(
      "--path <dir>",
      "checkpoint path (default $SPILLWAY_CHECKPOINT_DIR)",
      process.env.SPILLWAY_CHECKPOINT_DIR,
    )
    .requiredOption("--steps <n>", "train until this step", positiveInt("--steps"))
    .option("--every <k>", "checkpoint every K steps", positiveInt("--every"), 10)
    .option(
      "--world-size <n>",
      "ranks, one .distcp shard each (default $SPILLWAY_NNODES, else 2)",
      positiveInt("--world-size"),
      envInt("SPILLWAY_NNODES", 2),
    )
    .option("--step-delay <duration>", "simulated compute per step", "0ms")
    .option("--tensor-bytes <n>", "bytes per model tensor (8 tensors)", positiveInt("--tensor-bytes"))
    .option(
      "--keep-local <n>",
      "local checkpoint directories kept (older ones removed, as a framework's rotation)",
      positiveInt("--keep-local"),
      3,
    )
    .option("--no-resume", "start at step 1 even when a checkpoint is present")
    .option("--ready-marker", "write .spillway-complete after each checkpoint")
    .option("--events", "JSON event lines on stdout (checkpoint, finished), log lines on stderr")
    .action(
      guarded(
        async (o: {
          path: string;
          steps: number;
          every: number;
          worldSize: number;
          stepDelay: string;
          tensorBytes?: number;
          keepLocal: number;
          resume: boolean;
          readyMarker?: boolean;
          events?: boolean;
        }) => {
          // SIGTERM (pod deletion) stops training between steps: what is on disk stays whole.
          const stop = new AbortController();
          const onSignal = () => stop.abort(new Error("stopped by signal"));
          process.once("SIGTERM", onSignal);
          process.once("SIGINT", onSignal);
          try {
            const result = await runTrainer({
              dir: o.path,
              steps: o.steps,
              every: o.every,
              worldSize: o.worldSize,
              stepDelayMs: parseDuration(o.stepDelay),
              ...(o.tensorBytes ? { tensorBytes: Math.max(4, o.tensorBytes) } : {}),
              keepLocal: o.keepLocal,
              resume: o.resume,
              writeReadyMarker: o.readyMarker ?? false,
              signal: stop.signal,
              ...(o.events
                ? {
                    log: (line: string) => {
                      process.stderr.write(`${new Date().toISOString()} trainer: ${line}\n`);
                    },
                    onCheckpoint: (step: number) => {
                      emit({ event: "checkpoint", step });
                    },
                  }
                : {}),
            });
            if (o.events)
              emit({
                event: "finished",
                step: result.endStep,
                ...(result.resumedFrom !== undefined ? { resumedFrom: result.resumedFrom } : {}),
              });
          } catch (e) {
            if (!stop.signal.aborted) throw e;
            console.error("spillway checkpoint trainer: stopped by signal");
            process.exitCode = 143;
          } finally {
            process.off("SIGTERM", onSignal);
            process.off("SIGINT", onSignal);
          }
        },
      ),
    );
}
