/**
 * The Pulumi adapter of the Provisioner port: `PulumiProvisioner` (Automation API over
 * `infra/`), the classification of engine output into ProvisionError reasons, and the mapping
 * of requests to stack configuration. See docs/provisioning.md.
 */
export { CLASSIFICATION_RULES, classifyPulumiOutput, scrubSecrets } from "./classify.ts";
export { describeUrn, ProgressTracker } from "./progress.ts";
export { PulumiProvisioner, type PulumiProvisionerOptions, pulumiProvisionerFor } from "./provisioner.ts";
export {
  findInfraDir,
  operatorProjectFile,
  provisionOutputsFrom,
  type StackConfig,
  stackConfigFor,
} from "./stackconfig.ts";
