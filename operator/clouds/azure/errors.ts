/**
 * What Azure said, in the spec's words: an ARM error (RestError from the SDK, or an Entra ID
 * AuthenticationError from @azure/identity) becomes either "retry later" or a decline reason.
 *
 * Order of the checks, and why:
 * 1. HTTP 429 and 5xx are transient whatever the code says: Compute's throttling body is
 *    `OperationNotAllowed` with a `TooManyRequests` detail, which must not read as a quota error.
 * 2. The top-level code, through `ARM_ERROR_REASONS`.
 * 3. Wrapper codes (`InvalidTemplateDeployment`, `DeploymentFailed`, `Conflict`, …) and unknown
 *    codes: the first known code among the `details`, depth first.
 * 4. `OperationNotAllowed` is a quota error only when its message says quota (Azure uses it for
 *    "exceeding approved … Cores quota" and for many unrelated refusals).
 * 5. No HTTP answer at all (connection refused, reset, DNS): transient.
 * Anything else is `ProviderError`.
 */
import {
  AuthenticationError,
  AuthenticationRequiredError,
  CredentialUnavailableError,
} from "@azure/identity";
import type { DeclineReason } from "../../api/v1alpha1/index.ts";

export type ArmErrorVerdict = DeclineReason | "Retry";

/**
 * Every ARM error code the responder understands, with what it means for an offer.
 * Sources: learn.microsoft.com — "Troubleshoot allocation failures", "Resolve errors for SKU
 * not available", "Resolve errors for resource quotas", "Troubleshoot common Azure deployment
 * errors", "Understand how Azure Resource Manager throttles requests", AKS troubleshooting.
 */
export const ARM_ERROR_REASONS: Readonly<Record<string, ArmErrorVerdict>> = {
  // No capacity for the SKU in the region or zone.
  AllocationFailed: "NoCapacity",
  ZonalAllocationFailed: "NoCapacity",
  OverconstrainedAllocationRequest: "NoCapacity",
  OverconstrainedZonalAllocationRequest: "NoCapacity",
  // Quota.
  QuotaExceeded: "QuotaExceeded",
  InsufficientVCPUQuota: "QuotaExceeded",
  // The SKU is not offered (to this subscription) in the region.
  SkuNotAvailable: "SkuUnavailable",
  // The region is refused: Azure Policy (allowed locations) or the resource type is not there.
  RequestDisallowedByPolicy: "RegionNotAllowed",
  LocationNotAvailableForResourceType: "RegionNotAllowed",
  NoRegisteredProviderFound: "RegionNotAllowed",
  // Authentication, authorization, subscription and configuration: the provider's problem.
  AuthorizationFailed: "ProviderError",
  InvalidAuthenticationToken: "ProviderError",
  InvalidAuthenticationTokenTenant: "ProviderError",
  AuthenticationFailed: "ProviderError",
  ExpiredAuthenticationToken: "ProviderError",
  SubscriptionNotFound: "ProviderError",
  ReadOnlyDisabledSubscription: "ProviderError",
  MissingSubscriptionRegistration: "ProviderError",
  ResourceGroupNotFound: "ProviderError",
  ResourceNotFound: "ProviderError",
  InvalidParameter: "ProviderError",
  // Transient.
  TooManyRequests: "Retry",
  SubscriptionRequestsThrottled: "Retry",
  AnotherOperationInProgress: "Retry",
  InternalServerError: "Retry",
  InternalExecutionError: "Retry",
  ServiceUnavailable: "Retry",
  GatewayTimeout: "Retry",
};

/** Codes that only wrap the real cause in `details`. */
const WRAPPERS = new Set([
  "InvalidTemplateDeployment",
  "DeploymentFailed",
  "Conflict",
  "BadRequest",
  "OperationNotAllowed",
]);

/** Entra ID OAuth errors that say the tenant, app or secret is wrong (not transient). */
const AUTH_CONFIG_ERRORS = new Set([
  "invalid_client",
  "unauthorized_client",
  "invalid_request",
  "invalid_grant",
]);

