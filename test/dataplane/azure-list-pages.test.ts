/**
 * The Azure listing reads each List Blobs page into one reused buffer and decodes an entry only
 * when it yields it: what it yields must not change when the buffer is refilled, and a page
 * whose entry it cannot read mid-way hands over to the SDK's listing without yielding an entry
 * twice or losing one. A stand-in List Blobs server (a few lines of XML) plays the service.
 */
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { BlobListPage } from "../../operator/dataplane/azure.ts";
import type { ObjectInfo } from "../../operator/dataplane/store.ts";
import { openStore } from "../../operator/dataplane/store.ts";
import { PageBuffer } from "../../operator/dataplane/xml.ts";

const KEY = Buffer.from("stand-in key").toString("base64");

const entry = (name: string, props = true) =>
  `<Blob><Name>${name}</Name>${
    props
      ? `<Properties><Last-Modified>Sat, 21 Nov 2026 23:00:00 GMT</Last-Modified><Etag>"0x${name.length}"</Etag>` +
        `<Content-Length>${name.length}</Content-Length><BlobType>BlockBlob</BlobType></Properties>`
      : ""
  }<Metadata /></Blob>`;

const page = (names: string[], next: string, broken?: string) =>
  `<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="http://x/" ContainerName="c">` +
  `<MaxResults>5000</MaxResults><Blobs>${names.map((n) => entry(n, n !== broken)).join("")}</Blobs>` +
  (next ? `<NextMarker>${next}</NextMarker>` : "<NextMarker />") +
  `</EnumerationResults>`;

describe("a List Blobs page read from its bytes", () => {
  it("yields entries that keep their values when the buffer is refilled with the next page", async () => {
    const buffer = new PageBuffer();
    const chunks = (s: string) => {
      const b = Buffer.from(s);
      // Split mid-entry (and mid-tag), as a socket would.
      return [b.subarray(0, 100), b.subarray(100, 101), b.subarray(101)];
    };
    const first = BlobListPage.open(
      await buffer.fill(chunks(page(["one-long-name-a", "two-long-name-b"], "m1"))),
    );
    const held = [first.blob(0), first.blob(1)];
    expect(first.nextMarker).toBe("m1");
    const second = BlobListPage.open(await buffer.fill(chunks(page(["xxxxxxxxxxxxxxxxxxxxxxxx"], ""))));
    expect(second.blob(0).name).toBe("xxxxxxxxxxxxxxxxxxxxxxxx");
    expect(second.nextMarker).toBe("");
    expect(held.map((b) => [b.name, b.size, b.etag])).toEqual([
      ["one-long-name-a", 15, "0x15"],
      ["two-long-name-b", 15, "0x15"],
    ]);
  });

  it("refuses a response that is not a List Blobs page, or an entry that is not closed", () => {
    expect(() => BlobListPage.open(Buffer.from("<Error><Code>x</Code></Error>"))).toThrow(
      "not a EnumerationResults response",
    );
    expect(() =>
      BlobListPage.open(Buffer.from(page([], "").replace("</Blobs>", "<Blob><Name>x</Name></Blobs>"))),
    ).toThrow("truncated");
  });
});

describe("the Azure listing", () => {
  let server: Server;
  let endpoint: string;
  const seen: { api: "raw" | "sdk"; marker: string }[] = [];
  const pages: Record<string, string[]> = {
    "": ["a/01", "a/02", "a/03"],
    m1: ["b/01", "b/02", "b/03", "b/04"],
  };
  beforeAll(async () => {
    server = createServer((req: IncomingMessage, res) => {
      const url = new URL(req.url ?? "/", "http://x");
      const marker = url.searchParams.get("marker") ?? "";
      // The raw route sends its own fixed service version; the SDK sends its own.
      const api = req.headers["x-ms-version"] === "2021-12-02" ? "raw" : "sdk";
      seen.push({ api, marker });
      const names = pages[marker] ?? [];
      // The raw route gets a page whose third entry lacks its properties; the SDK a good one.
      const broken = api === "raw" && marker === "m1" ? "b/03" : undefined;
      res.writeHead(200, { "content-type": "application/xml" });
      res.end(page(names, marker === "" ? "m1" : "", broken));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}/acct`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it("hands an unreadable page over to the SDK past the entries it already yielded", async () => {
    const store = await openStore(`azblob://acct/cont/?endpoint=${encodeURIComponent(endpoint)}`, {
      azure: { accountKey: KEY },
    });
    const listed: ObjectInfo[] = [];
    for await (const o of store.list()) listed.push(o);
    expect(listed.map((o) => o.key)).toEqual(["a/01", "a/02", "a/03", "b/01", "b/02", "b/03", "b/04"]);
    expect(listed[6]).toMatchObject({ size: 4, etag: "0x4" });
    expect(seen).toEqual([
      { api: "raw", marker: "" },
      { api: "raw", marker: "m1" },
      { api: "sdk", marker: "m1" },
    ]);
  });
});
