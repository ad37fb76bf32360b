/** `sandbox --demo` twice in one checkout: the second starts from a fresh state, losing nothing. */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setAsidePreviousState } from "../../../operator/sandbox/sandbox.ts";

let root: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), "spillway-demo-state-"));
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

function previousSandbox(dir: string, managementPort: number): void {
  mkdirSync(join(dir, "management"), { recursive: true });
  writeFileSync(join(dir, "management", "objects.json"), "a run of the last demo");
  writeFileSync(join(dir, "sandbox.json"), JSON.stringify({ ports: { management: managementPort } }));
}

describe("the demo's sandbox state", () => {
  it("does nothing where there is no state yet", async () => {
    expect(await setAsidePreviousState(join(root, "none"))).toBeUndefined();
  });

  it("moves a stopped sandbox's state aside (replacing an older one), keeping its files", async () => {
    const dir = join(root, "sandbox");
    mkdirSync(`${dir}.previous`);
    writeFileSync(join(`${dir}.previous`, "old"), "older");
    const free = createServer();
    const port = await new Promise<number>((r) =>
      free.listen(0, "127.0.0.1", () => r((free.address() as { port: number }).port)),
    );
    await new Promise((r) => free.close(r));
    previousSandbox(dir, port);
    expect(await setAsidePreviousState(dir)).toContain(`${dir}.previous`);
    expect(existsSync(dir)).toBe(false);
    expect(readFileSync(join(`${dir}.previous`, "management", "objects.json"), "utf8")).toBe(
      "a run of the last demo",
    );
    expect(existsSync(join(`${dir}.previous`, "old"))).toBe(false);
  });

  it("refuses while a sandbox still serves from it, touching nothing", async () => {
    const dir = join(root, "sandbox");
    const live: Server = createServer();
    const port = await new Promise<number>((r) =>
      live.listen(0, "127.0.0.1", () => r((live.address() as { port: number }).port)),
    );
    try {
      previousSandbox(dir, port);
      await expect(setAsidePreviousState(dir)).rejects.toThrow(/still running .*stop it first/);
      expect(existsSync(join(dir, "management", "objects.json"))).toBe(true);
    } finally {
      await new Promise((r) => live.close(r));
    }
  });
});