export interface ArmErrorFacts {
  status?: number;
  code?: string;
  message: string;
  /** Codes found in `details`, depth first. */
  detailCodes: string[];
  retryAfterMs?: number;
}

export type ArmErrorClass =
  | { kind: "retry"; code: string; message: string; retryAfterMs?: number }
  | { kind: "decline"; reason: DeclineReason; code: string; message: string };

function obj(v: unknown): Record<string, unknown> | undefined {
  return v !== null && typeof v === "object" ? (v as Record<string, unknown>) : undefined;
}

function collectDetailCodes(node: unknown, out: string[], depth = 0): void {
  const o = obj(node);
  if (!o || depth > 6) return;
  const inner = obj(o.error) ?? o;
  const details = Array.isArray(inner.details) ? inner.details : [];
  for (const d of details) {
    const dd = obj(d);
    if (typeof dd?.code === "string") out.push(dd.code);
    collectDetailCodes(d, out, depth + 1);
  }
}

/**
 * Error bodies by request. Pollers of long-running operations throw a RestError without the
 * body's `details` (only code and message), yet wrapper codes keep their cause there; a
 * pipeline policy (`errorBodyPolicy`) keeps each failed response's parsed body here, keyed
 * by the request object the RestError carries.
 */
const errorBodies = new WeakMap<object, unknown>();

export const errorBodyPolicy = {
  name: "spillwayArmErrorBody",
  async sendRequest<Req extends object, Res extends { status: number; bodyAsText?: string | null }>(
    request: Req,
    next: (r: Req) => Promise<Res>,
  ): Promise<Res> {
    const response = await next(request);
    if (response.status >= 400 && response.bodyAsText) {
      try {
        errorBodies.set(request, JSON.parse(response.bodyAsText));
      } catch {
        // Not JSON (a proxy's HTML page): nothing to keep.
      }
    }
    return response;
  },
};

