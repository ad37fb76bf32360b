#!/usr/bin/env node
// The `spillway` command. Runs the compiled CLI when `npm run build` produced it (the
// container image does), otherwise the TypeScript sources through tsx (a checkout).
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const compiled = join(root, "dist", "operator", "cli", "main.js");
if (existsSync(compiled)) {
  await import(pathToFileURL(compiled).href);
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import(pathToFileURL(join(root, "operator", "cli", "main.ts")).href);
}
