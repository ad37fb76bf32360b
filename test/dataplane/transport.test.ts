/**
 * The stores' HTTP transport (operator/dataplane/transport.ts): its sockets read into one
 * buffer, reused for every read by every socket of the process (net/tls `onread`). What must
 * hold whatever the reads look like: every header and body byte arrives intact when a response is split at any byte
 * (headers across reads, a body chunk across reads, the next response's bytes in the same read
 * as the end of the previous one on a keep-alive socket), over plain TCP and over TLS, with a
 * reader slower than the socket (flow control), and the same without the buffer.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import type { IncomingMessage } from "node:http";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer as createTlsServer, type TLSSocket } from "node:tls";
import { LentChunks, setReadObserver } from "../../operator/dataplane/reads.ts";
import { SOCKET_READ_BUFFER, send, type Transport, transport } from "../../operator/dataplane/transport.ts";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** Deterministic bytes (a body whose every position differs from its neighbours'). */
function body(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return b;
}

/** A pseudo-random split of `b` into pieces of 1..max bytes (seeded: the same run each time). */
function pieces(b: Buffer, max: number, seed: number): Buffer[] {
  const out: Buffer[] = [];
  let x = seed;
  for (let i = 0; i < b.length; ) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const n = 1 + (x % max);
    out.push(b.subarray(i, i + n));
    i += n;
  }
  return out;
}

/**
 * A raw HTTP/1.1 server: each request on a connection is answered with `responses[i]` (the
 * i-th request of the server), written in small pieces with a pause between them so the
 * client's reads end at arbitrary bytes. `pipelined` writes response i and i+1 back to back in
 * the same pieces once the second request arrived.
 */
interface RawServer {
  port: number;
  connections: number;
  close(): Promise<void>;
}
async function rawServer(
  responses: Buffer[],
  opts: { tls?: { key: Buffer; cert: Buffer }; maxPiece: number },
): Promise<RawServer> {
  let next = 0;
  const state = { port: 0, connections: 0 };
  const onConnection = (socket: Socket | TLSSocket) => {
    state.connections++;
    socket.setNoDelay(true);
    let pending = "";
    let writing = Promise.resolve();
    socket.on("data", (d: Buffer) => {
      pending += d.toString("latin1");
      for (let end = pending.indexOf("\r\n\r\n"); end >= 0; end = pending.indexOf("\r\n\r\n")) {
        pending = pending.slice(end + 4);
        const response = responses[next++ % responses.length]!;
        writing = writing.then(async () => {
          // Split at every few bytes where the headers and a body's start are, in pieces of
          // up to 20,000 bytes after that (a read then ends anywhere in a body chunk).
          const fine = Math.min(response.length, 4096);
          const split = [
            ...pieces(response.subarray(0, fine), opts.maxPiece, next),
            ...pieces(response.subarray(fine), 20_000, next),
          ];
          for (const p of split) {
            if (socket.destroyed) return;
            socket.write(p);
            await new Promise((r) => setImmediate(r));
          }
        });
      }
    });
    socket.on("error", () => {});
  };
  const server: Server = opts.tls
    ? createTlsServer({ key: opts.tls.key, cert: opts.tls.cert }, onConnection)
    : createServer(onConnection);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  state.port = (server.address() as { port: number }).port;
  return Object.assign(state, {
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
      }),
  }) as RawServer;
}

function response(status: number, headers: [string, string][], payload: Buffer, chunked: boolean): Buffer {
  const head = [`HTTP/1.1 ${status} OK`, ...headers.map(([k, v]) => `${k}: ${v}`)];
  if (!chunked) {
    head.push(`Content-Length: ${payload.length}`);
    return Buffer.concat([Buffer.from(`${head.join("\r\n")}\r\n\r\n`, "latin1"), payload]);
  }
  head.push("Transfer-Encoding: chunked");
  const parts: Buffer[] = [Buffer.from(`${head.join("\r\n")}\r\n\r\n`, "latin1")];
  for (const c of pieces(payload, 9000, payload.length)) {
    parts.push(Buffer.from(`${c.length.toString(16)}\r\n`, "latin1"), c, Buffer.from("\r\n", "latin1"));
  }
  parts.push(Buffer.from("0\r\n\r\n", "latin1"));
  return Buffer.concat(parts);
}

