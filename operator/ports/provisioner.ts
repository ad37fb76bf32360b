/**
 * Standing up and tearing down clusters on an alternative cloud. Implemented by
 * `operator/clouds/pulumi` (Pulumi Automation API over `infra/`) and by the sandbox
 * (a new simulated cluster); consumed by the ProvisionedCluster controller.
 */
import type { NodePoolSpec } from "./types.ts";

export interface ProvisionRequest {
  /** Stack name: stable for the ProvisionedCluster, so `up` is idempotent. */
  stackName: string;
  program: "oci" | "azure";
  /** The CloudProvider the cluster belongs to. */
  provider: string;
  region: string;
  nodePools: NodePoolSpec[];
  /** Non-secret stack configuration. */
  config: Record<string, string>;
  /** Secret stack configuration (from the provider's secretConfigRef); never logged. */
  secretConfig: Record<string, string>;
}

export interface ProvisionOutputs {
  clusterId: string;
  /** Kubeconfig of the new cluster. Secret: stored only in a Secret. */
  kubeconfig: string;
  bucket?: string;
  s3Endpoint?: string;
  region: string;
}

export type ProvisionFailureReason =
  | "QuotaExceeded"
  | "NoCapacity"
  | "ConfigInvalid"
  | "StackLocked"
  | "ProviderError";

export class ProvisionError extends Error {
  constructor(
    readonly reason: ProvisionFailureReason,
    message: string,
    /** Whether trying the same operation again later may succeed. */
    readonly retryable: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "ProvisionError";
  }
}

export interface ProvisionProgress {
  message: string;
  resourcesDone?: number;
  resourcesTotal?: number;
}

export interface Provisioner {
  /** Creates or updates the stack. Idempotent. Throws `ProvisionError`. */
  up(
    req: ProvisionRequest,
    onProgress?: (p: ProvisionProgress) => void,
    signal?: AbortSignal,
  ): Promise<ProvisionOutputs>;
  /** Destroys the stack. Idempotent: succeeds when nothing is left. Throws `ProvisionError`. */
  destroy(req: ProvisionRequest, onProgress?: (p: ProvisionProgress) => void): Promise<void>;
  /** Clears a stale lock left by a killed operation (before retrying after a restart). */
  cancel(req: ProvisionRequest): Promise<void>;
  /** The outputs of an existing stack, or undefined when it does not exist (restart recovery). */
  outputs(req: ProvisionRequest): Promise<ProvisionOutputs | undefined>;
}
