/**
 * Optional persistence under a state directory: a snapshot (`snapshot.json`: every object and
 * the resourceVersion it was taken at) plus an append-only change log (`changes.jsonl`).
 * Changes are appended write-behind, batched on a short timer, so a burst of creates costs
 * one file append per batch instead of one write per object; once the log outgrows the
 * snapshot, a new snapshot is written (to a temporary file, then renamed) and the log is
 * truncated. Loading reads the snapshot and replays the log entries after it, ignoring a
 * torn last line (a crash mid-append loses at most the last batch, never the file).
 */
import { appendFile, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { ChangeEvent, ObjectStore } from "./store.ts";
import type { KubeObject } from "./types.ts";

const SNAPSHOT = "snapshot.json";
const LOG = "changes.jsonl";
/** Batches are appended this long after their first change. */
const FLUSH_DELAY_MS = 25;
const MIN_LOG_LINES_BEFORE_SNAPSHOT = 5000;

export interface StoredObject {
  resource: string;
  object: KubeObject;
}

interface Snapshot {
  rv: number;
  objects: StoredObject[];
}

interface LogLine {
  rv: number;
  type: ChangeEvent["type"];
  resource: string;
  object: KubeObject;
}

function keyOf(resource: string, obj: KubeObject): string {
  return `${resource}|${obj.metadata.namespace ?? ""}|${obj.metadata.name}`;
}

/** The state saved in `dir` (empty when there is none yet). */
export async function loadState(dir: string): Promise<Snapshot> {
  const objects = new Map<string, StoredObject>();
  let rv = 0;
  const snapshotText = await readFile(join(dir, SNAPSHOT), "utf8").catch(() => undefined);
  if (snapshotText !== undefined) {
    const snap = JSON.parse(snapshotText) as Snapshot;
    rv = snap.rv;
    for (const s of snap.objects) objects.set(keyOf(s.resource, s.object), s);
  }
  const logText = await readFile(join(dir, LOG), "utf8").catch(() => "");
  for (const line of logText.split("\n")) {
    if (line === "") continue;
    let entry: LogLine;
    try {
      entry = JSON.parse(line) as LogLine;
    } catch {
      break; // a torn final line: everything before it is intact
    }
    if (entry.rv <= rv) continue;
    rv = entry.rv;
    const key = keyOf(entry.resource, entry.object);
    if (entry.type === "DELETED") objects.delete(key);
    else objects.set(key, { resource: entry.resource, object: entry.object });
  }
  return { rv, objects: [...objects.values()] };
}

export class Persistence {
  private pending: string[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** Writes run one after another, in order. */
  private chain: Promise<void> = Promise.resolve();
  private logLines = 0;
  /** How many objects are stored, kept from the events (counting the store would sort it). */
  private objects = 0;
  private lastError: Error | undefined;

  constructor(
    private readonly dir: string,
    private readonly store: ObjectStore,
  ) {}

  static async open(dir: string, store: ObjectStore): Promise<Persistence> {
    await mkdir(dir, { recursive: true });
    const p = new Persistence(dir, store);
    // Start from a fresh snapshot of what was loaded: the old log is folded into it.
    await p.enqueue(() => p.writeSnapshot());
    store.subscribe((ev) => p.record(ev));
    return p;
  }

  /** The last write failure, if any (the sandbox keeps serving from memory). */
  error(): Error | undefined {
    return this.lastError;
  }

  private record(ev: ChangeEvent): void {
    if (ev.type === "ADDED") this.objects++;
    if (ev.type === "DELETED") this.objects--;
    const line: LogLine = { rv: ev.rv, type: ev.type, resource: ev.resource, object: ev.object };
    this.pending.push(JSON.stringify(line));
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, FLUSH_DELAY_MS);
  }

  /** Appends what is pending; resolves once it is on disk. */
  flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    return this.enqueue(async () => {
      if (this.pending.length > 0) {
        const batch = this.pending;
        this.pending = [];
        await appendFile(join(this.dir, LOG), `${batch.join("\n")}\n`);
        this.logLines += batch.length;
      }
      if (this.logLines > Math.max(MIN_LOG_LINES_BEFORE_SNAPSHOT, 2 * this.objects))
        await this.writeSnapshot();
    });
  }

  async close(): Promise<void> {
    await this.flush();
  }

  private enqueue(task: () => Promise<void>): Promise<void> {
    this.chain = this.chain.then(task).catch((e: unknown) => {
      this.lastError = e instanceof Error ? e : new Error(String(e));
    });
    return this.chain;
  }

  /**
   * The snapshot is taken synchronously (changes after it stay pending in memory), written
   * beside the old one and renamed over it; only then is the log emptied.
   */
  private async writeSnapshot(): Promise<void> {
    const objects: StoredObject[] = [];
    for (const resource of this.store.resources())
      for (const object of this.store.list(resource)) objects.push({ resource, object });
    const text = JSON.stringify({ rv: this.store.currentRv(), objects } satisfies Snapshot);
    const tmp = join(this.dir, `${SNAPSHOT}.tmp`);
    await writeFile(tmp, text);
    await rename(tmp, join(this.dir, SNAPSHOT));
    await writeFile(join(this.dir, LOG), "");
    this.logLines = 0;
    this.objects = objects.length;
  }
}
