/**
 * `npm run gen:crds`: writes one CustomResourceDefinition per kind into `crds/`, generated
 * from the TypeBox schemas in `v1alpha1/`. `--check` exits 1 when the files on disk differ
 * (the drift test runs the same comparison).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { renderCrdFiles } from "./render.ts";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const check = process.argv.includes("--check");
let drift = 0;
for (const [rel, text] of Object.entries(renderCrdFiles())) {
  const path = join(root, rel);
  let current = "";
  try {
    current = readFileSync(path, "utf8");
  } catch {}
  if (current === text) continue;
  if (check) {
    console.error(`${rel} is out of date: run npm run gen:crds`);
    drift++;
  } else {
    writeFileSync(path, text);
    console.log(`wrote ${rel}`);
  }
}
process.exit(drift ? 1 : 0);
