// Entry point for the Pulumi CLI (`pulumi up` in infra/oci). The operator runs the same
// program inline through the Automation API.
import { pulumiConfigSource } from "../shared/config.ts";
import { ociProgram } from "./program.ts";

export default async () => ociProgram(pulumiConfigSource());