async function readSlowly(res: IncomingMessage, pauseEvery: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res as AsyncIterable<Buffer>) {
    chunks.push(c);
    n += c.length;
    if (pauseEvery > 0 && n % pauseEvery < c.length) await new Promise((r) => setTimeout(r, 5));
  }
  return Buffer.concat(chunks);
}

/**
 * Makes a socket of the agent overwrite its read buffer right after each read was handed on:
 * whatever kept a view of the buffer past the read (a header, a body chunk) would then show
 * the scribble. Node's parser copies both, which is what the transport relies on.
 */
function scribbleAfterEachRead(t: Transport): void {
  const agent = t.agent as unknown as { createConnection: (o: object, cb?: unknown) => object };
  const create = agent.createConnection.bind(agent);
  agent.createConnection = (o, cb) => {
    const socket = create(o, cb) as Record<symbol, unknown>;
    const slot = (name: string) => Object.getOwnPropertySymbols(socket).find((s) => s.description === name);
    const buffer = slot("kBuffer");
    const callback = slot("kBufferCb");
    if (!buffer || !callback) throw new Error("the socket has no read buffer of its own");
    const handOn = socket[callback] as (this: unknown, n: number, b: Buffer) => unknown;
    socket[callback] = function (this: unknown, n: number, b: Buffer) {
      const r = handOn.call(this, n, b);
      (socket[buffer] as Buffer).fill(0x5a);
      return r;
    };
    return socket;
  };
}

/** The buffers the sockets of the tests read into: one for the whole process. */
const reading = new Set<unknown>();
afterAll(() => {
  expect(reading.size).toBe(1);
});
function readBufferOf(socket: object): unknown {
  const slot = Object.getOwnPropertySymbols(socket).find((s) => s.description === "kBuffer");
  return slot && (socket as Record<symbol, unknown>)[slot];
}

/** Whether the agent's sockets read into their own buffer (Node's `kBuffer` slot is set). */
function readsIntoOwnBuffer(socket: object): boolean {
  return Object.getOwnPropertySymbols(socket).some((s) => {
    const v = (socket as Record<symbol, unknown>)[s];
    return s.description === "kBuffer" && Buffer.isBuffer(v) && v.length === SOCKET_READ_BUFFER;
  });
}

const LONG_VALUE = "v".repeat(3000);
const cases = (seed: number): { headers: [string, string][]; payload: Buffer; chunked: boolean }[] => [
  { headers: [["x-ms-request-id", `id-${seed}`]], payload: body(0, seed), chunked: false },
  {
    headers: [
      ["etag", `"e${seed}"`],
      ["x-long", LONG_VALUE],
    ],
    payload: body(70_001, seed),
    chunked: false,
  },
  { headers: [["x-amz-request-id", `r${seed}`]], payload: body(300_000 + seed, seed), chunked: true },
  { headers: [["content-type", "application/xml"]], payload: body(1_000_000, seed), chunked: false },
];

