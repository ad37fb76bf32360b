#!/usr/bin/env node
// The `spillway` command. Runs the compiled CLI when `npm run build` produced it (the
// container image does), otherwise the TypeScript sources through tsx (a checkout).
// `spillway sync` starts with its own V8 flags and runs from its bundle: bin/sync-runtime.mjs.
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { missingSyncFlags, SYNC_BUNDLE, syncEnvironment } from "./sync-runtime.mjs";

const self = fileURLToPath(import.meta.url);
const root = join(dirname(self), "..");

const sync = process.argv[2] === "sync";
if (sync) {
  const missing = missingSyncFlags(process.execArgv);
  const env = syncEnvironment(process.env);
  // The flags (and malloc's tunables) can only be given at start: the process becomes node
  // with them (same pid, so a Job's signals and exit code are its own). Without execve
  // (Node < 23.11) it runs as is.
  if ((missing.length > 0 || env !== process.env) && typeof process.execve === "function") {
    process.execve(
      process.execPath,
      [process.execPath, ...missing, ...process.execArgv, self, ...process.argv.slice(2)],
      env,
    );
  }
}

if (sync && existsSync(SYNC_BUNDLE)) {
  await import(pathToFileURL(SYNC_BUNDLE).href);
} else {
  const compiled = join(root, "dist", "operator", "cli", "main.js");
  if (existsSync(compiled)) {
    await import(pathToFileURL(compiled).href);
  } else {
    const { register } = await import("tsx/esm/api");
    register();
    await import(pathToFileURL(join(root, "operator", "cli", "main.ts")).href);
  }
}
