/**
 * The sandbox API server under load: create, list and watch throughput for 10,000
 * TrainingRuns (CRD schema validation on every write, persistence to a state directory on),
 * and the server's memory with them stored.
 *
 * The server runs in a child process (this file with `--serve`), so the client's work and
 * memory are not counted as the server's; they talk over HTTP on 127.0.0.1 as kubectl and the
 * operator do. The peer figure is a bare node:http server answering every request with a
 * fixed JSON body: the HTTP floor on this machine, which no API server can beat.
 *
 * Usage: npm run bench -- apiserver   (N=… to change the object count)
 */
import { type ChildProcess, fork } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { Agent, createServer, request as httpRequest, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";

const N = Number(process.env.N ?? 10_000);
const CONCURRENCY = 16;
const WATCHERS = 10;
const here = fileURLToPath(import.meta.url);
const ROOT = join(here, "..", "..");

type Msg = { type: "ready"; url: string } | { type: "memory"; rss: number; heapUsed: number; cpuS: number };

// ---- server side ---------------------------------------------------------------------------

async function serve(): Promise<void> {
  const { startApiServer } = await import("../operator/sandbox/apiserver/index.ts");
  const stateDir = process.env.STATE_DIR;
  const server = await startApiServer({ name: "bench", stateDir });
  const send = (m: Msg) => process.send?.(m);
  process.on("message", async (m: { type: string }) => {
    if (m.type === "memory") {
      await server.flush();
      (globalThis as { gc?: () => void }).gc?.();
      const mem = process.memoryUsage();
      const cpu = process.cpuUsage();
      send({ type: "memory", rss: mem.rss, heapUsed: mem.heapUsed, cpuS: (cpu.user + cpu.system) / 1e6 });
    }
    if (m.type === "stop") {
      await server.close();
      process.exit(0);
    }
  });
  send({ type: "ready", url: server.url });
}

// ---- client side ---------------------------------------------------------------------------

function request(child: ChildProcess, type: string): Promise<Msg> {
  return new Promise((resolve) => {
    child.once("message", (m: Msg) => resolve(m));
    child.send({ type });
  });
}

async function startChild(stateDir: string): Promise<{ child: ChildProcess; url: string }> {
  const child = fork(join(ROOT, "bin", "run-ts.mjs"), [here, "--serve"], {
    execArgv: ["--expose-gc"],
    env: { ...process.env, STATE_DIR: stateDir },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const ready = await new Promise<Msg>((resolve, reject) => {
    child.once("message", (m: Msg) => resolve(m));
    child.once("exit", (code) => reject(new Error(`server exited ${code}`)));
  });
  if (ready.type !== "ready") throw new Error("unexpected message");
  return { child, url: ready.url };
}

/** Runs `total` calls of `fn(i)` with `CONCURRENCY` in flight; returns seconds taken. */
async function pool(total: number, fn: (i: number) => Promise<void>): Promise<number> {
  const start = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < total) await fn(next++);
    }),
  );
  return (performance.now() - start) / 1000;
}

/** node:http with keep-alive: a lighter client than fetch, so the client is not what is measured. */
const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY * 2 });

function call(
  method: string,
  url: string,
  body?: unknown,
  contentType = "application/json",
): Promise<unknown> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      url,
      {
        method,
        agent,
        headers: payload ? { "Content-Type": contentType, "Content-Length": Buffer.byteLength(payload) } : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const parsed = JSON.parse(Buffer.concat(chunks).toString("utf8"));
          if ((res.statusCode ?? 500) >= 300)
            reject(new Error(`${res.statusCode}: ${JSON.stringify(parsed)}`));
          else resolve(parsed);
        });
      },
    );
    req.on("error", reject);
    req.end(payload);
  });
}

