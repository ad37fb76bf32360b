/** `spillway validate FILE…`: the operator's own validation of Spillway manifests, offline. */
import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { parseAllDocuments } from "yaml";
import { formatFieldError, validateObject } from "../../api/v1alpha1/index.ts";

export function register(program: Command): void {
  program
    .command("validate")
    .description("Validate Spillway manifests (schemas and semantic checks) without a cluster.")
    .argument("<files...>", "YAML files")
    .action((files: string[]) => {
      let bad = 0;
      for (const file of files) {
        let text: string;
        try {
          text = readFileSync(file, "utf8");
        } catch (e) {
          console.error(`${file}: ${(e as Error).message}`);
          process.exitCode = 2;
          return;
        }
        for (const doc of parseAllDocuments(text)) {
          if (doc.errors.length > 0) {
            console.error(`${file}: ${doc.errors[0]!.message}`);
            bad++;
            continue;
          }
          let obj: { apiVersion?: string; kind?: string; metadata?: { name?: string } } | null;
          try {
            obj = doc.toJS({ maxAliasCount: 100 }) as typeof obj;
          } catch (e) {
            // e.g. an alias bomb: one line, no stack trace.
            console.error(`${file}: ${(e as Error).message}`);
            bad++;
            continue;
          }
          if (!obj || !String(obj.apiVersion ?? "").startsWith("spillway.dev/")) continue;
          const errors = validateObject(obj);
          const id = `${obj.kind}/${obj.metadata?.name ?? "?"}`;
          if (errors.length === 0) console.log(`${file}: ${id} valid`);
          else {
            bad++;
            for (const e of errors) console.error(`${file}: ${id}: ${formatFieldError(e)}`);
          }
        }
      }
      if (bad > 0) process.exitCode = 1;
    });
}
