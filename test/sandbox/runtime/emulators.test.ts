import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GetObjectCommand, ListBucketsCommand, PutObjectCommand } from "@aws-sdk/client-s3";
import { AzuriteEmulator, S3rverEmulator } from "../../../operator/sandbox/emulators/index.ts";
import { pidAlive, portBindable } from "./helpers.ts";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "spillway-emu-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("Azurite", () => {
  let azurite: AzuriteEmulator | undefined;
  afterEach(async () => {
    await azurite?.stop();
  });

  it("answers the real Blob SDK, keeps its data across a stop and restart, and leaves nothing behind", async () => {
    azurite = await AzuriteEmulator.start({ dir: join(dir, "azurite"), containers: ["datasets"] });
    const names: string[] = [];
    for await (const c of azurite.client().listContainers()) names.push(c.name);
    expect(names).toEqual(["datasets"]);
    await azurite.client().getContainerClient("datasets").getBlockBlobClient("a.txt").upload("hello", 5);

    const firstPid = azurite.pid!;
    await azurite.stop();
    expect(pidAlive(firstPid)).toBe(false);
    await azurite.restart();
    expect(azurite.pid).not.toBe(firstPid);
    const body = await azurite
      .client()
      .getContainerClient("datasets")
      .getBlobClient("a.txt")
      .downloadToBuffer();
    expect(body.toString()).toBe("hello");

    // A crash (SIGKILL) kills the process group; the emulator comes back on the same port.
    const crashedPid = azurite.pid!;
    await azurite.kill();
    expect(pidAlive(crashedPid)).toBe(false);
    await azurite.restart();
    expect(azurite.running()).toBe(true);
    const after: string[] = [];
    for await (const c of azurite.client().listContainers()) after.push(c.name);
    expect(after).toEqual(["datasets"]);

    const pid = azurite.pid!;
    await azurite.stop();
    expect(pidAlive(pid)).toBe(false);
    expect(await portBindable(azurite.port)).toBe(true);
  });
});

describe("s3rver", () => {
  let s3: S3rverEmulator | undefined;
  afterEach(async () => {
    await s3?.stop();
  });

  it("creates the configured buckets, answers the real S3 SDK, restarts and stops cleanly", async () => {
    s3 = await S3rverEmulator.start({ dir: join(dir, "s3"), buckets: ["spillway-datasets"] });
    await s3.createBucket("later");
    await s3.createBucket("later");
    const client = s3.client();
    const listed = await client.send(new ListBucketsCommand({}));
    expect(listed.Buckets?.map((b) => b.Name).sort()).toEqual(["later", "spillway-datasets"]);
    await client.send(new PutObjectCommand({ Bucket: "later", Key: "k", Body: "v1" }));
    client.destroy();

    await s3.stop();
    expect(s3.running()).toBe(false);
    await s3.restart();
    const again = s3.client();
    const got = await again.send(new GetObjectCommand({ Bucket: "later", Key: "k" }));
    expect(await got.Body!.transformToString()).toBe("v1");
    again.destroy();

    const pid = s3.pid!;
    await s3.stop();
    expect(pidAlive(pid)).toBe(false);
    expect(await portBindable(s3.port)).toBe(true);
  });
});
