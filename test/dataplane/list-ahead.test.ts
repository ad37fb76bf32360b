/**
 * A listing requests its next page while the current one is still being taken, holds that
 * response unread until it needs the page, and drops it when the listing stops (pages.ts,
 * `PageAhead`). Stand-in List Blobs (Azure) and ListObjects (S3) servers play the stores and
 * record what reaches them; the listing's consumer waits on the event loop between entries,
 * as a sync waiting for its copies does.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { setImmediate as turn } from "node:timers/promises";
import { PageAhead } from "../../operator/dataplane/pages.ts";
import type { ObjectStore } from "../../operator/dataplane/store.ts";
import { openStore } from "../../operator/dataplane/store.ts";

const KEY = Buffer.from("stand-in key").toString("base64");

/** Three pages of keys, in listing order. */
const PAGES = [
  ["a/01", "a/02", "a/03", "a/04", "a/05", "a/06", "a/07", "a/08"],
  ["b/01", "b/02", "b/03", "b/04", "b/05", "b/06", "b/07", "b/08"],
  ["c/01", "c/02", "c/03"],
];
const ALL = PAGES.flat();

const azurePage = (i: number) =>
  `<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="http://x/" ContainerName="c">` +
  `<Blobs>${PAGES[i]!.map(
    (n) =>
      `<Blob><Name>${n}</Name><Properties><Last-Modified>Sat, 21 Nov 2026 23:00:00 GMT</Last-Modified>` +
      `<Etag>"0x1"</Etag><Content-Length>1</Content-Length><BlobType>BlockBlob</BlobType></Properties><Metadata /></Blob>`,
  ).join("")}</Blobs>` +
  (i + 1 < PAGES.length ? `<NextMarker>page${i + 1}</NextMarker>` : "<NextMarker />") +
  `</EnumerationResults>`;

const s3Page = (i: number) =>
  `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">` +
  `<Name>bkt</Name><Prefix></Prefix><MaxKeys>1000</MaxKeys><IsTruncated>${i + 1 < PAGES.length}</IsTruncated>` +
  PAGES[i]!.map(
    (k) =>
      `<Contents><Key>${k}</Key><LastModified>2026-11-21T23:00:00.000Z</LastModified><ETag>"aa"</ETag>` +
      `<Size>1</Size><StorageClass>STANDARD</StorageClass></Contents>`,
  ).join("") +
  `</ListBucketResult>`;

interface Request {
  page: number;
  req: IncomingMessage;
  res: ServerResponse;
}

/**
 * A listing server for `api`: page `i` is asked for with the marker the previous page ends
 * with. `answer` decides each request (by default: the page, at once).
 */
class StandIn {
  readonly requests: Request[] = [];
  readonly closed: number[] = [];
  /**
   * Each page is answered after 250 ms, a store's time to list: the listing paces its early
   * request by that time against its consumer's, and a consumer that turns the event loop
   * once per entry is far faster, so the early request goes out after the first entry.
   */
  answer: (r: Request, nth: number) => void = (r) => setTimeout(() => this.send(r), 250);
  private server!: Server;
  uri = "";

