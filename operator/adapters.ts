/**
 * The production wiring of the ports: which adapter answers offers, provisions clusters,
 * stages data and places checkpoints. `spillway operator` uses it; the sandbox demo builds the
 * same controllers with sandbox-backed endpoints (`operator/sandbox/wiring.ts`).
 */
import { readFileSync } from "node:fs";
import { AzureResponder } from "./clouds/azure/index.ts";
import type { ManagerOptions } from "./manager.ts";
import type { Logger } from "./runtime/logging.ts";

export interface AdapterOptions {
  pulumiStateDir: string;
  /** PEM file of extra CAs trusted for ARM and Entra ID calls (private endpoints, the sandbox). */
  azureCaFile?: string;
  log: Logger;
}

export type Adapters = Pick<
  ManagerOptions,
  "responderFor" | "provisionerFor" | "stager" | "checkpoints" | "extraControllers"
>;

export async function buildAdapters(opts: AdapterOptions): Promise<Adapters> {
  const ca = opts.azureCaFile ? readFileSync(opts.azureCaFile, "utf8") : undefined;
  const azure = new AzureResponder({ ...(ca ? { ca } : {}), logger: opts.log });
  return {
    responderFor: (p) => (p.spec.type === "azure" && p.spec.role === "primary" ? azure : undefined),
  };
}
