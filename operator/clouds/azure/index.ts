/** The Azure primary's responder (real ARM calls through the Azure SDK for JS). */
export {
  AzureClientCache,
  type AzureClientSettings,
  CredentialsConfigError,
  PUBLIC_ARM_ENDPOINT,
  PUBLIC_AUTHORITY_HOST,
} from "./clients.ts";
export {
  ARM_ERROR_REASONS,
  type ArmErrorClass,
  type ArmErrorVerdict,
  armErrorFacts,
  classifyArmError,
  parseRetryAfter,
  safeMessage,
} from "./errors.ts";
export {
  AzureResponder,
  type AzureResponderOptions,
  type ManagedReservation,
  RESERVATION_TAGS,
  type ResponderLogger,
  reservationName,
} from "./responder.ts";
