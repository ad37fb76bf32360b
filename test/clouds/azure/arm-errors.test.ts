/**
 * Every ARM error the responder understands, returned by the emulator with Azure's documented
 * body (`{"error":{"code","message"}}`) and HTTP status, maps to the spec's reason
 * (SPEC "Azure responder": allocation errors → NoCapacity, quota → QuotaExceeded,
 * SkuNotAvailable → SkuUnavailable, auth/subscription → ProviderError, throttling → retry).
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import {
  ARM_ERROR_REASONS,
  type AzureResponder,
  reservationName,
} from "../../../operator/clouds/azure/index.ts";
import { RetryableError } from "../../../operator/ports/errors.ts";
import {
  ARM_ERROR_STATUS,
  type ArmEmulator,
  type ArmInjectedErrorSpec,
} from "../../../operator/sandbox/arm/index.ts";
import { ctx, emulator, offer, provider, responder } from "./fixtures.ts";

type Expected =
  | "NoCapacity"
  | "QuotaExceeded"
  | "SkuUnavailable"
  | "RegionNotAllowed"
  | "ProviderError"
  | "Retry";

/** Written from the spec and Azure's documentation, independently of the implementation's table. */
const EXPECTED: Record<string, Expected> = {
  AllocationFailed: "NoCapacity",
  ZonalAllocationFailed: "NoCapacity",
  OverconstrainedAllocationRequest: "NoCapacity",
  OverconstrainedZonalAllocationRequest: "NoCapacity",
  QuotaExceeded: "QuotaExceeded",
  InsufficientVCPUQuota: "QuotaExceeded",
  SkuNotAvailable: "SkuUnavailable",
  RequestDisallowedByPolicy: "RegionNotAllowed",
  LocationNotAvailableForResourceType: "RegionNotAllowed",
  NoRegisteredProviderFound: "RegionNotAllowed",
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
  TooManyRequests: "Retry",
  SubscriptionRequestsThrottled: "Retry",
  AnotherOperationInProgress: "Retry",
  InternalServerError: "Retry",
  InternalExecutionError: "Retry",
  ServiceUnavailable: "Retry",
  GatewayTimeout: "Retry",
};

interface Case {
  name: string;
  /** HTTP status or details matter, which an async operation's error does not carry. */
  syncOnly?: boolean;
  error: Omit<ArmInjectedErrorSpec, "operation" | "times"> & {
    operation?: ArmInjectedErrorSpec["operation"];
  };
  expected: Expected;
}

const byCode: Case[] = Object.entries(EXPECTED).map(([code, expected]) => ({
  name: `${code} (HTTP ${ARM_ERROR_STATUS[code]})`,
  error: { code, message: `${code}: as Azure says it` },
  expected,
}));

const QUOTA_MESSAGE =
  "Operation could not be completed as it results in exceeding approved standardNDSH100v5Family Cores quota. Additional details - Deployment Model: Resource Manager, Location: eastus, Current Limit: 0, Current Usage: 0, Additional Required: 96, (Minimum) New Limit Required: 96.";

const special: Case[] = [
  {
    name: "OperationNotAllowed about quota → QuotaExceeded",
    error: { code: "OperationNotAllowed", message: QUOTA_MESSAGE },
    expected: "QuotaExceeded",
  },
  {
    name: "OperationNotAllowed about something else → ProviderError",
    error: {
      code: "OperationNotAllowed",
      message: "Operation 'write' is not allowed on a deallocated group.",
    },
    expected: "ProviderError",
  },
  {
    name: "Compute throttling: OperationNotAllowed with HTTP 429 and a TooManyRequests detail → retry",
    syncOnly: true,
    error: {
      code: "OperationNotAllowed",
      status: 429,
      message:
        "The server rejected the request because too many requests have been received for this subscription.",
      details: [{ code: "TooManyRequests", message: "PutVM3Min" }],
    },
    expected: "Retry",
  },
  {
    name: "InvalidTemplateDeployment wrapping SkuNotAvailable → SkuUnavailable",
    syncOnly: true,
    error: {
      code: "InvalidTemplateDeployment",
      message: "The template deployment failed with error: 'SkuNotAvailable'.",
      details: [
        { code: "SkuNotAvailable", message: "The requested size is not available in location 'eastus'." },
      ],
    },
    expected: "SkuUnavailable",
  },
  {
    name: "DeploymentFailed wrapping ZonalAllocationFailed → NoCapacity",
    syncOnly: true,
    error: {
      code: "DeploymentFailed",
      status: 400,
      message: "At least one resource deployment operation failed.",
      details: [{ code: "ZonalAllocationFailed" }],
    },
    expected: "NoCapacity",
  },
  {
    name: "an unknown code → ProviderError",
    error: { code: "SomethingAzureInventedTomorrow", status: 400 },
    expected: "ProviderError",
  },
  {
    name: "an unknown code with HTTP 503 → retry",
    syncOnly: true,
    error: { code: "SomethingAzureInventedTomorrow", status: 503 },
    expected: "Retry",
  },
  {
    name: "the pool scale-out hits AllocationFailed → NoCapacity",
    error: { operation: "agentPools.createOrUpdate", code: "AllocationFailed" },
    expected: "NoCapacity",
  },
  {
    name: "the quota read is refused (AuthorizationFailed) → ProviderError",
    error: { operation: "usage.list", code: "AuthorizationFailed" },
    expected: "ProviderError",
  },
  {
    name: "Entra ID: invalid_client → ProviderError",
    error: {
      operation: "token",
      code: "invalid_client",
      status: 401,
      message: "AADSTS7000222: expired secret",
    },
    expected: "ProviderError",
  },
  {
    name: "Entra ID: temporarily_unavailable (503) → retry",
    error: { operation: "token", code: "temporarily_unavailable", status: 503 },
    expected: "Retry",
  },
];

let emu: ArmEmulator;
let r: AzureResponder;

beforeAll(async () => {
  emu = await emulator(100, 100);
});
afterAll(async () => {
  await emu.close();
});

test("the table covers every ARM error code the responder maps", () => {
  expect(Object.keys(EXPECTED).sort()).toEqual(Object.keys(ARM_ERROR_REASONS).sort());
});

async function expectVerdict(error: Case["error"], expected: Expected, via: "response" | "operation") {
  // A fresh responder per case: no cached token or SKU list hides the injected failure.
  r = responder(emu);
  const o = offer(1);
  emu.injectError({ operation: "capacityReservations.createOrUpdate", ...error, via, times: 1 });
  const result = await r.respond(o, provider(emu), ctx()).catch((e: unknown) => e);
  emu.clearErrors();
  if (expected === "Retry") {
    expect(result).toBeInstanceOf(RetryableError);
  } else {
    expect(result).toMatchObject({ outcome: "Declined", reason: expected });
    // A declined offer keeps nothing reserved.
    expect(emu.reservation(reservationName(o))).toBeUndefined();
  }
}

describe("errors in the response", () => {
  beforeAll(() => emu.setAsyncOperations(false));
  test.each([...byCode, ...special])("$name → $expected", async ({ error, expected }) => {
    await expectVerdict(error, expected, "response");
  });
});

describe("errors reported by the async operation (Azure-AsyncOperation polling)", () => {
  beforeAll(() => emu.setAsyncOperations(true));
  test.each([...byCode, ...special].filter((c) => !c.syncOnly))(
    "$name → $expected",
    async ({ error, expected }) => {
      await expectVerdict(error, expected, "operation");
    },
  );
});
