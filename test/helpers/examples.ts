import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";

export const ROOT = join(import.meta.dirname, "..", "..");

/** Every document of every file in examples/, with its file name. */
export function loadExamples(): Array<{ file: string; doc: Record<string, unknown> }> {
  const dir = join(ROOT, "examples");
  const out: Array<{ file: string; doc: Record<string, unknown> }> = [];
  for (const file of readdirSync(dir)
    .filter((f) => f.endsWith(".yaml"))
    .sort()) {
    for (const d of parseAllDocuments(readFileSync(join(dir, file), "utf8"))) {
      const doc = d.toJS() as Record<string, unknown> | null;
      if (doc) out.push({ file, doc });
    }
  }
  return out;
}

// Fixtures are edited freely by tests, so they are loosely typed.
export function exampleOf(kind: string, name?: string): Record<string, any> {
  const found = loadExamples().find(
    (e) => e.doc.kind === kind && (!name || (e.doc.metadata as { name: string }).name === name),
  );
  if (!found) throw new Error(`no example ${kind} ${name ?? ""}`);
  return structuredClone(found.doc);
}
