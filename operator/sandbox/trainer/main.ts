/**
 * The sandbox training pod as a process: `node bin/run-ts.mjs operator/sandbox/trainer/main.ts`
 * with the environment contract of workload.ts (store credentials from each SDK's usual
 * variables). Prints one JSON WorkloadEvent per line on stdout, logs on stderr.
 * Exit codes: 0 finished, 1 failed, 143 stopped by SIGTERM/SIGINT (after draining the agent).
 */
import { credentialsFromEnv } from "../../dataplane/credentials.ts";
import { openStore } from "../../dataplane/store.ts";
import { runWorkload, workloadFromEnv } from "./workload.ts";

const log = (line: string) => process.stderr.write(`${new Date().toISOString()} trainer: ${line}\n`);

async function main(): Promise<number> {
  const opts = workloadFromEnv();
  const store = await openStore(opts.storeUri, credentialsFromEnv());
  const stop = new AbortController();
  const onSignal = () => stop.abort(new Error("stopped by signal"));
  process.once("SIGTERM", onSignal);
  process.once("SIGINT", onSignal);
  try {
    await runWorkload(opts, store, (e) => process.stdout.write(`${JSON.stringify(e)}\n`), stop.signal, log);
    return 0;
  } catch (e) {
    if (stop.signal.aborted) {
      log("stopped; complete checkpoints were uploaded");
      return 143;
    }
    throw e;
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    log(`failed: ${(e as Error).message}`);
    process.exit(1);
  },
);
