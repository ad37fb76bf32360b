// Entry point for the Pulumi CLI (`pulumi up` in infra/azure). The operator runs the same
// program inline through the Automation API.
import { pulumiConfigSource } from "../shared/config.ts";
import { azureProgram } from "./program.ts";

export default async () => azureProgram(pulumiConfigSource());
