/**
 * Keeps secret values out of log lines, Events and condition messages. Two nets: fields whose
 * *name* says they hold a secret are masked whole, and strings are scrubbed of values that
 * *look* like secrets (bearer tokens, PEM keys, `key=value` credentials, SAS signatures,
 * connection strings) wherever they appear.
 */
export const REDACTED = "[REDACTED]";

const SECRET_FIELD =
  /(password|passwd|secret|token|apikey|accesskey|secretkey|accountkey|privatekey|clientkey|clientsecret|authorization|kubeconfig|connectionstring|credentials?|sastoken|signature)$/i;

const SECRET_PATTERNS: Array<[RegExp, string]> = [
  [/-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)/g, REDACTED],
  [/\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+/gi, `$1 ${REDACTED}`],
  [
    /\b(AccountKey|SharedAccessSignature|SharedAccessKey|password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|secret[_-]?key|client[_-]?secret)(\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s;,&"']+)/gi,
    `$1$2${REDACTED}`,
  ],
  // SAS query parameters: sig=… (the signature is the secret part).
  [/([?&]sig=)[^&\s"']+/gi, `$1${REDACTED}`],
  // AWS-style secret access keys given as a bare 40-char base64 after an access key id.
  [/\b(AKIA|ASIA)[A-Z0-9]{16}\b/g, REDACTED],
];

/** Whether a field named `name` must never have its value shown. */
export function isSecretField(name: string): boolean {
  return SECRET_FIELD.test(name.replace(/[-_.\s]/g, ""));
}

/** Scrubs secret-looking substrings from free text. */
export function redactText(text: string): string {
  let out = text;
  for (const [re, replacement] of SECRET_PATTERNS) out = out.replace(re, replacement);
  return out;
}

/** A deep copy of `value` with secret fields masked and strings scrubbed. */
export function redactValue(value: unknown, depth = 0): unknown {
  if (typeof value === "string") return redactText(value);
  if (depth > 8 || value === null || typeof value !== "object") return value;
  if (value instanceof Error) return { name: value.name, message: redactText(value.message) };
  if (Array.isArray(value)) return value.map((v) => redactValue(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] =
      isSecretField(k) && v !== undefined && v !== null && v !== "" ? REDACTED : redactValue(v, depth + 1);
  }
  return out;
}
