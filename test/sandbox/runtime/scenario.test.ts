import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  DEFAULT_SCENARIO,
  loadScenario,
  ScenarioError,
  scenarioTimingsMs,
  validateScenario,
} from "../../../operator/sandbox/scenario.ts";
import { ROOT } from "../../helpers/examples.ts";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "spillway-scenario-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function errorOf(fn: () => unknown): ScenarioError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ScenarioError) return e;
    throw e;
  }
  throw new Error("expected a ScenarioError");
}

describe("sandbox scenario", () => {
  it("the example file is the default scenario", () => {
    expect(loadScenario(join(ROOT, "examples", "sandbox", "scenario.yaml"))).toEqual(DEFAULT_SCENARIO);
    expect(loadScenario()).toEqual(DEFAULT_SCENARIO);
  });

  it("the default scenario tells the demo story: Azure fits run B but not run A, OCI fits run A", () => {
    const s = DEFAULT_SCENARIO;
    const [runA, runB, serving] = s.demo.runs;
    const armFreeNodes = (s.clouds.azure.arm.capacity as Array<{ available: number }>)[0]!.available;
    expect(runA!.nodes).toBeGreaterThan(armFreeNodes);
    expect(runB!.nodes).toBeLessThanOrEqual(armFreeNodes);
    expect(serving!.workloadClass).toBe("serving");
    expect(s.clouds.oci.cluster.nodes * s.clouds.oci.cluster.gpusPerNode).toBeGreaterThanOrEqual(
      runA!.nodes * runA!.gpusPerNode,
    );
  });

  it("fills defaults for omitted sections", () => {
    const raw = structuredClone(DEFAULT_SCENARIO) as any;
    delete raw.timings;
    delete raw.demo;
    delete raw.clouds.oci.provisioning;
    const s = validateScenario(raw);
    expect(scenarioTimingsMs(s)).toEqual({ podStartupMs: 500, jobDurationMs: 5000 });
    expect(s.demo.runs).toEqual([]);
    expect(s.clouds.oci.provisioning.latency).toBe("2s");
  });

  it.each([
    ["an unknown field", { extra: true }, "/extra: Unexpected property"],
    ["a bad duration", { timings: { podStartup: "5 seconds", jobDuration: "1s" } }, "/timings/podStartup"],
    [
      "a zero maxClusters",
      { clouds: { ...DEFAULT_SCENARIO.clouds, oci: { ...DEFAULT_SCENARIO.clouds.oci, maxClusters: 0 } } },
      "/clouds/oci/maxClusters",
    ],
  ])("rejects %s with the field path", (_what, patch, expected) => {
    const e = errorOf(() => validateScenario({ ...structuredClone(DEFAULT_SCENARIO), ...patch }, "s.yaml"));
    expect(e.message).toContain("s.yaml: ");
    expect(e.message).toContain(expected);
    expect(e.message.split("\n")).toHaveLength(1);
  });

  it("rejects a cluster GPU type the cloud does not offer", () => {
    const raw = structuredClone(DEFAULT_SCENARIO);
    raw.clouds.oci.cluster.gpuType = "A100";
    expect(errorOf(() => validateScenario(raw)).message).toContain("/clouds/oci/cluster/gpuType");
  });

  it("names the file on unreadable or unparsable input", () => {
    const bad = join(dir, "bad.yaml");
    writeFileSync(bad, "clouds: [unclosed\n");
    expect(errorOf(() => loadScenario(bad)).message).toMatch(/^.*bad\.yaml: /);
    expect(errorOf(() => loadScenario(join(dir, "missing.yaml"))).message).toContain("ENOENT");
  });
});
