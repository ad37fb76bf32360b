/** Pieces of the fault-injecting proxies the data-plane tests put in front of the emulators. */
import { type IncomingMessage, request, type ServerResponse } from "node:http";

/** Sends the request on to `target` unchanged and pipes the answer back. */
export function forward(target: URL, req: IncomingMessage, res: ServerResponse): void {
  const up = request(
    { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
    (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    },
  );
  up.on("error", () => res.destroy());
  req.pipe(up);
}

/** Answers with an injected service error: `code` in `x-ms-error-code` and the XML body. */
export function injectError(
  req: IncomingMessage,
  res: ServerResponse,
  status: number,
  code: string,
  headers: Record<string, string> = {},
): void {
  req.resume();
  res.writeHead(status, { "content-type": "application/xml", "x-ms-error-code": code, ...headers });
  res.end(
    `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>injected</Message></Error>`,
  );
}
