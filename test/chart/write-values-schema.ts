/** Rewrites `definitions.cloudProviderSpec` of the chart's values.schema.json from the API. */
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { providerSpecSchema } from "./provider-schema.ts";

const root = join(import.meta.dirname, "..", "..");
const file = join(root, "charts", "spillway", "values.schema.json");
const schema = JSON.parse(readFileSync(file, "utf8"));
schema.definitions.cloudProviderSpec = providerSpecSchema();
writeFileSync(file, JSON.stringify(schema, null, 2) + "\n");
execFileSync(join(root, "node_modules", ".bin", "biome"), ["format", "--write", file], { stdio: "inherit" });
