/**
 * The sandbox: a local stand-in for the clouds and clusters Spillway federates, so the same
 * operator code runs on one machine with no cloud account (see sandbox.ts).
 */
export {
  type ClusterSize,
  type GpuUsage,
  type NodePool,
  SimulatedCluster,
  type SimulatedClusterOptions,
} from "./cluster/index.ts";
export { SandboxProvisioner, type SandboxProvisionerOptions } from "./provisioner.ts";
export {
  type ArmEmulatorHandle,
  type ArmEmulatorLaunch,
  applyManifests,
  type DemoOptions,
  findCrdsDir,
  SANDBOX_FIELD_MANAGER,
  type Sandbox,
  type SandboxAks,
  type SandboxAzureStorage,
  SandboxError,
  type SandboxManagement,
  type SandboxOptions,
  type SandboxS3Storage,
  startSandbox,
} from "./sandbox.ts";
export {
  DEFAULT_SCENARIO,
  loadScenario,
  type Scenario,
  ScenarioError,
  scenarioTimingsMs,
  validateScenario,
} from "./scenario.ts";
