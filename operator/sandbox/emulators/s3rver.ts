/**
 * s3rver (an S3-compatible server) as a child process: the sandbox's stand-in for OCI Object
 * Storage's S3-compatibility API. Buckets named at start are created by s3rver itself
 * (`--configure-bucket NAME`, repeated); later ones through the S3 API.
 */
import { mkdirSync } from "node:fs";
import { CreateBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { packageBin } from "./bins.ts";
import { ChildServer, freePort } from "./child.ts";

/** s3rver accepts these fixed credentials (its documented defaults; not a secret). */
export const S3RVER_ACCESS_KEY_ID = "S3RVER";
export const S3RVER_SECRET_ACCESS_KEY = "S3RVER";
export const S3RVER_REGION = "us-east-1";

export interface S3rverOptions {
  /** Data directory (`-d`); kept across restarts. */
  dir: string;
  port?: number;
  buckets?: string[];
}

export class S3rverEmulator {
  readonly host = "127.0.0.1";
  readonly accessKeyId = S3RVER_ACCESS_KEY_ID;
  readonly secretAccessKey = S3RVER_SECRET_ACCESS_KEY;
  readonly region = S3RVER_REGION;

  private constructor(
    private readonly server: ChildServer,
    readonly dir: string,
  ) {}

  static async start(opts: S3rverOptions): Promise<S3rverEmulator> {
    mkdirSync(opts.dir, { recursive: true });
    const port = opts.port ?? (await freePort());
    const buckets = opts.buckets ?? [];
    const server = new ChildServer({
      name: "s3rver",
      script: packageBin("s3rver", "s3rver"),
      host: "127.0.0.1",
      port,
      args: (p) => [
        "-d",
        opts.dir,
        "-a",
        "127.0.0.1",
        "-p",
        String(p),
        "-s",
        ...buckets.flatMap((b) => ["--configure-bucket", b]),
      ],
    });
    await server.start();
    return new S3rverEmulator(server, opts.dir);
  }

  get port(): number {
    return this.server.port;
  }

  get pid(): number | undefined {
    return this.server.pid;
  }

  get endpoint(): string {
    return `http://${this.host}:${this.port}`;
  }

  /** An S3 client configured the way S3-compatible stores need (path style, no default checksums). */
  client(): S3Client {
    return new S3Client({
      endpoint: this.endpoint,
      region: this.region,
      forcePathStyle: true,
      credentials: { accessKeyId: this.accessKeyId, secretAccessKey: this.secretAccessKey },
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
    });
  }

  /** Creates a bucket; succeeds when it already exists. */
  async createBucket(name: string): Promise<void> {
    const s3 = this.client();
    try {
      await s3.send(new CreateBucketCommand({ Bucket: name }));
    } catch (e) {
      const code = (e as { name?: string }).name;
      if (code !== "BucketAlreadyOwnedByYou" && code !== "BucketAlreadyExists") throw e;
    } finally {
      s3.destroy();
    }
  }

  running(): boolean {
    return this.server.running();
  }

  stop(): Promise<void> {
    return this.server.stop();
  }

  kill(): Promise<void> {
    return this.server.kill();
  }

  async restart(): Promise<void> {
    await this.server.restart();
  }
}