describe.each([
  ["plain TCP", false],
  ["TLS", true],
])("responses split at any byte, over %s", (_name, secure) => {
  let tlsMaterial: { key: Buffer; cert: Buffer } | undefined;
  let dir: string | undefined;
  beforeAll(() => {
    if (!secure) return;
    dir = mkdtempSync(join(tmpdir(), "spillway-transport-"));
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        join(dir, "key.pem"),
        "-out",
        join(dir, "cert.pem"),
        "-days",
        "1",
        "-subj",
        "/CN=127.0.0.1",
      ],
      { stdio: "ignore" },
    );
    tlsMaterial = { key: readFileSync(join(dir, "key.pem")), cert: readFileSync(join(dir, "cert.pem")) };
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test.each<[string, Record<string, string>, boolean]>([
    ["with the shared read buffer", {}, false],
    ["with the read buffer overwritten after every read", {}, true],
    ["with Node's reads (SPILLWAY_SOCKET_READ_BUFFER=0)", { SPILLWAY_SOCKET_READ_BUFFER: "0" }, false],
  ])("arrive intact %s, on one keep-alive socket, read fast and slowly", async (_how, env, scribble) => {
    const expected = cases(secure ? 2 : 1);
    const server = await rawServer(
      expected.map((c) => response(200, c.headers, c.payload, c.chunked)),
      { maxPiece: 7, ...(tlsMaterial ? { tls: tlsMaterial } : {}) },
    );
    try {
      const t: Transport = transport(
        new URL(`${secure ? "https" : "http"}://127.0.0.1:${server.port}`),
        1,
        env,
      );
      if (scribble) scribbleAfterEachRead(t);
      const sockets = new Set<object>();
      t.agent.on("free", (s: object) => sockets.add(s));
      for (const [round, pauseEvery] of [0, 100_000].entries()) {
        for (const [i, c] of expected.entries()) {
          const res = await new Promise<IncomingMessage>((resolve, reject) => {
            const req = t.request({
              method: "GET",
              hostname: "127.0.0.1",
              port: server.port,
              path: `/object-${round}-${i}`,
              agent: t.agent,
              ...(secure ? { rejectUnauthorized: false } : {}),
            });
            req.on("response", resolve).on("error", reject).end();
          });
          for (const [k, v] of c.headers) expect(res.headers[k]).toBe(v);
          const got = await readSlowly(res, pauseEvery);
          expect({ length: got.length, sha: sha(got) }).toEqual({
            length: c.payload.length,
            sha: sha(c.payload),
          });
        }
      }
      // Every request went over the one keep-alive socket.
      expect(server.connections).toBe(1);
      expect([...sockets].map(readsIntoOwnBuffer)).toEqual([!("SPILLWAY_SOCKET_READ_BUFFER" in env)]);
      if (!("SPILLWAY_SOCKET_READ_BUFFER" in env)) reading.add(readBufferOf([...sockets][0]!));
      t.agent.destroy();
    } finally {
      await server.close();
    }
  });

  test("several sockets at once, all reading into the one buffer, each response intact", async () => {
    const payloads = [0, 1, 2, 3, 4, 5].map((i) => body(600_000 + i * 77_777, 10 + i));
    const server = await rawServer(
      payloads.map((p, i) => response(200, [["x-i", String(i)]], p, i % 2 === 1)),
      { maxPiece: 5, ...(tlsMaterial ? { tls: tlsMaterial } : {}) },
    );
    try {
      const t = transport(new URL(`${secure ? "https" : "http"}://127.0.0.1:${server.port}`), 4, {});
      t.agent.on("free", (socket: object) => reading.add(readBufferOf(socket)));
      const got = await Promise.all(
        payloads.map(async (_p, i) => {
          const res = await new Promise<IncomingMessage>((resolve, reject) => {
            const req = t.request({
              method: "GET",
              hostname: "127.0.0.1",
              port: server.port,
              path: `/many-${i}`,
              agent: t.agent,
              ...(secure ? { rejectUnauthorized: false } : {}),
            });
            req.on("response", resolve).on("error", reject).end();
          });
          const bytes = await readSlowly(res, i % 2 ? 200_000 : 0);
          return { i: Number(res.headers["x-i"]), sha: sha(bytes) };
        }),
      );
      // Which request got which response is the server's order; every response arrived whole.
      expect(got.map((g) => g.sha).sort()).toEqual(got.map((g) => sha(payloads[g.i]!)).sort());
      expect(new Set(got.map((g) => g.i)).size).toBe(payloads.length);
      expect(server.connections).toBe(4);
      t.agent.destroy();
    } finally {
      await server.close();
    }
  });
});

