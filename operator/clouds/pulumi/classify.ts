/**
 * Turns what the Pulumi engine printed when an operation failed into a `ProvisionError`: a
 * reason the controller and placement act on (try the next alternative on quota or capacity,
 * clear a stale lock, stop on bad config, retry transient provider errors) and a one-line
 * message safe to show in a condition.
 *
 * The table is ordered: the first rule whose pattern matches wins. Capacity and quota rules
 * come before the generic HTTP-status rules because OCI reports "Out of host capacity" as a
 * 500 and some limits as a 400-InvalidParameter. The patterns are taken from real provider
 * messages (OCI Terraform-bridge texts, ARM error codes and messages, Pulumi CLI texts); the
 * test table (`test/clouds/pulumi/classify.test.ts`) quotes one per rule.
 */
import { ProvisionError, type ProvisionFailureReason } from "../../ports/provisioner.ts";
import { redactText } from "../../runtime/redact.ts";

export interface ClassificationRule {
  reason: ProvisionFailureReason;
  retryable: boolean;
  pattern: RegExp;
  /** Why this text means this reason (kept next to the pattern so the table explains itself). */
  why: string;
}

export const CLASSIFICATION_RULES: readonly ClassificationRule[] = [
  // --- the state backend's lock: another (or a killed) operation holds the stack ---
  {
    reason: "StackLocked",
    retryable: true,
    pattern: /the stack is currently locked by|\[409\] Conflict: Another update is currently in progress/i,
    why: "a DIY-backend lock file or a Pulumi Cloud update is in progress (stale after a crash: `pulumi cancel`)",
  },
  // --- quota: needs a limit increase, so retrying the same provider soon is pointless ---
  {
    reason: "QuotaExceeded",
    retryable: false,
    pattern:
      /LimitExceeded|service limits? (were|was) exceeded|limit for this tenancy has been exceeded|maximum limit of \d+ for .* has been exceeded/i,
    why: "OCI service limits (400-LimitExceeded), e.g. gpu-h100-count or the OKE cluster limit",
  },
  {
    reason: "QuotaExceeded",
    retryable: false,
    pattern:
      /QuotaExceeded|exceeding approved .*quota|exceeding quota limits|quota of cores exceeded|OperationNotAllowed[\s\S]{0,200}quota/i,
    why: "ARM quota errors: QuotaExceeded, OperationNotAllowed on regional/family cores quota",
  },
  // --- capacity: the cloud has no machines right now; may come back, placement moves on ---
  {
    reason: "NoCapacity",
    retryable: true,
    pattern: /out of host capacity|out of capacity|InsufficientCapacity|insufficient capacity/i,
    why: "OCI 500-InternalError 'Out of host capacity' (bare metal GPU shapes in an AD)",
  },
  {
    reason: "NoCapacity",
    retryable: true,
    pattern:
      /ZonalAllocationFailed|AllocationFailed|Overconstrained(Zonal)?AllocationRequest|do not have sufficient capacity/i,
    why: "ARM allocation failures for the VM size in the region or zone",
  },
  {
    reason: "NoCapacity",
    retryable: false,
    pattern: /SkuNotAvailable|requested (VM )?size .* is currently not available/i,
    why: "the SKU is restricted in the location for the subscription; waiting does not help",
  },
  // --- configuration: the stack or the program rejects its inputs; fix the spec ---
  {
    reason: "ConfigInvalid",
    retryable: false,
    pattern:
      /infra\/(oci|azure): config |InfraConfigError|Missing required configuration variable|is missing configuration value|invalid configuration key|configuration keys should be of the form/i,
    why: "the program's config validation (infra/shared/config.ts) or Pulumi's required config",
  },
  {
    reason: "ConfigInvalid",
    retryable: false,
    pattern: /passphrase must be set|incorrect passphrase|failed to decrypt|constructing secrets manager/i,
    why: "the passphrase secrets provider cannot open the stack's secrets (operator setting)",
  },
  {
    reason: "ConfigInvalid",
    retryable: false,
    pattern: /400-InvalidParameter|InvalidParameter|InvalidTemplate|LocationNotAvailableForResourceType/i,
    why: "the cloud rejected a parameter (CIDR, version, image, region for the resource type)",
  },
  // --- credentials and installation: not transient, an operator must act ---
  {
    reason: "ProviderError",
    retryable: false,
    pattern:
      /NotAuthenticated|NotAuthorizedOrNotFound|AuthorizationFailed|AuthenticationFailed|InvalidAuthenticationToken|AADSTS\d+|could not find default credentials|did not find a proper configuration for key file|no such file or directory.*\.oci\/config/i,
    why: "credentials missing or refused (OCI 401/404-NotAuthorizedOrNotFound, ARM 401/403, Entra ID)",
  },
  {
    reason: "ProviderError",
    retryable: false,
    pattern:
      /no resource plugin '[^']+' found|spawn \S*pulumi ENOENT|Failed to get Pulumi CLI|Minimum version requirement failed|Major version mismatch|It looks like the Pulumi SDK has not been installed/i,
    why: "the Pulumi CLI, a provider plugin or the program's dependencies are not installed",
  },
  // --- transient provider and network errors: retry with backoff ---
  {
    reason: "ProviderError",
    retryable: true,
    pattern:
      /TooManyRequests|429|Throttl|RetryableError|ECONNRESET|ECONNREFUSED|ETIMEDOUT|connection reset by peer|i\/o timeout|context deadline exceeded|TLS handshake timeout|no such host|50[234] |ServiceUnavailable|GatewayTimeout|InternalServerError|500-InternalError/i,
    why: "throttling, network and 5xx errors from the cloud APIs",
  },
];

