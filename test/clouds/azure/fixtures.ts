import { Writable } from "node:stream";
import type { CapacityOffer, CloudProvider } from "../../../operator/api/v1alpha1/index.ts";
import { AzureResponder } from "../../../operator/clouds/azure/index.ts";
import { createLogger } from "../../../operator/runtime/logging.ts";
import { type ArmEmulator, startArmEmulator } from "../../../operator/sandbox/arm/index.ts";
import { exampleOf } from "../../helpers/examples.ts";

export const H100 = "Standard_ND96isr_H100_v5";
export const FAMILY = "standardNDSH100v5Family";
export const AUTH = { tenantId: "tenant-1", clientId: "client-1", clientSecret: "sw-test-secret-Zq9" };

/** An emulator with `free` H100 nodes in eastus and quota for `quotaNodes` of them. */
export async function emulator(
  free = 2,
  quotaNodes = 4,
  extra: Record<string, unknown> = {},
): Promise<ArmEmulator> {
  return startArmEmulator({
    capacity: [{ region: "eastus", sku: H100, available: free }],
    quota: [{ region: "eastus", family: FAMILY, limit: quotaNodes * 96 }],
    latency: "0s",
    auth: AUTH,
    ...extra,
  });
}

/** The example azure-eastus provider ($6.98 list, $4.10 floor per GPU-hour) pointed at the emulator. */
export function provider(emu: ArmEmulator, edit: (p: any) => void = () => {}): CloudProvider {
  const p = exampleOf("CloudProvider", "azure-eastus") as any;
  p.metadata.uid = "cp-uid-1";
  p.spec.azure.armEndpoint = emu.url;
  edit(p);
  return p;
}

let seq = 0;

/** An offer of `nodes` × 8 H100 in eastus; `quote` is the best competing price per hour. */
export function offer(nodes = 1, quote?: number, name = `run-${++seq}-a1`): CapacityOffer {
  return {
    apiVersion: "spillway.dev/v1alpha1",
    kind: "CapacityOffer",
    metadata: { name, namespace: "ml-team", uid: `offer-uid-${name}` },
    spec: {
      run: { name: name.replace(/-a1$/, ""), uid: `run-uid-${name}` },
      attempt: 1,
      provider: "azure-eastus",
      workloadClass: "training",
      request: { gpuType: "H100", gpusPerNode: 8, nodes, region: "eastus" },
      ...(quote !== undefined ? { competingQuote: { provider: "oci-ashburn", pricePerHour: quote } } : {}),
      deadline: "2026-11-21T21:00:00Z",
    },
  } as CapacityOffer;
}

export function responder(emu: ArmEmulator, logs?: string[]): AzureResponder {
  const logger = logs
    ? createLogger({
        stream: new Writable({
          write(chunk, _enc, cb) {
            logs.push(String(chunk));
            cb();
          },
        }),
      })
    : undefined;
  return new AzureResponder({
    authorityHost: emu.url,
    ca: emu.ca,
    pollIntervalMs: 5,
    ...(logger ? { logger } : {}),
  });
}

export const ctx = () => ({ credentials: { ...AUTH } });
