/**
 * The sandbox training pod as a process: `node bin/run-ts.mjs operator/sandbox/trainer/main.ts`
 * (or `spillway checkpoint workload`) with the environment contract of workload.ts (store
 * credentials from each SDK's usual variables). Prints one JSON WorkloadEvent per line on
 * stdout, logs on stderr. Exit codes: 0 finished, 1 failed, 143 stopped by SIGTERM/SIGINT
 * (after draining the agent).
 */
import { workloadProcess } from "./workload.ts";

workloadProcess().then((code) => process.exit(code));