/**
 * The texts the Automation API puts into an error's message start with the CLI command line
 * (execa's "Command failed with exit code N: pulumi config set-all --secret key=VALUE …"),
 * which carries secret config values. Those lines are dropped before anything else.
 */
export function withoutCommandLines(text: string): string {
  return text
    .split("\n")
    .filter((line) => !/Command failed with exit code|^\s*(err\?|code):/.test(line))
    .filter((line) => !/\s--(secret|plaintext)\s/.test(line))
    .join("\n");
}

/** Replaces each known secret value (and each long line of a multi-line one) with [secret]. */
export function scrubSecrets(text: string, secrets: Iterable<string>): string {
  const needles = new Set<string>();
  for (const s of secrets) {
    if (!s) continue;
    if (s.length >= 4) needles.add(s);
    for (const line of s.split(/\r?\n/)) if (line.trim().length >= 8) needles.add(line.trim());
  }
  let out = text;
  // Longest first, so a whole value is replaced before any of its lines.
  for (const n of [...needles].sort((a, b) => b.length - a.length)) out = out.split(n).join("[secret]");
  return redactText(out);
}

const MAX_MESSAGE = 400;

/** The line of `text` a reader needs: the one that matched, else the first `error:` line. */
function keyLine(text: string, match: RegExpExecArray | null): string {
  const lines = text.split("\n");
  if (match) {
    let offset = 0;
    for (const line of lines) {
      if (match.index < offset + line.length + 1) {
        // A short hit ("code": "QuotaExceeded",) says little alone: add the next line, which
        // in ARM's JSON and OCI's bridge output carries the message.
        const i = lines.indexOf(line);
        const next = lines.slice(i + 1).find((l) => l.trim() !== "");
        return line.trim().length < 40 && next ? `${line} ${next}` : line;
      }
      offset += line.length + 1;
    }
  }
  const errorLine = lines.find(
    (l) => /\berror\b/i.test(l) && !/^\s*error: \d+ errors? occurred:?\s*$/.test(l),
  );
  return errorLine ?? lines.find((l) => l.trim() !== "") ?? "";
}

function oneLine(text: string): string {
  const flat = text
    .replace(/\s+/g, " ")
    .replace(/^[\s*│╷╵]+/, "")
    .trim();
  return flat.length > MAX_MESSAGE ? `${flat.slice(0, MAX_MESSAGE - 1)}…` : flat;
}

/**
 * Classifies engine output. `operation` prefixes the message ("up", "destroy"); `secrets`
 * are values that must not appear in it (secret config, the passphrase).
 */
export function classifyPulumiOutput(
  text: string,
  operation: string,
  secrets: Iterable<string> = [],
): ProvisionError {
  // No `cause`: the Automation API's error carries the CLI command line, secrets included.
  const clean = withoutCommandLines(text);
  for (const rule of CLASSIFICATION_RULES) {
    const m = rule.pattern.exec(clean);
    if (m) {
      const line = oneLine(scrubSecrets(keyLine(clean, m), secrets));
      return new ProvisionError(rule.reason, `${operation}: ${line}`, rule.retryable);
    }
  }
  // Unknown failures are retried with backoff: the controller caps attempts for `up` and
  // keeps retrying `destroy` (a cluster must never be orphaned by a give-up).
  const line = oneLine(scrubSecrets(keyLine(clean, null), secrets)) || "the Pulumi operation failed";
  return new ProvisionError("ProviderError", `${operation}: ${line}`, true);
}
