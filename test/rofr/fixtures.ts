import type { CapacityOffer, CloudProvider, TrainingRun } from "../../operator/api/v1alpha1/index.ts";
import { exampleOf } from "../helpers/examples.ts";

/** The example providers: azure-eastus (primary, US, $6.98 list / $4.10 floor), oci-ashburn (US, $4.50). */
export function providers(): CloudProvider[] {
  return [
    exampleOf("CloudProvider", "azure-eastus") as CloudProvider,
    exampleOf("CloudProvider", "oci-ashburn") as CloudProvider,
  ];
}

export function provider(name: string, edit: (p: any) => void = () => {}): CloudProvider {
  const all = [...providers(), euProvider(), cheapProvider()];
  const p = structuredClone(all.find((x) => x.metadata.name === name)) as any;
  if (!p) throw new Error(`no provider ${name}`);
  edit(p);
  return p;
}

/** An EU alternative. */
export function euProvider(): CloudProvider {
  const p = exampleOf("CloudProvider", "oci-ashburn") as any;
  p.metadata.name = "oci-frankfurt";
  p.spec.region = "eu-frankfurt-1";
  p.spec.jurisdiction = "EU";
  p.spec.pricing.gpus[0].pricePerGpuHour = 5;
  return p;
}

/** A cheaper US alternative. */
export function cheapProvider(): CloudProvider {
  const p = exampleOf("CloudProvider", "oci-ashburn") as any;
  p.metadata.name = "oci-phoenix";
  p.spec.region = "us-phoenix-1";
  p.spec.pricing.gpus[0].pricePerGpuHour = 3;
  p.spec.quoteLatency = "10m";
  return p;
}

/** The training example (2 nodes × 8 H100, alternatives [oci-ashburn], US, cap $200/h), stored. */
export function trainingRun(edit: (r: any) => void = () => {}): TrainingRun {
  const r = exampleOf("TrainingRun", "llama-pretrain") as any;
  r.metadata.uid = "0b9d6c1e-7f0a-4a51-9a36-2f7c3f0f1a11";
  edit(r);
  return r;
}

export function servingRun(edit: (r: any) => void = () => {}): TrainingRun {
  const r = exampleOf("TrainingRun", "api-serving") as any;
  r.metadata.uid = "5f1e2d3c-aaaa-bbbb-cccc-000000000001";
  edit(r);
  return r;
}

export function answered(offer: CapacityOffer, status: CapacityOffer["status"]): CapacityOffer {
  return { ...offer, status };
}

export const NOW = new Date("2026-11-21T20:00:00Z");
