/**
 * ARM error bodies as Azure documents them: `{"error":{"code","message"}}` with the HTTP
 * status Azure uses for that code (learn.microsoft.com, "Troubleshoot common Azure deployment
 * errors", "Resolve errors for SKU not available", "Azure Resource Manager throttling",
 * "Troubleshoot allocation failures"). Token-endpoint errors use Entra ID's OAuth shape
 * instead (`{"error","error_description"}`), as the real token endpoint does.
 */

/** The usual HTTP status of each ARM error code the emulator may be asked to return. */
export const ARM_ERROR_STATUS: Readonly<Record<string, number>> = {
  // capacity
  AllocationFailed: 409,
  ZonalAllocationFailed: 409,
  OverconstrainedAllocationRequest: 409,
  OverconstrainedZonalAllocationRequest: 409,
  // quota
  QuotaExceeded: 409,
  InsufficientVCPUQuota: 409,
  OperationNotAllowed: 409,
  // SKU
  SkuNotAvailable: 409,
  // region / policy
  RequestDisallowedByPolicy: 403,
  LocationNotAvailableForResourceType: 400,
  NoRegisteredProviderFound: 400,
  // auth and subscription
  AuthorizationFailed: 403,
  InvalidAuthenticationToken: 401,
  InvalidAuthenticationTokenTenant: 401,
  AuthenticationFailed: 401,
  ExpiredAuthenticationToken: 401,
  SubscriptionNotFound: 404,
  ReadOnlyDisabledSubscription: 409,
  MissingSubscriptionRegistration: 409,
  ResourceGroupNotFound: 404,
  ResourceNotFound: 404,
  InvalidParameter: 400,
  BadRequest: 400,
  // transient
  TooManyRequests: 429,
  SubscriptionRequestsThrottled: 429,
  AnotherOperationInProgress: 409,
  InternalServerError: 500,
  InternalExecutionError: 500,
  ServiceUnavailable: 503,
  GatewayTimeout: 504,
};

/** Messages close to Azure's own for the codes the emulator raises by itself. */
export const armMessages = {
  skuNotAvailable: (sku: string, region: string) =>
    `The requested VM size for resource 'Following SKUs have failed for Capacity Restrictions: ${sku}' is currently not available in location '${region}'. Please try another size or deploy to a different location or different zone. See https://aka.ms/azureskunotavailable for details.`,
  allocationFailed: (sku: string, region: string) =>
    `Allocation failed. We do not have sufficient capacity for the requested VM size ${sku} in region ${region}. Read more about improving likelihood of allocation success at http://aka.ms/allocation-guidance`,
  quotaExceeded: (family: string, region: string, limit: number, usage: number, required: number) =>
    `Operation could not be completed as it results in exceeding approved ${family} Cores quota. Additional details - Deployment Model: Resource Manager, Location: ${region}, Current Limit: ${limit}, Current Usage: ${usage}, Additional Required: ${required}, (Minimum) New Limit Required: ${usage + required}. Submit a request for Quota increase at https://aka.ms/ProdportalCRP by specifying parameters listed in the 'Details' section for deployment to succeed.`,
  throttled: () =>
    "The request is being throttled as the limit has been reached for operation type - Write_1Min. For more information, see - https://aka.ms/srpthrottlinglimits",
  notFound: (type: string, name: string, rg: string) =>
    `The Resource '${type}/${name}' under resource group '${rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix`,
};

export function armErrorBody(
  code: string,
  message: string,
  details?: ReadonlyArray<{ code: string; message?: string }>,
): string {
  return JSON.stringify({
    error: {
      code,
      message,
      ...(details?.length
        ? { details: details.map((d) => ({ code: d.code, message: d.message ?? d.code })) }
        : {}),
    },
  });
}

export function defaultStatus(code: string): number {
  return ARM_ERROR_STATUS[code] ?? 400;
}
