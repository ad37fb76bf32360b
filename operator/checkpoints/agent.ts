/**
 * The checkpoint agent: a native sidecar beside the trainer. It watches the checkpoint path
 * (one subdirectory per checkpoint, the step in its name: `step-000100/`), and uploads each
 * checkpoint once the framework has finished writing it:
 *
 * - a trainer-written marker file (`.spillway-complete`) is present, or
 * - a PyTorch DCP directory has its `.metadata` (DCP writes it last) and every rank's shard, or
 * - (no DCP shards) nothing in the directory changed for the quiet period.
 *
 * A DCP directory without `.metadata` is never uploaded on the quiet period alone: it is a
 * torn checkpoint. Uploads run one at a time, oldest step first; after each commit the store
 * is pruned to `keep`. Checkpoints the store already has committed (e.g. just restored), and
 * local directories older than the newest committed step, are not uploaded. A step another
 * writer committed first (`Conflict`) is left to it. A directory refused for its content
 * (symlink out of the root, invalid safetensors) is logged and not retried until it changes.
 * On stop the agent drains: what is complete by then is uploaded.
 */
import { type FSWatcher, watch } from "node:fs";
import { mkdir, readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import type { ObjectStore } from "../dataplane/store.ts";
import { dcpComplete, describeLayout } from "./layout.ts";
import { stepFromName } from "./manifest.ts";
import { confineCheckpointPath, PathRefusedError } from "./paths.ts";
import {
  CheckpointRejectedError,
  listSteps,
  loadCommitted,
  type PruneResult,
  pruneCheckpoints,
} from "./repository.ts";
import { listCheckpointFiles, READY_MARKERS, type UploadResult, uploadCheckpoint } from "./upload.ts";

export interface AgentOptions {
  /** The checkpoint path the trainer writes to. */
  path: string;
  /** Allowed root the path must lie under (default: the path itself). */
  root?: string;
  store: ObjectStore;
  runUid: string;
  /** Committed checkpoints kept in the store (default 3). */
  keep?: number;
  /** Default 5 s. */
  quietPeriodMs?: number;
  chunkSize?: number;
  concurrency?: number;
  /** Unreferenced blobs younger than this survive pruning (default 1 h; see `pruneCheckpoints`). */
  blobGraceMs?: number;
  log?: (line: string) => void;
  onCommitted?: (result: UploadResult, pruned: PruneResult) => void;
  now?: () => number;
}

type DirState = { signature: string; changedAt: number };

export class CheckpointAgent {
  readonly path: string;
  readonly root: string;
  /** Every checkpoint this agent committed, in order. */
  readonly committed: UploadResult[] = [];
  private readonly seen = new Map<string, DirState>();
  /** Step → directory signature uploaded (or found already committed in the store). */
  private readonly done = new Map<number, string>();
  private readonly failed = new Map<string, string>();
  private readonly knownBlobs = new Set<string>();
  /**
   * Newest step committed in the store. Older local directories are never uploaded: after a
   * restart they would be pruned again at once (the trainer keeps old directories around).
   */
  private newestInStore = -1;
  private initialised = false;
  /** Steps whose directory was refused (path or format): never committed, not waited for. */
  private readonly refusedSteps = new Set<number>();
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private readonly log: (line: string) => void;
  private readonly now: () => number;

  constructor(private readonly opts: AgentOptions) {
    const confined = confineCheckpointPath(opts.path, opts.root);
    this.path = confined.path;
    this.root = confined.root;
    this.log = opts.log ?? (() => {});
    this.now = opts.now ?? Date.now;
  }

  /** Learns what the store holds, uploads what is ready, and starts watching. */
  async start(): Promise<void> {
    await mkdir(this.path, { recursive: true });
    await this.init();
    await this.scan();
    this.watcher = watch(this.path, { recursive: true }, () => this.trigger());
    this.watcher.on("error", (e) => this.log(`watch error: ${e.message}; polling continues`));
    const poll = Math.max(50, Math.min(1000, (this.opts.quietPeriodMs ?? 5000) / 4));
    this.timer = setInterval(() => this.trigger(), poll);
  }

  /** Learns which steps the store holds committed (once; `start` and `scanOnce` call it). */
  private async init(): Promise<void> {
    if (this.initialised) return;
    const { marked } = await listSteps(this.opts.store);
    for (const step of marked) this.done.set(step, "in-store");
    this.newestInStore = marked[0] ?? -1;
    await this.seedKnownBlobs();
    this.initialised = true;
  }

  /**
   * Resolves once `step` (or a newer one) is committed in the store, or its directory was
   * refused (a refused checkpoint will never commit; the refusal is logged). The sandbox trainer uses
   * it as DCP's async save does: the next checkpoint waits until the previous one is persisted,
   * so the trainer's own rotation never deletes a directory before it was uploaded.
   */
  async waitForCommitted(step: number, signal?: AbortSignal): Promise<void> {
    while (this.newestInStore < step && !this.refusedSteps.has(step)) {
      signal?.throwIfAborted();
      if (this.stopped) throw new Error(`agent stopped before step ${step} was committed`);
      this.trigger();
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /** Stops watching; with `drain` (default), uploads every checkpoint complete by now. */
  async stop(drain = true): Promise<void> {
    this.stopped = true;
    this.watcher?.close();
    if (this.timer) clearInterval(this.timer);
    await this.running;
    if (drain) await this.scanOnce(true);
  }

  private trigger(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.scan();
      } while (this.again && !this.stopped);
    })().finally(() => {
      this.running = undefined;
    });
  }

  private async scan(): Promise<void> {
    try {
      await this.scanOnce(false);
    } catch (e) {
      this.log(`scan failed (will retry): ${(e as Error).message}`);
    }
  }

  /**
   * One pass: uploads every ready, not yet committed checkpoint directory, oldest first.
   * `final` treats a quiet-period checkpoint as ready at once (the trainer has exited).
   */
  async scanOnce(final: boolean): Promise<UploadResult[]> {
    await this.init();
    const out: UploadResult[] = [];
    let entries: string[];
    try {
      entries = (await readdir(this.path, { withFileTypes: true }))
        .filter((e) => e.isDirectory() && !e.name.startsWith("."))
        .map((e) => e.name);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return out;
      throw e;
    }
    const candidates = entries
      .map((name) => ({ name, step: stepFromName(name) }))
      .filter((c): c is { name: string; step: number } => c.step !== undefined)
      .sort((a, b) => a.step - b.step);
    for (const { name, step } of candidates) {
      const dir = join(this.path, name);
      const signature = await this.signature(dir);
      if (signature === undefined) continue;
      if (this.done.has(step) || step < this.newestInStore) continue;
      if (this.failed.get(name) === signature) continue;
      const prev = this.seen.get(name);
      if (!prev || prev.signature !== signature) this.seen.set(name, { signature, changedAt: this.now() });
      try {
        if (!(await this.ready(dir, name, final))) continue;
        const result = await uploadCheckpoint(this.opts.store, dir, name, {
          runUid: this.opts.runUid,
          step,
          knownBlobs: this.knownBlobs,
          root: this.root,
          ...(this.opts.chunkSize ? { chunkSize: this.opts.chunkSize } : {}),
          ...(this.opts.concurrency ? { concurrency: this.opts.concurrency } : {}),
        });
        this.done.set(step, signature);
        this.newestInStore = Math.max(this.newestInStore, step);
        const pruned = await pruneCheckpoints(this.opts.store, this.opts.keep ?? 3, {
          protect: [step],
          ...(this.opts.blobGraceMs !== undefined ? { blobGraceMs: this.opts.blobGraceMs } : {}),
        });
        if (pruned.removedBlobs > 0 || pruned.removedSteps.length > 0) await this.seedKnownBlobs();
        this.committed.push(result);
        out.push(result);
        this.log(
          `committed step ${step} (${result.files} files, ${result.totalBytes} bytes; sent ${result.bytesSent}, ` +
            `deduplicated ${result.bytesDeduplicated}; ${result.manifestDigest.slice(0, 19)}…)` +
            (pruned.removedSteps.length ? `; pruned steps ${pruned.removedSteps.join(", ")}` : ""),
        );
        this.opts.onCommitted?.(result, pruned);
      } catch (e) {
        if (e instanceof CheckpointRejectedError && e.reason === "Conflict") {
          // Another writer (e.g. a zombie of a lost attempt) committed this step first; its
          // checkpoint is whole, ours is not the committed one. Not retried.
          this.done.set(step, signature);
          this.log(`checkpoint ${name} not committed: ${e.message}`);
          continue;
        }
        if (e instanceof PathRefusedError || (e instanceof Error && e.name === "SafetensorsError")) {
          this.failed.set(name, signature);
          this.refusedSteps.add(step);
          this.log(`checkpoint ${name} refused: ${e.message}`);
          continue;
        }
        throw e;
      }
    }
    return out;
  }

  private async ready(dir: string, name: string, final: boolean): Promise<boolean> {
    // A refused entry (symlink out of the root) propagates: it is reported, not waited on.
    const files = await listCheckpointFiles(dir, this.root).catch((e: unknown) => {
      if (e instanceof PathRefusedError) throw e;
      return undefined;
    });
    if (!files || files.length === 0) return false;
    for (const m of READY_MARKERS) {
      if (
        await stat(join(dir, m)).then(
          () => true,
          () => false,
        )
      )
        return true;
    }
    const layout = await describeLayout(dir, files).catch(() => undefined);
    if (layout && layout.dcp.length > 0) return dcpComplete(layout);
    if (final) return true;
    const s = this.seen.get(name);
    return s !== undefined && this.now() - s.changedAt >= (this.opts.quietPeriodMs ?? 5000);
  }

  /** Names, sizes and mtimes of every file: changes whenever the trainer writes. */
  private async signature(dir: string): Promise<string | undefined> {
    const parts: string[] = [];
    const walk = async (d: string, rel: string): Promise<void> => {
      for (const e of await readdir(d, { withFileTypes: true })) {
        const full = join(d, e.name);
        if (e.isDirectory()) await walk(full, `${rel}${e.name}/`);
        else {
          const st = await stat(full).catch(() => undefined);
          parts.push(`${rel}${e.name}:${st?.size ?? -1}:${st?.mtimeMs ?? -1}`);
        }
      }
    };
    try {
      await walk(dir, "");
    } catch {
      return undefined;
    }
    return parts.sort().join("|");
  }

  /** Blobs of the newest committed checkpoint: present in the store, never asked about again. */
  private async seedKnownBlobs(): Promise<void> {
    this.knownBlobs.clear();
    const { marked } = await listSteps(this.opts.store);
    for (const step of marked) {
      try {
        const { manifest } = await loadCommitted(this.opts.store, step);
        for (const f of manifest.files) for (const c of f.chunks) this.knownBlobs.add(c.sha256);
        return;
      } catch {
        // an invalid newest checkpoint: try the next one
      }
    }
  }
}
