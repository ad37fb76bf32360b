/**
 * The production wiring of the ports: which adapter answers offers, provisions clusters,
 * stages data and places checkpoints. `spillway operator` uses it; the sandbox builds its own
 * wiring (same controllers, sandbox-backed endpoints) in `operator/sandbox/demo.ts`.
 */
import type { ManagerOptions } from "./manager.ts";
import type { Logger } from "./runtime/logging.ts";

export interface AdapterOptions {
  pulumiStateDir: string;
  log: Logger;
}

export type Adapters = Pick<
  ManagerOptions,
  "responderFor" | "provisionerFor" | "stager" | "checkpoints" | "extraControllers"
>;

export async function buildAdapters(_opts: AdapterOptions): Promise<Adapters> {
  return {};
}
