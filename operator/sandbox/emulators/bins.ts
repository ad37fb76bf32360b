/** Where the emulators' entry points are: the packages' own `bin` scripts (node_modules/.bin). */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const require = createRequire(import.meta.url);

/** The file a package's `bin` entry named `bin` points at. */
export function packageBin(pkg: string, bin: string): string {
  const manifestPath = require.resolve(`${pkg}/package.json`);
  const manifest = JSON.parse(readFileSync(manifestPath, "utf8")) as {
    bin?: string | Record<string, string>;
  };
  const rel = typeof manifest.bin === "string" ? manifest.bin : manifest.bin?.[bin];
  if (!rel) throw new Error(`package ${pkg} has no bin ${bin}`);
  return join(dirname(manifestPath), rel);
}
