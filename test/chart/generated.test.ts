/**
 * The chart's derived files match their sources, so the chart never drifts from the API.
 * On failure run: npm run gen:crds && npm exec -- node bin/run-ts.mjs test/chart/generate.ts
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CHART_CRDS, chartCrdFiles, REPO_CRDS, repoCrdFiles, VALUES_SCHEMA } from "./generated.ts";
import { CHART, helm, ofKind, render } from "./helm.ts";
import { providerSpecSchema } from "./provider-schema.ts";

describe("the chart's CRDs (charts/spillway/crds)", () => {
  test("are exactly the repository's generated CRDs: same files, same bytes", () => {
    expect(chartCrdFiles()).toEqual(repoCrdFiles());
    for (const f of repoCrdFiles()) {
      expect({ file: f, text: readFileSync(join(CHART_CRDS, f), "utf8") }).toEqual({
        file: f,
        text: readFileSync(join(REPO_CRDS, f), "utf8"),
      });
    }
  });

  test("are the five spillway.dev kinds, shown by `helm show crds`", () => {
    const r = helm(["show", "crds", CHART]);
    expect(r.code).toBe(0);
    const names = [...r.stdout.matchAll(/^ {2}name: (\S+)$/gm)].map((m) => m[1]).sort();
    expect(names).toEqual([
      "capacityoffers.spillway.dev",
      "cloudproviders.spillway.dev",
      "datasets.spillway.dev",
      "provisionedclusters.spillway.dev",
      "trainingruns.spillway.dev",
    ]);
  });

  // Helm creates crds/ before the templates on install (so CloudProviders from values can be
  // created in the same release) and never upgrades or deletes them: they are not templates.
  test("are not templates: the release manifest holds no CRD, --include-crds adds all five", () => {
    expect(ofKind(render(), "CustomResourceDefinition")).toEqual([]);
    const r = helm(["template", "spillway", CHART, "--include-crds"]);
    expect(r.code).toBe(0);
    expect(r.stdout.match(/^kind: CustomResourceDefinition$/gm)).toHaveLength(5);
  });
});

test("values.schema.json's providers[].spec is the one derived from the CloudProvider CRD", () => {
  const schema = JSON.parse(readFileSync(VALUES_SCHEMA, "utf8"));
  expect(schema.definitions.cloudProviderSpec).toEqual(providerSpecSchema());
});

test("`helm package` ships the CRDs and the values schema, and leaves the example values out", () => {
  const out = mkdtempSync(join(tmpdir(), "spillway-chart-package-"));
  try {
    const r = helm(["package", CHART, "-d", out]);
    expect(r.code).toBe(0);
    const tgz = join(out, "spillway-0.1.0.tgz");
    const files = execFileSync("tar", ["-tzf", tgz], { encoding: "utf8" }).split("\n");
    expect(files.filter((f) => f.startsWith("spillway/crds/")).sort()).toEqual(
      repoCrdFiles().map((f) => `spillway/crds/${f}`),
    );
    expect(files).toContain("spillway/values.schema.json");
    expect(files.filter((f) => f.startsWith("spillway/examples/"))).toEqual([]);
    expect(helm(["lint", "--strict", tgz]).code).toBe(0);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
