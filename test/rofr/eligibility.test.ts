import { describe, expect, test } from "@jest/globals";
import {
  evaluateEligibility,
  noEligibleProvider,
  noEligibleProviderMessage,
  runPolicy,
} from "../../operator/rofr/index.ts";
import { cheapProvider, euProvider, provider, providers, servingRun, trainingRun } from "./fixtures.ts";

const names = (ps: { metadata: { name?: string } }[]) => ps.map((p) => p.metadata.name);

describe("eligibility", () => {
  test("the primary defaults to the provider whose role is primary", () => {
    const e = evaluateEligibility(trainingRun(), providers());
    expect(e.primary?.metadata.name).toBe("azure-eastus");
    expect(names(e.alternatives)).toEqual(["oci-ashburn"]);
    expect(e.ineligible).toEqual([]);
  });

  test("policy defaults: training, 1 node, 5m decision timeout, matching on", () => {
    const p = runPolicy(trainingRun((r) => delete r.spec.placement));
    expect(p).toMatchObject({
      workloadClass: "training",
      decisionTimeout: "5m",
      matchCompetingOffers: true,
      alternatives: [],
      jurisdictions: [],
    });
  });

  test("an explicit primary in the policy wins over the role", () => {
    const all = [...providers(), cheapProvider()];
    const e = evaluateEligibility(
      trainingRun((r) => {
        r.spec.placement.primary = "oci-phoenix";
        r.spec.placement.alternatives = [];
      }),
      all,
    );
    expect(e.primary?.metadata.name).toBe("oci-phoenix");
    expect(names(e.alternatives)).toEqual(["azure-eastus", "oci-ashburn"]);
  });

  test("explicit alternatives keep the policy's order; unknown names are reported", () => {
    const all = [...providers(), cheapProvider()];
    const e = evaluateEligibility(
      trainingRun((r) => (r.spec.placement.alternatives = ["oci-phoenix", "nope", "oci-ashburn"])),
      all,
    );
    expect(names(e.alternatives)).toEqual(["oci-phoenix", "oci-ashburn"]);
    expect(e.ineligible).toEqual([{ provider: "nope", reason: "CloudProvider not found" }]);
  });

  test("a provider that failed earlier in the attempt is skipped and says so, not 'not found'", () => {
    const all = [...providers(), cheapProvider()];
    const e = evaluateEligibility(
      trainingRun((r) => (r.spec.placement.alternatives = ["oci-phoenix", "oci-ashburn"])),
      all,
      new Set(["oci-ashburn"]),
    );
    expect(names(e.alternatives)).toEqual(["oci-phoenix"]);
    expect(e.ineligible).toEqual([{ provider: "oci-ashburn", reason: "failed earlier in this attempt" }]);
  });

  test("empty alternatives means every non-primary provider", () => {
    const all = [...providers(), cheapProvider(), euProvider()];
    const e = evaluateEligibility(
      trainingRun((r) => {
        r.spec.placement.alternatives = [];
        r.spec.placement.jurisdictions = [];
      }),
      all,
    );
    expect(names(e.alternatives)).toEqual(["oci-ashburn", "oci-frankfurt", "oci-phoenix"]);
  });

  test("an EU run never gets a US provider, the primary included", () => {
    const all = [...providers(), cheapProvider(), euProvider()];
    const e = evaluateEligibility(
      trainingRun((r) => {
        r.spec.placement.alternatives = [];
        r.spec.placement.jurisdictions = ["EU"];
      }),
      all,
    );
    expect(e.primary).toBeUndefined();
    expect(names(e.alternatives)).toEqual(["oci-frankfurt"]);
    expect(e.ineligible).toContainEqual({ provider: "azure-eastus", reason: "jurisdiction US not in [EU]" });
    expect(e.ineligible).toContainEqual({ provider: "oci-ashburn", reason: "jurisdiction US not in [EU]" });
  });

  test("a provider that does not offer the GPU type is out", () => {
    const e = evaluateEligibility(
      trainingRun((r) => (r.spec.resources.gpu.type = "MI300X")),
      providers(),
    );
    expect(noEligibleProvider(e)).toBe(true);
    expect(e.ineligible[0]).toEqual({
      provider: "azure-eastus",
      reason: "GPU type MI300X not offered (offers H100)",
    });
  });

  test("too few GPUs per node or too many nodes is out", () => {
    const small = provider("oci-ashburn", (p) => (p.spec.capacity.gpus[0].gpusPerNode = 4));
    const e = evaluateEligibility(trainingRun(), [provider("azure-eastus"), small]);
    expect(e.ineligible).toEqual([
      { provider: "oci-ashburn", reason: "BM.GPU.H100.8 has 4 GPUs per node, the run needs 8" },
    ]);
    const big = evaluateEligibility(
      trainingRun((r) => {
        r.spec.resources.nodes = 40;
        delete r.spec.placement.maxHourlyPrice;
      }),
      providers(),
    );
    expect(big.primary?.metadata.name).toBe("azure-eastus");
    expect(big.ineligible).toEqual([
      { provider: "oci-ashburn", reason: "at most 32 H100 nodes, the run needs 40" },
    ]);
  });

  test("serving runs: the primary only", () => {
    const e = evaluateEligibility(servingRun(), [...providers(), cheapProvider()]);
    expect(e.primary?.metadata.name).toBe("azure-eastus");
    expect(e.alternatives).toEqual([]);
    expect(e.ineligible).toEqual([
      { provider: "oci-ashburn", reason: "serving runs are primary-exclusive" },
      { provider: "oci-phoenix", reason: "serving runs are primary-exclusive" },
    ]);
  });

  test("the price cap leaves out alternatives quoting more; the primary counts at its floor when matching", () => {
    // 16 GPUs: Azure list $111.68, floor $65.60; OCI $72.00.
    const e = evaluateEligibility(
      trainingRun((r) => (r.spec.placement.maxHourlyPrice = 70)),
      providers(),
    );
    expect(e.primary?.metadata.name).toBe("azure-eastus");
    expect(e.ineligible).toEqual([
      { provider: "oci-ashburn", reason: "price $72.00/h above maxHourlyPrice $70.00/h" },
    ]);
    const noMatch = evaluateEligibility(
      trainingRun((r) => {
        r.spec.placement.maxHourlyPrice = 70;
        r.spec.placement.rofr.matchCompetingOffers = false;
      }),
      providers(),
    );
    expect(noMatch.primary).toBeUndefined();
    expect(noMatch.ineligible[0]).toEqual({
      provider: "azure-eastus",
      reason: "price $111.68/h above maxHourlyPrice $70.00/h",
    });
  });

  test("an alternative without a price cannot quote and is out", () => {
    const unpriced = provider("oci-ashburn", (p) => delete p.spec.pricing);
    const e = evaluateEligibility(trainingRun(), [provider("azure-eastus"), unpriced]);
    expect(e.ineligible).toEqual([
      { provider: "oci-ashburn", reason: "no price for H100 (spec.pricing), so it cannot quote" },
    ]);
  });

  test("no eligible provider: one clear line naming every provider and its reason", () => {
    const e = evaluateEligibility(
      trainingRun((r) => (r.spec.placement.jurisdictions = ["EU"])),
      providers(),
    );
    expect(noEligibleProvider(e)).toBe(true);
    expect(noEligibleProviderMessage(e)).toBe(
      "no eligible provider: azure-eastus: jurisdiction US not in [EU]; oci-ashburn: jurisdiction US not in [EU]",
    );
  });

  test("no primary at all is named as such", () => {
    const e = evaluateEligibility(trainingRun(), [provider("oci-ashburn")]);
    expect(e.primary).toBeUndefined();
    expect(e.ineligible).toEqual([{ provider: "(primary)", reason: "no CloudProvider has role primary" }]);
    expect(names(e.alternatives)).toEqual(["oci-ashburn"]);
  });
});
