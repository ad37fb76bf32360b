/**
 * The raw List Blobs parser the Azure store lists with (the SDK's own parse dominated a no-op
 * sync's CPU): every field it reads, XML escapes, percent-encoded names, and what it refuses.
 * Its use against a real Azurite is covered by every sync test with an Azure source.
 */
import { parseBlobList } from "../../operator/dataplane/azure.ts";

const page = (blobs: string, next = "") =>
  `<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="http://x/" ContainerName="c">` +
  `<Prefix>p/</Prefix><MaxResults>5000</MaxResults><Blobs>${blobs}</Blobs>` +
  (next ? `<NextMarker>${next}</NextMarker>` : "<NextMarker />") +
  `</EnumerationResults>`;

const blob = (name: string, extra = "", meta = "") =>
  `<Blob><Name${name.startsWith("%") ? ' Encoded="true"' : ""}>${name}</Name><Properties>` +
  `<Last-Modified>Sat, 21 Nov 2026 23:00:00 GMT</Last-Modified><Etag>"0x8DC1"</Etag>` +
  `<Content-Length>4096</Content-Length><Content-Type>application/octet-stream</Content-Type>` +
  `<Content-Encoding /><Content-MD5>${extra}</Content-MD5><BlobType>BlockBlob</BlobType></Properties>` +
  `<Metadata>${meta}</Metadata><OrMetadata /></Blob>`;

describe("parsing a List Blobs page", () => {
  it("reads name, size, etag, time, Content-MD5 and Spillway's sha256, and the next marker", () => {
    const md5 = Buffer.alloc(16, 0xab);
    const sha = "a".repeat(64);
    const r = parseBlobList(
      page(
        blob(
          "p/a &amp; b &lt;c&gt; &#x65E5;.txt",
          md5.toString("base64"),
          `<spillwaysha256>${sha}</spillwaysha256>`,
        ),
        "2!72!MDAw",
      ),
    );
    expect(r).toEqual({
      blobs: [
        {
          name: "p/a & b <c> 日.txt",
          size: 4096,
          etag: "0x8DC1",
          lastModified: new Date("2026-11-21T23:00:00Z"),
          md5: md5.toString("hex"),
          sha256: sha,
        },
      ],
      nextMarker: "2!72!MDAw",
    });
  });

  it("decodes percent-encoded names, ignores user metadata named like a property, ends without a marker", () => {
    const r = parseBlobList(
      page(blob("%EF%BF%BEodd", "", "<Etag>user</Etag><Content-Length>1</Content-Length>")),
    );
    expect(r.blobs).toEqual([
      { name: "\uFFFEodd", size: 4096, etag: "0x8DC1", lastModified: new Date("2026-11-21T23:00:00Z") },
    ]);
    expect(r.nextMarker).toBe("");
    expect(parseBlobList(page("")).blobs).toEqual([]);
  });

  it("refuses what is not a List Blobs response, so the SDK's listing takes over", () => {
    expect(() => parseBlobList("<Error><Code>x</Code></Error>")).toThrow("not a EnumerationResults response");
    expect(() => parseBlobList(page("<Blob><Name>x</Name>"))).toThrow();
  });
});
