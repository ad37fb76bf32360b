/**
 * The production wiring of the ports: which adapter answers offers, provisions clusters,
 * stages data and places checkpoints. `spillway operator` uses it; the sandbox demo builds the
 * same controllers with sandbox-backed endpoints (`operator/sandbox/wiring.ts`).
 */
import { readFileSync } from "node:fs";
import { StoreCheckpointPlanner } from "./checkpoints/index.ts";
import { storeResolver } from "./controllers/context.ts";
import { dataSetController } from "./controllers/dataset/controller.ts";
import { provisionedClusterController } from "./controllers/provisionedcluster/index.ts";
import { DatasetSyncs } from "./dataplane/stager.ts";
import type { ManagerOptions } from "./manager.ts";
import type { PrimaryResponder } from "./ports/index.ts";
import type { Logger } from "./runtime/logging.ts";

export interface AdapterOptions {
  pulumiStateDir: string;
  /** PEM file of extra CAs trusted for ARM and Entra ID calls (private endpoints, the sandbox). */
  azureCaFile?: string;
  log: Logger;
}

export type Adapters = Pick<
  ManagerOptions,
  "responderFor" | "provisionerFor" | "stager" | "checkpointsFor" | "extraControllers"
>;

export async function buildAdapters(opts: AdapterOptions): Promise<Adapters> {
  const ca = opts.azureCaFile ? readFileSync(opts.azureCaFile, "utf8") : undefined;
  // The Azure SDKs (ARM compute, container service, identity: ~60 MiB resident) are loaded
  // when the first offer to an Azure primary is answered, not at start: an operator with no
  // Azure primary never loads them (docs/performance.md).
  const azure = lazyResponder(async () => {
    const { AzureResponder } = await import("./clouds/azure/index.ts");
    return new AzureResponder({ ...(ca ? { ca } : {}), logger: opts.log });
  });
  // The Pulumi state is encrypted with a passphrase the chart mounts from a Secret as an
  // environment variable; without it no cluster can be provisioned, and the
  // ProvisionedCluster controller says so in the cluster's conditions.
  const passphrase = process.env.PULUMI_CONFIG_PASSPHRASE;
  // One provisioner per state backend (a provider's `provision.backendUrl`, else the file
  // backend under --pulumi-state-dir).
  // Loaded only when used: the Automation API (and gRPC under it) is heavy.
  const pulumi = passphrase
    ? (await import("./clouds/pulumi/index.ts")).pulumiProvisionerFor({
        stateDir: opts.pulumiStateDir,
        secretsPassphrase: passphrase,
        // The chart sets PULUMI_HOME (plugins baked into the image live there).
        ...(process.env.PULUMI_HOME ? { pulumiHome: process.env.PULUMI_HOME } : {}),
      })
    : undefined;
  if (!pulumi) opts.log.warn("PULUMI_CONFIG_PASSPHRASE is not set: clusters cannot be provisioned");
  const datasets = new DatasetSyncs();
  return {
    responderFor: (p) => (p.spec.type === "azure" && p.spec.role === "primary" ? azure : undefined),
    provisionerFor: (p) => (p.spec.cluster.provision ? pulumi?.(p) : undefined),
    stager: datasets,
    checkpointsFor: (ctx) => new StoreCheckpointPlanner(storeResolver(ctx)),
    extraControllers: (ctx) => [provisionedClusterController(ctx), dataSetController(ctx, datasets)],
  };
}

/** A responder built on first use (its module imported then); every call waits for it. */
export function lazyResponder(load: () => Promise<PrimaryResponder>): PrimaryResponder {
  let loaded: Promise<PrimaryResponder> | undefined;
  const get = () => {
    loaded ??= load().catch((err: unknown) => {
      loaded = undefined; // a failed import is tried again on the next call
      throw err;
    });
    return loaded;
  };
  return {
    respond: async (offer, provider, ctx) => (await get()).respond(offer, provider, ctx),
    release: async (offer, provider, ctx) => (await get()).release(offer, provider, ctx),
    managedReservations: async (provider, ctx) => (await get()).managedReservations?.(provider, ctx) ?? [],
    releaseReservation: async (name, provider, ctx) => {
      await (await get()).releaseReservation?.(name, provider, ctx);
    },
  };
}
