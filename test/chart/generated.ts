/** Where the chart's derived files and their sources live (shared by generate.ts and its drift test). */
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "../helpers/examples.ts";
import { CHART } from "./helm.ts";

export const REPO_CRDS = join(ROOT, "crds");
export const CHART_CRDS = join(CHART, "crds");
export const VALUES_SCHEMA = join(CHART, "values.schema.json");

const yamlFiles = (dir: string) =>
  readdirSync(dir)
    .filter((f) => f.endsWith(".yaml"))
    .sort();
export const repoCrdFiles = () => yamlFiles(REPO_CRDS);
export const chartCrdFiles = () => yamlFiles(CHART_CRDS);
