/**
 * Azurite (Microsoft's Azure Storage emulator), Blob service only, as a child process.
 * Flags from docs/ENVIRONMENT: `--disableTelemetry` (else it calls home), `--loose` and
 * `--skipApiVersionCheck` (newer SDKs send API versions Azurite does not know yet).
 *
 * Durability: Azurite keeps blob metadata in a Loki database saved every 5 s and on a graceful
 * stop. `stop()` (SIGTERM) keeps everything; `kill()` (SIGKILL, a crash) may lose what was
 * written in the last seconds — as a crashed store would, which is what chaos tests want.
 */
import { mkdirSync } from "node:fs";
import { BlobServiceClient, StorageSharedKeyCredential } from "@azure/storage-blob";
import { packageBin } from "./bins.ts";
import { ChildServer, freePort } from "./child.ts";

/** Azurite's well-known development account (published by Microsoft; not a secret). */
export const AZURITE_ACCOUNT = "devstoreaccount1";
export const AZURITE_KEY =
  "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

export interface AzuriteOptions {
  /** Data directory (`--location`); kept across restarts. */
  dir: string;
  /** Port; a free one when absent. */
  port?: number;
  /** Containers created once it answers. */
  containers?: string[];
}

export class AzuriteEmulator {
  readonly host = "127.0.0.1";
  readonly accountName = AZURITE_ACCOUNT;
  readonly accountKey = AZURITE_KEY;

  private constructor(
    private readonly server: ChildServer,
    readonly dir: string,
  ) {}

  static async start(opts: AzuriteOptions): Promise<AzuriteEmulator> {
    mkdirSync(opts.dir, { recursive: true });
    const port = opts.port ?? (await freePort());
    const server = new ChildServer({
      name: "azurite",
      script: packageBin("azurite", "azurite-blob"),
      host: "127.0.0.1",
      port,
      args: (p) => [
        "--silent",
        "--location",
        opts.dir,
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        String(p),
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--loose",
      ],
    });
    await server.start();
    const emu = new AzuriteEmulator(server, opts.dir);
    for (const c of opts.containers ?? []) await emu.createContainer(c);
    return emu;
  }

  get port(): number {
    return this.server.port;
  }

  get pid(): number | undefined {
    return this.server.pid;
  }

  /** Blob endpoint including the account path, as Azurite serves it. */
  get blobEndpoint(): string {
    return `http://${this.host}:${this.port}/${AZURITE_ACCOUNT}`;
  }

  get connectionString(): string {
    return (
      `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};` +
      `BlobEndpoint=${this.blobEndpoint};`
    );
  }

  client(): BlobServiceClient {
    return new BlobServiceClient(
      this.blobEndpoint,
      new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY),
    );
  }

  async createContainer(name: string): Promise<void> {
    await this.client().getContainerClient(name).createIfNotExists();
  }

  running(): boolean {
    return this.server.running();
  }

  /** Graceful stop (SIGTERM, then SIGKILL after a timeout). */
  stop(): Promise<void> {
    return this.server.stop();
  }

  /** Abrupt stop, as a crash (SIGKILL). */
  kill(): Promise<void> {
    return this.server.kill();
  }

  /** Starts again on the same port and data directory (after `stop` or `kill`). */
  async restart(): Promise<void> {
    await this.server.restart();
  }
}