  constructor(readonly api: "azure" | "s3") {}

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://x");
      const marker = url.searchParams.get("marker") ?? "";
      const page =
        marker === ""
          ? 0
          : this.api === "azure"
            ? Number(marker.slice("page".length))
            : PAGES.findIndex((p) => p[p.length - 1] === marker) + 1;
      const r = { page, req, res };
      this.requests.push(r);
      res.once("close", () => {
        if (!res.writableFinished) this.closed.push(page);
      });
      this.answer(r, this.requests.filter((x) => x.page === page).length);
    });
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    const endpoint = encodeURIComponent(`http://127.0.0.1:${(this.server.address() as AddressInfo).port}`);
    this.uri =
      this.api === "azure"
        ? `azblob://acct/cont/?endpoint=${encodeURIComponent(`http://127.0.0.1:${(this.server.address() as AddressInfo).port}/acct`)}`
        : `s3://bkt/?endpoint=${endpoint}&region=us-east-1`;
    return this;
  }

  body(page: number): string {
    return this.api === "azure" ? azurePage(page) : s3Page(page);
  }

  send(r: Request): void {
    r.res.writeHead(200, { "content-type": "application/xml" });
    r.res.end(this.body(r.page));
  }

  open(): Promise<ObjectStore> {
    return openStore(this.uri, {
      azure: { accountKey: KEY },
      s3: { accessKeyId: "AKIDSTANDIN", secretAccessKey: "stand-in secret" },
    });
  }

  pagesAsked(): number[] {
    return this.requests.map((r) => r.page);
  }

  stop(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** Resolves once `ok()` holds, turning the event loop meanwhile; fails after `ms`. */
async function until(ok: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

describe.each(["azure", "s3"] as const)("the %s listing reads its next page ahead", (api) => {
  let server: StandIn;
  beforeEach(async () => {
    server = await new StandIn(api).start();
  });
  afterEach(() => server.stop());

  it("asks for the next page before the current one is used up, and lists every key once, in order", async () => {
    const store = await server.open();
    const taken: string[] = [];
    for await (const o of store.list()) {
      const page = PAGES.findIndex((p) => p.includes(o.key));
      // The last entry of a page is taken only once the store has been asked for the next
      // page: without the read-ahead this waits for ever (and fails).
      if (page + 1 < PAGES.length && o.key === PAGES[page]!.at(-1))
        await until(() => server.pagesAsked().includes(page + 1), `page ${page + 1} to be asked for`);
      taken.push(o.key);
      await turn();
    }
    expect(taken).toEqual(ALL);
    expect(server.pagesAsked()).toEqual([0, 1, 2]);
  });

  it("holds the early response unread: the page's bytes are read only when its turn comes", async () => {
    // Page 1 is answered in full while page 0's entries are still being taken (the listing has
    // one page buffer): page 0's entries must come out intact, then page 1's.
    const store = await server.open();
    const taken: string[] = [];
    const it = store.list()[Symbol.asyncIterator]();
    for (let r = await it.next(); !r.done; r = await it.next()) {
      taken.push(r.value.key);
      // Stall in the middle of page 0 until page 1 has been answered in full.
      if (r.value.key === "a/07") {
        await until(
          () => server.requests.some((x) => x.page === 1 && x.res.writableFinished),
          "page 1 to be sent",
        );
        await turn();
      }
    }
    expect(taken).toEqual(ALL);
  });

  it("drops the early request when the listing stops, and asks for nothing more", async () => {
    server.answer = (r) => {
      if (r.page === 0) setTimeout(() => server.send(r), 250);
      // Page 1's request is held without an answer: the store is slow.
    };
    const store = await server.open();
    for await (const o of store.list()) {
      await turn();
      if (o.key === "a/07") {
        await until(() => server.pagesAsked().includes(1), "page 1 to be asked for");
        break;
      }
    }
    await until(() => server.closed.includes(1), "page 1's request to be closed");
    expect(server.pagesAsked()).toEqual([0, 1]);
  });

  it("asks again for a page whose held response failed before it was read", async () => {
    server.answer = (r, nth) => {
      if (r.page === 1 && nth === 1) {
        // Headers and part of the body, then the connection drops (an idle connection closed).
        r.res.writeHead(200, { "content-type": "application/xml" });
        r.res.write(server.body(1).slice(0, 200), () => r.res.destroy());
        return;
      }
      setTimeout(() => server.send(r), 250);
    };
    const store = await server.open();
    const taken: string[] = [];
    for await (const o of store.list()) {
      taken.push(o.key);
      if (o.key === "a/08") await until(() => server.closed.includes(1), "page 1's first answer to fail");
      await turn();
    }
    expect(taken).toEqual(ALL);
    expect(server.pagesAsked()).toEqual([0, 1, 1, 2]);
  });
});

describe("PageAhead's pacing", () => {
  const fake = () => {
    const sent: string[] = [];
    const response = { destroy: () => sent.push("destroyed") };
    const open = (what: string) => async () => {
      sent.push(what);
      return response;
    };
    return { sent, open };
  };

  /** A PageAhead on a clock of its own (`clock.now`, ms) whose first page took `latency` to answer. */
  const answered = async (latency: number) => {
    const clock = { now: 0 };
    const ahead = new PageAhead(undefined, () => clock.now);
    await ahead.response(async () => {
      clock.now += latency;
      return { destroy: () => {} };
    });
    return { clock, ahead, ...fake() };
  };

  it("requests the next page once the entries left would take less than twice the last page's answer", async () => {
    const { clock, ahead, sent, open } = await answered(100);
    ahead.page(1000, open("page 1"));
    // 10 ms an entry: 990 left would take 9.9 s; nothing is sent until 20 are left.
    for (let i = 0; i < 979; i++) {
      clock.now += 10;
      expect(ahead.taken(i)).toBeUndefined();
    }
    expect(sent).toEqual([]);
    clock.now += 10;
    await ahead.taken(979);
    expect(sent).toEqual(["page 1"]);
    // Sent once; the page's response is the early one.
    clock.now += 10;
    expect(ahead.taken(980)).toBeUndefined();
    expect(await ahead.response(open("again"))).toBeDefined();
    expect(sent).toEqual(["page 1"]);
  });

  it("a fast consumer (a no-op merge) asks at once, after the first eighth of the page or 64 entries", async () => {
    const { ahead, sent, open } = await answered(400);
    ahead.page(5000, open("page 1"));
    for (let i = 0; i < 63; i++) expect(ahead.taken(i)).toBeUndefined();
    await ahead.taken(63);
    expect(sent).toEqual(["page 1"]);
  });

  it("the last page asks for nothing; close destroys an early response nobody read", async () => {
    const ahead = new PageAhead(undefined, () => 0);
    const { sent, open } = fake();
    ahead.page(10, undefined);
    for (let i = 0; i < 10; i++) expect(ahead.taken(i)).toBeUndefined();
    ahead.page(10, open("page 2"));
    for (let i = 0; i < 10; i++) await ahead.taken(i);
    ahead.close();
    await turn();
    expect(sent).toEqual(["page 2", "destroyed"]);
  });
});
