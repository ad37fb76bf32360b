/**
 * A fault-injecting HTTP proxy for a Kubernetes API server (node:http, loopback only).
 * For a seeded fraction of requests it answers in the server's place, the way a loaded or
 * failing API server does:
 *   - 429 TooManyRequests (with Retry-After) and 500 InternalError, before forwarding: the
 *     request never happened;
 *   - 409 Conflict on updates and patches, before forwarding: a lost optimistic-concurrency race;
 *   - 500 after forwarding a write: the change happened but its answer was lost (the
 *     nastiest case for idempotency: a retried create meets AlreadyExists);
 * and it cuts every watch after a random 0.3–2 s, so informers must resume or relist.
 */
import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { prng } from "../fuzz/gen.ts";

export type Fault = "429" | "500" | "409" | "500-after" | "watch-cut";

export interface FaultProxyOptions {
  /** The API server's base URL (`http://127.0.0.1:PORT`). */
  target: string;
  /** Fraction of non-watch requests answered with a fault (0–1). */
  rate: number;
  seed: number;
  /** Whether watches are cut (default true). */
  cutWatches?: boolean;
}

function status(res: ServerResponse, code: number, reason: string, message: string, headers = {}): void {
  res.writeHead(code, { "content-type": "application/json", ...headers });
  res.end(
    JSON.stringify({
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message,
      reason,
      code,
    }),
  );
}

export class FaultProxy {
  readonly counts: Record<Fault | "forwarded", number> = {
    "429": 0,
    "500": 0,
    "409": 0,
    "500-after": 0,
    "watch-cut": 0,
    forwarded: 0,
  };
  /** Set to false to let everything through (e.g. while checking the end state). */
  enabled = true;
  private readonly random: () => number;
  private readonly target: URL;
  private readonly sockets = new Set<Socket>();
  private server?: Server;
  url = "";

  constructor(private readonly opts: FaultProxyOptions) {
    this.random = prng(opts.seed);
    this.target = new URL(opts.target);
  }

  async start(): Promise<string> {
    this.server = createServer((req, res) => this.handle(req, res));
    this.server.on("connection", (s) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this.url;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const isWatch = /[?&]watch=(true|1)/.test(req.url ?? "");
    const method = req.method ?? "GET";
    const write = method !== "GET" && method !== "HEAD";
    if (this.enabled && !isWatch) {
      const roll = this.random();
      if (roll < this.opts.rate) {
        const which = this.random();
        const conflictable = method === "PUT" || method === "PATCH";
        req.resume();
        if (which < 0.3) {
          this.counts["429"]++;
          status(res, 429, "TooManyRequests", "the server has received too many requests", {
            "retry-after": "0",
          });
          return;
        }
        // Reads that are not throttled fail with 500 (a read cannot conflict or lose a change).
        if (which < 0.55 || !write) {
          this.counts["500"]++;
          status(res, 500, "InternalError", "Internal error occurred: injected by the chaos proxy");
          return;
        }
        if (conflictable && which < 0.8) {
          this.counts["409"]++;
          status(
            res,
            409,
            "Conflict",
            "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again",
          );
          return;
        }
        // The write is forwarded and happens; its answer is replaced by a 500.
        this.counts["500-after"]++;
        this.forward(req, res, { loseAnswer: true });
        return;
      }
    }
    this.forward(req, res, {
      cutAfterMs:
        isWatch && this.enabled && this.opts.cutWatches !== false ? 300 + this.random() * 1700 : undefined,
    });
  }

  private forward(
    req: IncomingMessage,
    res: ServerResponse,
    o: { loseAnswer?: boolean; cutAfterMs?: number },
  ): void {
    this.counts.forwarded++;
    const upstream = request(
      {
        host: this.target.hostname,
        port: this.target.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: this.target.host },
      },
      (up) => {
        if (o.loseAnswer) {
          up.resume();
          up.on("end", () =>
            status(res, 500, "InternalError", "Internal error occurred: answer lost by the chaos proxy"),
          );
          return;
        }
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
        if (o.cutAfterMs !== undefined) {
          const t = setTimeout(() => {
            this.counts["watch-cut"]++;
            up.destroy();
            res.destroy();
          }, o.cutAfterMs);
          up.on("close", () => clearTimeout(t));
        }
      },
    );
    upstream.on("error", () => {
      if (!res.headersSent) status(res, 503, "ServiceUnavailable", "upstream unavailable");
      else res.destroy();
    });
    res.on("close", () => upstream.destroy());
    req.pipe(upstream);
  }
}
