/**
 * Runs only the `sync` command with the same program settings as operator/cli/main.ts (usage
 * errors exit 2), so these tests do not depend on every other command loading.
 */
import { Command } from "commander";
import { register } from "../../operator/cli/commands/sync.ts";

const program = new Command()
  .name("spillway")
  .showHelpAfterError()
  .exitOverride((err) => {
    process.exit(err.exitCode === 0 ? 0 : 2);
  });
register(program);
await program.parseAsync(process.argv);
