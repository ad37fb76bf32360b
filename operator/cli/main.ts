/**
 * The `spillway` command line. Each subcommand lives in its own module and is loaded only
 * when used, so `spillway sync` does not pay for the controllers and vice versa.
 */
import { Command } from "commander";
import { registerValidate } from "./validate.ts";

const program = new Command()
  .name("spillway")
  .description("Federated AI training across clouds under a right of first refusal.")
  .showHelpAfterError()
  .exitOverride((err) => {
    process.exit(err.exitCode === 0 ? 0 : 2);
  });

registerValidate(program);

await program.parseAsync(process.argv);