describe("send() through the read buffer", () => {
  it("a 16 MiB body streamed out and a response read back, many requests at once, bytes intact", async () => {
    // A real node:http server on the other side: request bodies hashed as they arrive.
    const { createServer: createHttpServer } = await import("node:http");
    const srv = createHttpServer((req, res) => {
      const h = createHash("sha256");
      req.on("data", (c: Buffer) => h.update(c));
      req.on("end", () => {
        const digest = h.digest("hex");
        const back = body(Number(req.headers["x-back"] ?? 0), 9);
        res.writeHead(200, { "x-got": digest, "content-length": back.length });
        res.end(back);
      });
    });
    await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
    const port = (srv.address() as { port: number }).port;
    try {
      // Six requests on four sockets, all reading into the one buffer, half read slowly.
      const t = transport(new URL(`http://127.0.0.1:${port}`), 4, {});
      t.agent.on("free", (socket: object) => reading.add(readBufferOf(socket)));
      const out = body(16 * 1024 * 1024, 3);
      const runs = await Promise.all(
        [0, 1, 2, 3, 4, 5].map(async (i) => {
          const res = await send(t, {
            method: "PUT",
            hostname: "127.0.0.1",
            port,
            path: `/x${i}`,
            headers: { "content-length": out.length, "x-back": String(i * 1_000_003) },
            body: out,
            timeoutMs: 30_000,
            timeoutError: () => new Error("timed out"),
          });
          const back = await readSlowly(res, i % 2 ? 1_000_000 : 0);
          return { got: res.headers["x-got"], back: sha(back) };
        }),
      );
      expect(runs).toEqual(
        [0, 1, 2, 3, 4, 5].map((i) => ({ got: sha(out), back: sha(body(i * 1_000_003, 9)) })),
      );
      t.agent.destroy();
    } finally {
      await new Promise<void>((resolve) => {
        srv.closeAllConnections();
        srv.close(() => resolve());
      });
    }
  });
});

