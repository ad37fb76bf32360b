/**
 * The Node floor of the sync benchmark's cold copy (a): the same objects moved Azurite → s3rver
 * by the least a Node process can do — one GET per blob (a SAS URL, no signing), its body piped
 * into one SigV4-signed PUT (UNSIGNED-PAYLOAD) over node:http keep-alive agents, 16 at a time —
 * with no sync engine: no listing, no manifest, no journal, no retries, no checks. With
 * `FLOOR_SHA256=1` every byte also goes through a sha256, as Spillway's content hash does.
 *
 * Why it is in the bench: on a 2-core machine both emulators and the client share the CPU, so
 * the client's CPU per byte sets the pace. This row separates what the runtime costs (Node's
 * HTTP and socket path against Go's in rclone) from what Spillway's engine adds.
 *
 * Input: FLOOR_CONFIG (JSON: blobBase, sas, s3 {endpoint, bucket, prefix, region, accessKeyId,
 * secretAccessKey}, objects [[key, size]], concurrency). Output: one line "floor: N objects,
 * B bytes". Exit 1 on any failed request.
 */
import { createHash, createHmac } from "node:crypto";
import http from "node:http";
import { SignatureV4 } from "@smithy/signature-v4";

const cfg = JSON.parse(process.env.FLOOR_CONFIG ?? "{}");
const hashing = process.env.FLOOR_SHA256 === "1";
const s3 = new URL(cfg.s3.endpoint);

class Sha256 {
  constructor(secret) {
    this.h = secret === undefined ? createHash("sha256") : createHmac("sha256", Buffer.from(secret));
  }
  update(chunk) {
    this.h.update(chunk);
  }
  async digest() {
    return new Uint8Array(this.h.digest());
  }
}
const signer = new SignatureV4({
  service: "s3",
  region: cfg.s3.region,
  credentials: { accessKeyId: cfg.s3.accessKeyId, secretAccessKey: cfg.s3.secretAccessKey },
  sha256: Sha256,
  uriEscapePath: false,
  applyChecksum: false,
});
const agent = new http.Agent({ keepAlive: true, maxSockets: cfg.concurrency * 2 });

const copy = async (key, size) => {
  const res = await new Promise((resolve, reject) =>
    http.get(`${cfg.blobBase}/${encodeURI(key)}?${cfg.sas}`, { agent }, resolve).on("error", reject),
  );
  if (res.statusCode !== 200) throw new Error(`GET ${key}: HTTP ${res.statusCode}`);
  const path = `/${cfg.s3.bucket}/${cfg.s3.prefix}${encodeURI(key)}`;
  const signed = await signer.sign({
    method: "PUT",
    protocol: "http:",
    hostname: s3.hostname,
    port: Number(s3.port),
    path,
    query: {},
    headers: { host: s3.host, "content-length": String(size), "x-amz-content-sha256": "UNSIGNED-PAYLOAD" },
  });
  const sha = hashing ? createHash("sha256") : undefined;
  if (sha) res.on("data", (c) => sha.update(c));
  await new Promise((resolve, reject) => {
    const req = http.request(
      { method: "PUT", hostname: s3.hostname, port: s3.port, path, headers: signed.headers, agent },
      (r) => {
        r.resume();
        r.on("end", () =>
          r.statusCode === 200 ? resolve() : reject(new Error(`PUT ${key}: HTTP ${r.statusCode}`)),
        );
      },
    );
    req.on("error", reject);
    res.pipe(req);
  });
  sha?.digest("hex");
};

let next = 0;
let bytes = 0;
await Promise.all(
  Array.from({ length: cfg.concurrency }, async () => {
    while (next < cfg.objects.length) {
      const [key, size] = cfg.objects[next++];
      await copy(key, size);
      bytes += size;
    }
  }),
);
agent.destroy();
console.log(`floor${hashing ? " + sha256" : ""}: ${cfg.objects.length} objects, ${bytes} bytes`);
