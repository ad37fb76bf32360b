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
const modules = readdirSync(dir)
  .filter((f) => /\.(ts|js)$/.test(f) && !f.endsWith(".d.ts"))
  .sort();
for (const file of modules) {
  const mod = (await import(pathToFileURL(join(dir, file)).href)) as { register?: (p: Command) => void };
  mod.register?.(program);
}

await program.parseAsync(process.argv);
