/**
 * Provisioning in the placement flow: when the first alternative cannot provision a cluster,
 * the run is placed on the next alternative in the same attempt (one offer, one attempt).
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import type { CloudProvider, ProvisionedCluster } from "../../operator/api/v1alpha1/index.ts";
import { type KubeObject, SpillwayResources } from "../../operator/runtime/resources.ts";
import { sandboxProviders } from "../../operator/sandbox/wiring.ts";
import {
  AZURE_SKU,
  type E2E,
  eventually,
  getRun,
  offersOf,
  phaseIs,
  startE2E,
  testScenario,
  trainingRun,
} from "./harness.ts";

let e: E2E;

beforeAll(async () => {
  // The first `up` fails with a quota error (the scenario's injected provisioning failure).
  e = await startE2E(
    testScenario((s) => {
      s.clouds.oci.provisioning = {
        ...s.clouds.oci.provisioning,
        failure: { reason: "QuotaExceeded", message: "GPU shape limit reached", times: 1 },
      };
    }),
  );
  // A second alternative, more expensive, provisioned by the same (sandbox) provisioner.
  const oci = sandboxProviders(e.sandbox).find((p) => p.spec.type === "oci")!;
  const phoenix: CloudProvider = structuredClone(oci);
  phoenix.metadata = { name: "oci-phoenix" };
  phoenix.spec.region = "us-phoenix-1";
  phoenix.spec.pricing = { gpus: [{ type: "H100", pricePerGpuHour: 5.5 }] };
  await e.client.create(SpillwayResources.CloudProvider, phoenix as CloudProvider & KubeObject);
  await e.startOperator();
}, 120_000);

afterAll(async () => {
  await e?.stop();
}, 60_000);

describe("provisioning", () => {
  test("a provisioning failure on the first alternative places the run on the next one", async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 0);
    const run = trainingRun("fallback");
    run.spec.placement = { alternatives: ["oci-ashburn", "oci-phoenix"] };
    expect((await e.kubectl(["apply", "-f", "-"], JSON.stringify(run))).code).toBe(0);
    const done = await eventually(
      () => getRun(e, "fallback"),
      phaseIs("Succeeded", "Failed"),
      "finish",
      90_000,
    );
    expect(done.status?.phase).toBe("Succeeded");
    expect(done.status?.attempt).toBe(1);
    expect(done.status?.placement?.provider).toBe("oci-phoenix");
    expect(done.status?.failedProviders).toEqual(["oci-ashburn"]);
    // One offer for the one attempt; Azure was asked first.
    const offers = await offersOf(e, "fallback");
    expect(offers.map((o) => [o.spec.attempt, o.status?.outcome])).toEqual([[1, "Declined"]]);
    expect(offers[0]!.spec.competingQuote?.provider).toBe("oci-ashburn");
    // The failed cluster says why, the used one is Ready.
    const clusters = await e.client.list<ProvisionedCluster & KubeObject>(
      SpillwayResources.ProvisionedCluster,
      {},
    );
    const failed = clusters.items.find((c) => c.spec.provider === "oci-ashburn");
    expect(failed?.status?.phase).toBe("Failed");
    expect(JSON.stringify(failed?.status?.conditions)).toMatch(/GPU shape limit reached/);
    const used = clusters.items.find((c) => c.metadata.name === done.status?.placement?.cluster);
    expect(used?.spec.provider).toBe("oci-phoenix");
    const events = await e.kubectl([
      "get",
      "events",
      "-n",
      "ml-team",
      "--field-selector",
      "involvedObject.name=fallback",
    ]);
    expect(events.stdout).toMatch(/ClusterFailed/);
  }, 180_000);
});
