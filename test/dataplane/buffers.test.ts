import { BufferPool } from "../../operator/dataplane/sync.ts";

describe("BufferPool", () => {
  it("gives back a buffer of exactly the size asked, and reuses a returned one of the same class", () => {
    const pool = new BufferPool(1024 * 1024);
    const a = pool.take(5000);
    expect(a.length).toBe(5000);
    expect(a.buffer.byteLength).toBe(8192);
    a.fill(7);
    pool.give(a);
    const b = pool.take(6000);
    expect(b.length).toBe(6000);
    expect(b.buffer).toBe(a.buffer); // the same slab, not a new allocation
    const c = pool.take(6000);
    expect(c.buffer).not.toBe(a.buffer); // the slab is out: a new one
  });

  it("holds at most its capacity idle, and ignores buffers it did not give out", () => {
    const pool = new BufferPool(16 * 1024);
    const bufs = [pool.take(8192), pool.take(8192), pool.take(8192)];
    for (const b of bufs) pool.give(b);
    // Two 8 KiB slabs fit in 16 KiB; the third was left to the GC.
    const again = [pool.take(8192), pool.take(8192), pool.take(8192)];
    const reused = again.filter((b) => bufs.some((x) => x.buffer === b.buffer));
    expect(reused).toHaveLength(2);
    const foreign = Buffer.from("not pooled"); // a view into Node's shared pool
    pool.give(foreign);
    expect(pool.take(foreign.length).buffer).not.toBe(foreign.buffer);
    expect(pool.take(0).length).toBe(0);
  });
});
