/**
 * Regenerates the chart's derived files from their single sources of truth:
 * - charts/spillway/crds/*.yaml: byte-for-byte copies of the repository's crds/ (which
 *   `npm run gen:crds` writes from operator/api/v1alpha1);
 * - `definitions.cloudProviderSpec` of charts/spillway/values.schema.json, from the
 *   CloudProvider CRD schema (test/chart/provider-schema.ts).
 * test/chart/generated.test.ts fails when either has drifted; run this after an API change:
 *
 *   npm run gen:crds && npm exec -- node bin/run-ts.mjs test/chart/generate.ts
 */
import { execFileSync } from "node:child_process";
import { copyFileSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CHART_CRDS, chartCrdFiles, REPO_CRDS, repoCrdFiles, VALUES_SCHEMA } from "./generated.ts";
import { providerSpecSchema } from "./provider-schema.ts";

const root = join(import.meta.dirname, "..", "..");

for (const stale of chartCrdFiles().filter((f) => !repoCrdFiles().includes(f))) {
  rmSync(join(CHART_CRDS, stale));
}
for (const f of repoCrdFiles()) copyFileSync(join(REPO_CRDS, f), join(CHART_CRDS, f));

const schema = JSON.parse(readFileSync(VALUES_SCHEMA, "utf8"));
schema.definitions.cloudProviderSpec = providerSpecSchema();
writeFileSync(VALUES_SCHEMA, `${JSON.stringify(schema, null, 2)}\n`);
execFileSync(join(root, "node_modules", ".bin", "biome"), ["format", "--write", VALUES_SCHEMA], {
  stdio: "inherit",
});
console.log(
  `chart CRDs: ${readdirSync(CHART_CRDS).length} files; values schema: cloudProviderSpec rewritten`,
);