/** Retry-After in seconds or as an HTTP date, in milliseconds. */
export function parseRetryAfter(value: string | undefined | null, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const s = Number(value);
  if (Number.isFinite(s) && s >= 0) return s * 1000;
  const t = Date.parse(value);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

/** The status, code, message, detail codes and Retry-After of an SDK error, whatever its class. */
export function armErrorFacts(e: unknown): ArmErrorFacts {
  const o = obj(e) ?? {};
  const status = typeof o.statusCode === "number" ? o.statusCode : undefined;
  let code = typeof o.code === "string" ? o.code : undefined;
  let message = e instanceof Error ? e.message : String(e);
  const detailCodes: string[] = [];
  // RestError from @azure-rest/core-client: `details` is the deserialized CloudError body.
  collectDetailCodes(o.details, detailCodes);
  const request = obj(o.request);
  if (detailCodes.length === 0 && request) collectDetailCodes(errorBodies.get(request), detailCodes);
  // Pollers may surface the failed operation's error object instead.
  const body = obj(o.details)?.error ?? obj(o.error);
  const bodyObj = obj(body);
  if (!code && typeof bodyObj?.code === "string") code = bodyObj.code;
  if (typeof bodyObj?.message === "string" && bodyObj.message.length > 0) message = bodyObj.message;
  // A failed long-running operation: core-lro throws a bare Error whose message carries the
  // operation's error as "The long-running operation has failed. <code>. <message>".
  const lro = code === undefined ? LRO_FAILED.exec(message) : null;
  if (lro) {
    code = lro[1];
    message = lro[2] || message;
  }
  const response = obj(o.response);
  const headers = obj(response?.headers);
  const get =
    headers && typeof headers.get === "function"
      ? (headers.get as (n: string) => string | undefined)
      : undefined;
  const retryAfterMs = parseRetryAfter(get?.call(headers, "retry-after"));
  return {
    ...(status !== undefined ? { status } : {}),
    ...(code !== undefined ? { code } : {}),
    message,
    detailCodes,
    ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
  };
}

const LRO_FAILED = /^The long-running operation has failed\. ([A-Za-z][A-Za-z0-9_]*)\. ?([\s\S]*)$/;
const QUOTA_WORDS = /\bquota\b/i;
const TRANSIENT_AUTH =
  /temporarily_unavailable|service_unavailable|server_error|too_many_requests|network_error/i;
const UNREACHABLE_AUTHORITY =
  /endpoints_resolution_error|network_error|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENOTFOUND|EAI_AGAIN/;

function verdictOf(code: string, message: string): ArmErrorVerdict | undefined {
  if (code === "OperationNotAllowed") return QUOTA_WORDS.test(message) ? "QuotaExceeded" : undefined;
  return ARM_ERROR_REASONS[code];
}

/** Network-level failures from core-rest-pipeline / undici / node. */
const NETWORK_CODES = new Set([
  "REQUEST_SEND_ERROR",
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EAI_AGAIN",
  "ENOTFOUND",
  "EPIPE",
  "UND_ERR_SOCKET",
]);

/** Classifies any error thrown by the Azure SDK into retry or a decline reason. */
export function classifyArmError(e: unknown): ArmErrorClass {
  if (e instanceof CredentialUnavailableError) {
    // MSAL reports an unreachable authority as "unavailable" too; that is an outage, not a
    // configuration error, so it is retried (the offer's deadline bounds the retries).
    return UNREACHABLE_AUTHORITY.test(e.message)
      ? { kind: "retry", code: "AuthorityUnreachable", message: e.message }
      : { kind: "decline", reason: "ProviderError", code: "CredentialUnavailable", message: e.message };
  }
  if (e instanceof AuthenticationRequiredError) {
    // MSAL's server errors on the client-credentials flow arrive as this class.
    return TRANSIENT_AUTH.test(e.message)
      ? { kind: "retry", code: "AuthorityUnavailable", message: e.message }
      : { kind: "decline", reason: "ProviderError", code: "AuthenticationRequired", message: e.message };
  }
  if (e instanceof AuthenticationError) {
    const code = e.errorResponse?.error ?? "AuthenticationError";
    const message = `Entra ID refused the token request (${code}): ${e.errorResponse?.errorDescription ?? e.message}`;
    if (e.statusCode === 429 || e.statusCode >= 500) return { kind: "retry", code, message };
    if (AUTH_CONFIG_ERRORS.has(code) || (e.statusCode >= 400 && e.statusCode < 500)) {
      return { kind: "decline", reason: "ProviderError", code, message };
    }
    return { kind: "retry", code, message };
  }
  const f = armErrorFacts(e);
  const code = f.code ?? "Unknown";
  const retry = (): ArmErrorClass => ({
    kind: "retry",
    code,
    message: f.message,
    ...(f.retryAfterMs !== undefined ? { retryAfterMs: f.retryAfterMs } : {}),
  });
  if (f.status === 429 || (f.status !== undefined && f.status >= 500)) return retry();
  const direct = verdictOf(code, f.message);
  if (direct && !(WRAPPERS.has(code) && direct === "ProviderError")) {
    return direct === "Retry" ? retry() : { kind: "decline", reason: direct, code, message: f.message };
  }
  for (const d of f.detailCodes) {
    const v = verdictOf(d, f.message);
    if (v === "Retry") return retry();
    if (v) return { kind: "decline", reason: v, code: d, message: f.message };
  }
  if (f.status === undefined && NETWORK_CODES.has(code)) return retry();
  return { kind: "decline", reason: "ProviderError", code, message: f.message };
}

/** A message safe for status and logs: the given secret values blanked out, length bounded. */
export function safeMessage(message: string, secrets: Iterable<string | undefined>, max = 1000): string {
  let out = message;
  for (const s of secrets) if (s && s.length >= 4) out = out.split(s).join("[redacted]");
  return out.length > max ? `${out.slice(0, max - 1)}…` : out;
}