/** Reads a watch stream until `count` events of `type` arrived; returns when that happened. */
function readEvents(url: string, type: string, count: number, opened: () => void): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, (res: IncomingMessage) => {
      opened();
      let buffer = "";
      let seen = 0;
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        buffer += chunk;
        let nl = buffer.indexOf("\n");
        while (nl >= 0) {
          if (buffer.startsWith(`{"type":"${type}"`)) seen++;
          buffer = buffer.slice(nl + 1);
          nl = buffer.indexOf("\n");
        }
        if (seen >= count) {
          resolve(performance.now());
          req.destroy();
        }
      });
      res.on("end", () => reject(new Error("watch ended early")));
    });
    req.on("error", (e) => {
      if (!req.destroyed) reject(e);
    });
    req.end();
  });
}

const mb = (b: number) => `${(b / 1024 / 1024).toFixed(1)} MiB`;
const rate = (n: number, s: number) => `${Math.round(n / s).toLocaleString("en-US")}/s`;

function dirSize(dir: string): number {
  return readdirSync(dir).reduce((n, f) => n + statSync(join(dir, f)).size, 0);
}

/** The peer: a bare node:http server answering 201 with a fixed JSON body. */
async function floor(): Promise<number> {
  const body = JSON.stringify({ kind: "Status", status: "Success" });
  const srv = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(201, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
      res.end(body);
    });
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}/`;
  const payload = { some: "object", with: { a: "body" } };
  const s = await pool(N, async () => {
    await call("POST", url, payload);
  });
  await new Promise<void>((r) => srv.close(() => r()));
  return s;
}

async function main(): Promise<void> {
  const stateDir = mkdtempSync(join(tmpdir(), "spillway-bench-apiserver-"));
  const { child, url } = await startChild(stateDir);
  try {
    const crd = parse(readFileSync(join(ROOT, "crds", "spillway.dev_trainingruns.yaml"), "utf8"));
    await call("POST", `${url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions`, crd);
    const run = parse(readFileSync(join(ROOT, "examples", "40-trainingrun-training.yaml"), "utf8"));
    const trs = `${url}/apis/spillway.dev/v1alpha1/namespaces/default/trainingruns`;
    const base = (await request(child, "memory")) as Extract<Msg, { type: "memory" }>;

    // A watcher from the start sees every create (live fan-out during the create phase).
    let openedLive = false;
    const live = readEvents(`${trs}?watch=1&resourceVersion=1`, "ADDED", N, () => {
      openedLive = true;
    });
    while (!openedLive) await new Promise((r) => setTimeout(r, 5));

    const createStart = performance.now();
    const createS = await pool(N, async (i) => {
      const body = {
        ...run,
        metadata: { name: `run-${String(i).padStart(5, "0")}`, labels: { shard: String(i % 10) } },
      };
      await call("POST", trs, body);
    });
    const liveDone = await live;
    const full = (await request(child, "memory")) as Extract<Msg, { type: "memory" }>;

    // Full lists, as an informer's initial list does.
    const LISTS = 5;
    let listed = 0;
    const listStart = performance.now();
    for (let i = 0; i < LISTS; i++) {
      const list = (await call("GET", trs)) as { items: unknown[] };
      listed += list.items.length;
    }
    const listS = (performance.now() - listStart) / 1000;

    // Paged list (limit=500), as client-go's pager does.
    const pageStart = performance.now();
    let paged = 0;
    let cont = "";
    do {
      const page = (await call("GET", `${trs}?limit=500${cont ? `&continue=${cont}` : ""}`)) as {
        items: unknown[];
        metadata: { continue?: string };
      };
      paged += page.items.length;
      cont = page.metadata.continue ?? "";
    } while (cont);
    const pageS = (performance.now() - pageStart) / 1000;

    // Label-selected list (one shard in ten).
    const selStart = performance.now();
    const sel = (await call("GET", `${trs}?labelSelector=shard%3D3`)) as { items: unknown[] };
    const selS = (performance.now() - selStart) / 1000;

    // A watch without a version starts with N synthetic ADDED events.
    const initialStart = performance.now();
    const initialDone = await readEvents(`${trs}?watch=1`, "ADDED", N, () => {});
    const initialS = (initialDone - initialStart) / 1000;

    // Fan-out: WATCHERS watches, N status updates; every watcher must see every update.
    const rv = ((await call("GET", `${trs}?limit=1`)) as { metadata: { resourceVersion: string } }).metadata
      .resourceVersion;
    let opened = 0;
    const watchers = Array.from({ length: WATCHERS }, () =>
      readEvents(`${trs}?watch=1&resourceVersion=${rv}`, "MODIFIED", N, () => opened++),
    );
    while (opened < WATCHERS) await new Promise((r) => setTimeout(r, 5));
    const beforeUpdates = (await request(child, "memory")) as Extract<Msg, { type: "memory" }>;
    const fanStart = performance.now();
    const updateS = await pool(N, async (i) => {
      const name = `run-${String(i).padStart(5, "0")}`;
      await call(
        "PATCH",
        `${trs}/${name}/status`,
        { status: { phase: "Pending", attempt: 1 } },
        "application/merge-patch+json",
      );
    });
    const fanDone = Math.max(...(await Promise.all(watchers)));
    const fanS = (fanDone - fanStart) / 1000;
    const updated = (await request(child, "memory")) as Extract<Msg, { type: "memory" }>;

    const persisted = dirSize(stateDir);
    const floorS = await floor();

    console.log(
      `sandbox API server, ${N.toLocaleString("en-US")} TrainingRuns, ${CONCURRENCY} requests in flight, persistence on`,
    );
    console.log(`  create (validated, persisted)   ${createS.toFixed(2)} s   ${rate(N, createS)}`);
    console.log(
      `  server CPU per create           ${(((full.cpuS - base.cpuS) / N) * 1000).toFixed(2)} ms (incl. the live watch)`,
    );
    console.log(
      `  live watch saw all creates      ${((liveDone - createStart) / 1000).toFixed(2)} s after the first`,
    );
    console.log(
      `  full list x${LISTS}                    ${listS.toFixed(2)} s   ${rate(listed, listS)} objects`,
    );
    console.log(`  paged list (limit=500)          ${pageS.toFixed(2)} s   ${rate(paged, pageS)} objects`);
    console.log(
      `  label-selected list (1/10)      ${(selS * 1000).toFixed(0)} ms  ${sel.items.length} items`,
    );
    console.log(`  watch initial events            ${initialS.toFixed(2)} s   ${rate(N, initialS)} events`);
    console.log(`  status updates                  ${updateS.toFixed(2)} s   ${rate(N, updateS)}`);
    console.log(
      `  server CPU per update           ${(((updated.cpuS - beforeUpdates.cpuS) / N) * 1000).toFixed(2)} ms (incl. ${WATCHERS} watches)`,
    );
    console.log(
      `  fan-out to ${WATCHERS} watchers           ${fanS.toFixed(2)} s   ${rate(N * WATCHERS, fanS)} events delivered`,
    );
    console.log(
      `  server memory: rss ${mb(base.rss)} -> ${mb(full.rss)}, heap ${mb(base.heapUsed)} -> ${mb(full.heapUsed)} (${((full.heapUsed - base.heapUsed) / N / 1024).toFixed(1)} KiB/object incl. watch history)`,
    );
    console.log(`  state directory on disk         ${mb(persisted)}`);
    console.log(`  (load average during the run: ${loadavg()[0]!.toFixed(1)} on ${cpus().length} cores)`);
    console.log(`peer: bare node:http JSON server (HTTP floor), ${N.toLocaleString("en-US")} POSTs`);
    console.log(`  requests                        ${floorS.toFixed(2)} s   ${rate(N, floorS)}`);
  } finally {
    const exited = new Promise((r) => child.once("exit", r));
    child.send({ type: "stop" });
    await exited;
    agent.destroy();
    rmSync(stateDir, { recursive: true, force: true });
  }
}

if (process.argv.includes("--serve")) await serve();
else await main();