describe("send() with a lent body (LentChunks: one buffer, reused for every chunk)", () => {
  /**
   * A real node:http server: request bodies hashed as they arrive, read `slowly` (a pause every
   * 256 KiB, so the client's socket fills and its writes wait), answered with the digest and
   * the bytes received; `failEarly` answers 400 at once without reading the body.
   */
  async function hashingServer(slowly: boolean) {
    const { createServer: createHttpServer } = await import("node:http");
    const received: { bytes: number; complete: boolean }[] = [];
    const srv = createHttpServer((req, res) => {
      const h = createHash("sha256");
      const r = { bytes: 0, complete: false };
      received.push(r);
      req.on("data", (c: Buffer) => {
        h.update(c);
        const before = r.bytes;
        r.bytes += c.length;
        if (slowly && Math.floor(before / 262_144) !== Math.floor(r.bytes / 262_144)) {
          req.pause();
          setTimeout(() => req.resume(), 2);
        }
      });
      req.on("end", () => {
        r.complete = true;
        res.writeHead(200, { "x-got": h.digest("hex"), "x-bytes": String(r.bytes) });
        res.end();
      });
      req.on("error", () => {});
    });
    await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
    const port = (srv.address() as { port: number }).port;
    return {
      port,
      received,
      close: () =>
        new Promise<void>((resolve) => {
          srv.closeAllConnections();
          srv.close(() => resolve());
        }),
    };
  }

  /** Runs `fn` against a fresh `hashingServer` and a transport to it; both closed after. */
  async function withServer(
    slowly: boolean,
    fn: (srv: Awaited<ReturnType<typeof hashingServer>>, t: Transport) => Promise<void>,
  ): Promise<void> {
    const srv = await hashingServer(slowly);
    const t = transport(new URL(`http://127.0.0.1:${srv.port}`), 2, {});
    try {
      await fn(srv, t);
    } finally {
      t.agent.destroy();
      await srv.close();
    }
  }

  /**
   * `data` lent in chunks of `size` bytes from one buffer, which is scribbled over the moment
   * the next chunk is asked for: bytes a sender still held when it asked would arrive
   * scribbled. Records the buffers lent and whether the source was closed.
   */
  function lentFrom(data: Buffer, size: number, fail?: { after: number; error: Error }) {
    const state = { buffers: new Set<ArrayBufferLike>(), lent: 0, closed: false };
    const lent = new LentChunks(async function* () {
      const buf = Buffer.allocUnsafe(size);
      try {
        for (let at = 0; at < data.length; at += size) {
          if (fail && at >= fail.after) throw fail.error;
          const n = data.copy(buf, 0, at, at + size);
          state.buffers.add(buf.buffer);
          state.lent += n;
          yield buf.subarray(0, n);
          buf.fill(0x5a);
          await new Promise((r) => setImmediate(r)); // as a file read would
        }
      } finally {
        state.closed = true;
      }
    });
    return { lent, state };
  }

  const put = (t: Transport, port: number, size: number, lent: LentChunks, signal?: AbortSignal) =>
    send(t, {
      method: "PUT",
      hostname: "127.0.0.1",
      port,
      path: "/lent",
      headers: { "content-length": size },
      body: lent,
      ...(signal ? { signal } : {}),
      timeoutMs: 30_000,
      timeoutError: () => new Error("timed out"),
    });

  it("sends every byte intact through a slow reader, asking for a chunk only once the last was taken", async () => {
    await withServer(true, async (srv, t) => {
      const data = body(24 * 1024 * 1024 + 12_345, 11);
      const runs = await Promise.all(
        [0, 1].map(async () => {
          const { lent, state } = lentFrom(data, 256 * 1024);
          const res = await put(t, srv.port, data.length, lent);
          res.resume();
          return {
            got: res.headers["x-got"],
            bytes: res.headers["x-bytes"],
            buffers: state.buffers.size,
            closed: state.closed,
          };
        }),
      );
      expect(runs).toEqual(
        [0, 1].map(() => ({ got: sha(data), bytes: String(data.length), buffers: 1, closed: true })),
      );
    });
  });

  it("a source that fails mid-way fails the request with its error; the server never sees a whole body", async () => {
    await withServer(false, async (srv, t) => {
      const data = body(4 * 1024 * 1024, 12);
      const { lent, state } = lentFrom(data, 64 * 1024, {
        after: 1024 * 1024,
        error: new Error("source went away"),
      });
      await expect(put(t, srv.port, data.length, lent)).rejects.toThrow("source went away");
      expect(state.closed).toBe(true);
      await new Promise((r) => setTimeout(r, 50));
      expect(srv.received.every((r) => !r.complete && r.bytes < data.length)).toBe(true);
    });
  });

  it("an aborted request stops asking for chunks and closes the source", async () => {
    await withServer(true, async (srv, t) => {
      const data = body(64 * 1024 * 1024, 13);
      const { lent, state } = lentFrom(data, 256 * 1024);
      const controller = new AbortController();
      const sending = put(t, srv.port, data.length, lent, controller.signal);
      while (state.lent < 2 * 1024 * 1024) await new Promise((r) => setTimeout(r, 2));
      controller.abort();
      await expect(sending).rejects.toThrow();
      for (let i = 0; i < 100 && !state.closed; i++) await new Promise((r) => setTimeout(r, 5));
      expect(state.closed).toBe(true);
      expect(state.lent).toBeLessThan(data.length);
    });
  });

  it("as a Readable (the SDK routes): copies of the chunks, the same bytes, each copy reported as a transient read", async () => {
    const seen: number[] = [];
    setReadObserver((n) => seen.push(n));
    try {
      const data = body(3 * 100_000 + 7, 14);
      const { lent } = lentFrom(data, 100_000);
      const got: Buffer[] = [];
      const readable = lent.toReadable();
      readable.on("data", (c: Buffer) => got.push(c));
      await new Promise((resolve, reject) => readable.once("end", resolve).once("error", reject));
      expect(Buffer.concat(got).equals(data)).toBe(true);
      expect(new Set(got.map((c) => c.buffer)).size).toBe(got.length);
      expect(seen).toEqual([100_000, 100_000, 100_000, 7]);
    } finally {
      setReadObserver(undefined);
    }
  });
});
