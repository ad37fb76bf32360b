/**
 * The `spillway` command line. Every module in `commands/` exports `register(program)`;
 * they are loaded here, so adding a command is adding a file (no shared list to edit).
 */
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Command } from "commander";

const program = new Command()
  .name("spillway")
  .description("Federated AI training across clouds under a right of first refusal.")
  .showHelpAfterError()
  .exitOverride((err) => {
    process.exit(err.exitCode === 0 ? 0 : 2);
  });

const dir = join(dirname(fileURLToPath(import.meta.url)), "commands");
const all = readdirSync(dir)
  .filter((f) => /\.(ts|js)$/.test(f) && !f.endsWith(".d.ts"))
  .sort();
// A command's module is named after it: running one loads only that one (the operator does
// not carry the sandbox, the sync engine's CLI, …); help and unknown commands load them all.
const wanted = process.argv[2];
const only = all.filter((f) => f.replace(/\.(ts|js)$/, "") === wanted);
const modules = only.length === 1 ? only : all;
for (const file of modules) {
  const mod = (await import(pathToFileURL(join(dir, file)).href)) as { register?: (p: Command) => void };
  mod.register?.(program);
}

await program.parseAsync(process.argv);
