/** The real storage emulators the sandbox runs: Azurite (Azure Blob) and s3rver (OCI's S3 API). */
export { AZURITE_ACCOUNT, AZURITE_KEY, AzuriteEmulator, type AzuriteOptions } from "./azurite.ts";
export { ChildServer, type ChildServerOptions, freePort } from "./child.ts";
export {
  S3RVER_ACCESS_KEY_ID,
  S3RVER_REGION,
  S3RVER_SECRET_ACCESS_KEY,
  S3rverEmulator,
  type S3rverOptions,
} from "./s3rver.ts";
