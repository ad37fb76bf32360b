/**
 * `spillway sync` on its own: the entry of the sync bundle (`bin/sync-runtime.mjs` builds it
 * into `dist/sync/`), which the `spillway` launcher runs for `spillway sync` — what a DataSet
 * sync worker Job runs. The same command as `operator/cli/main.ts` registers; only this one is
 * loaded, so a worker starts without resolving the operator's modules.
 */
import { Command } from "commander";
import { register } from "./commands/sync.ts";

const program = new Command()
  .name("spillway")
  .showHelpAfterError()
  .exitOverride((err) => {
    process.exit(err.exitCode === 0 ? 0 : 2);
  });
register(program);
await program.parseAsync(process.argv);
