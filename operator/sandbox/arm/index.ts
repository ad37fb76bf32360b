/** The ARM emulator (simulated Azure Resource Manager + Entra ID token endpoint) of the sandbox. */
export {
  ARM_OPERATIONS,
  type ArmConfig,
  ArmConfigError,
  type ArmConfigInput,
  type ArmInjectedErrorSpec,
  type ArmOperation,
  AZURE_GPU_SKUS,
  parseArmConfig,
  skuInfo,
} from "./config.ts";
export { ARM_ERROR_STATUS, armErrorBody } from "./errors.ts";
export { ARM_CA_FILE, readArmCa } from "./persist.ts";
export {
  type ArmAgentPool,
  type ArmEmulator,
  type ArmEmulatorEvents,
  type ArmEmulatorOptions,
  type ArmReservation,
  startArmEmulator,
} from "./server.ts";
export { type SelfSignedCertificate, selfSignedCertificate } from "./tls.ts";
