/**
 * An HTTP pass-through in front of a JSON-only API server that turns the protobuf request
 * bodies of Helm's release storage into JSON (k8s-protobuf.ts), and records every request
 * (the RBAC audit reads them). Everything else, including watch streams, goes through
 * untouched. Responses are already JSON: Helm's Accept header lists application/json after
 * protobuf.
 */
import { createServer, request, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { decodeKubernetesProtobuf } from "./k8s-protobuf.ts";

export interface ProtobufShim {
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** Request bodies translated so far, as "METHOD path kind". */
  translated: string[];
  /** Every request that went through, in order (method and URL with its query). */
  requests: Array<{ method: string; url: string }>;
  close(): Promise<void>;
}

export async function startProtobufShim(target: string): Promise<ProtobufShim> {
  const upstream = new URL(target);
  const translated: string[] = [];
  const requests: Array<{ method: string; url: string }> = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    requests.push({ method: req.method ?? "GET", url: req.url ?? "/" });
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      let body = Buffer.concat(chunks);
      const headers = { ...req.headers, host: upstream.host };
      if ((req.headers["content-type"] ?? "").startsWith("application/vnd.kubernetes.protobuf")) {
        try {
          const obj = decodeKubernetesProtobuf(body);
          translated.push(`${req.method} ${req.url?.split("?")[0]} ${obj.kind}`);
          body = Buffer.from(JSON.stringify(obj));
          headers["content-type"] = "application/json";
        } catch (e) {
          res.writeHead(415, { "content-type": "application/json" });
          res.end(
            JSON.stringify({
              kind: "Status",
              apiVersion: "v1",
              status: "Failure",
              reason: "UnsupportedMediaType",
              code: 415,
              message: `protobuf shim: ${(e as Error).message}`,
            }),
          );
          return;
        }
      }
      headers["content-length"] = String(body.length);
      const up = request(
        { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers },
        (r) => {
          res.writeHead(r.statusCode ?? 502, r.headers);
          r.pipe(res);
        },
      );
      up.on("error", (e) => {
        if (!res.headersSent) res.writeHead(502);
        res.end(String(e));
      });
      up.end(body);
    });
  });
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    translated,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
