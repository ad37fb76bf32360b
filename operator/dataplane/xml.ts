/**
 * The little XML the stores' listings need, read without building a document: a listing page
 * is a flat run of same-named entries (S3's `<Contents>`, `<Upload>`; Azure's `<Blob>`) between
 * a few top-level fields. Pages are read into one reused buffer (`PageBuffer`) and each entry
 * is decoded only when the listing yields it, into strings of its own, so nothing of a page
 * outlives it — a page as one JS string (hundreds of KiB, in V8's large-object space) with
 * every entry sliced from it was promoted and kept as garbage until a full GC (measured on the
 * Azure listing: see `PageBuffer`'s history in docs/dataplane.md).
 *
 * Why not an XML library: the services' listing schemas are fixed and flat, and a generic
 * parser builds a tree of every element (owner, storage class, …) only for us to read four
 * of them; on a 5,000-entry page that tree was most of a no-op sync's CPU. What is read here
 * is checked (`open` throws on a page that is not the expected document or has an unclosed
 * entry), and callers fall back to the SDK's own parser when it throws.
 */

const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };

/** XML text with its five named entities and numeric character references resolved. */
export function unescapeXml(text: string): string {
  if (!text.includes("&")) return text;
  return text.replace(/&(#x[0-9a-fA-F]+|#\d+|[a-z]+);/g, (m, e: string) =>
    e[0] === "#"
      ? String.fromCodePoint(e[1] === "x" ? Number.parseInt(e.slice(2), 16) : Number(e.slice(1)))
      : (ENTITIES[e] ?? m),
  );
}

/**
 * The text of the first `<tag>` element of `xml` (a short segment), unescaped; undefined if
 * absent. An element marked `Encoded="true"` (Azure's form for names XML cannot carry) is
 * percent-decoded as well.
 */
export function element(xml: string, tag: string): string | undefined {
  let i = xml.indexOf(`<${tag}`);
  while (i !== -1) {
    const after = xml.charCodeAt(i + tag.length + 1);
    if (after === 62 /* > */ || after === 32 /* space */ || after === 47 /* / */) break;
    i = xml.indexOf(`<${tag}`, i + 1);
  }
  if (i === -1) return undefined;
  const open = xml.indexOf(">", i);
  if (open === -1) return undefined;
  if (xml.charCodeAt(open - 1) === 47) return ""; // <Tag />
  const close = xml.indexOf(`</${tag}>`, open);
  if (close === -1) return undefined;
  const raw = unescapeXml(xml.slice(open + 1, close));
  return xml.slice(i, open).includes('Encoded="true"') ? decodeURIComponent(raw) : raw;
}

/**
 * A response body's bytes, in one buffer reused for every page of a listing (grown to the
 * largest page).
 */
export class PageBuffer {
  private buf = Buffer.allocUnsafeSlow(0);

  /** Reads `stream` to its end into the buffer; the bytes, valid until the next `fill`. */
  async fill(stream: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<Buffer> {
    let len = 0;
    for await (const c of stream) {
      if (len + c.length > this.buf.length) {
        const grown = Buffer.allocUnsafeSlow(Math.max(len + c.length, 2 * this.buf.length, 256 * 1024));
        this.buf.copy(grown, 0, 0, len);
        this.buf = grown;
      }
      this.buf.set(c, len);
      len += c.length;
    }
    return this.buf.subarray(0, len);
  }
}

/**
 * A listing page read from its bytes: `open` checks that it is the `root` document and that
 * every `<entry>` is closed, and records where each entry lies without decoding it; `entry(i)`
 * decodes entry `i` alone; `outside` is the page's text around its entries (the top-level
 * fields: truncation, markers, encoding), small whatever the page size.
 */
export class EntryPage {
  private constructor(
    private readonly bytes: Buffer,
    /** Start and end offsets of each entry (`<entry>` to `</entry>`), in pairs. */
    private readonly bounds: Uint32Array,
    readonly count: number,
    readonly outside: string,
  ) {}

  static open(bytes: Buffer, root: string, entry: string): EntryPage {
    const openTag = Buffer.from(`<${entry}>`);
    const closeTag = Buffer.from(`</${entry}>`);
    let at = bytes.indexOf(openTag);
    const head = at === -1 ? bytes.length : at;
    if (bytes.subarray(0, head).indexOf(`<${root}`) === -1) throw new Error(`not a ${root} response`);
    let bounds = new Uint32Array(2 * 1024);
    let count = 0;
    let end = head;
    while (at !== -1) {
      const stop = bytes.indexOf(closeTag, at);
      if (stop === -1) throw new Error(`truncated ${root} response`);
      if (2 * count + 2 > bounds.length) {
        const grown = new Uint32Array(2 * bounds.length);
        grown.set(bounds);
        bounds = grown;
      }
      bounds[2 * count] = at;
      bounds[2 * count + 1] = stop;
      count++;
      end = stop + closeTag.length;
      at = bytes.indexOf(openTag, end);
    }
    if (bytes.indexOf(`</${root}>`, count === 0 ? 0 : end) === -1)
      throw new Error(`truncated ${root} response`);
    // A page read as empty must not hold its entries in another form (`<Contents xmlns=…>`,
    // `<s3:Contents>`): as an empty page it would be a source that lists nothing. The callers
    // hand such a page to their SDK's parser.
    if (
      count === 0 &&
      (bytes.includes(`${entry}>`) || bytes.includes(`<${entry} `) || bytes.includes(`:${entry}`))
    )
      throw new Error(`${entry} entries in a form this reader does not know`);
    const outside = bytes.toString("utf8", 0, head) + bytes.toString("utf8", end);
    return new EntryPage(bytes, bounds, count, outside);
  }

  /** Entry `i`'s text, `<entry>` excluded, as a string of its own. */
  entry(i: number): string {
    return this.bytes.toString("utf8", this.bounds[2 * i], this.bounds[2 * i + 1]);
  }
}
