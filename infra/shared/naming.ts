/**
 * Cloud resource names derived from the Pulumi project and stack. The same stack always gets
 * the same names (so `up` is idempotent and a re-created workspace finds its resources), and
 * every name fits the cloud's length and character rules: when the readable form is too long
 * it is cut and a short hash of the full form keeps it unique.
 */
import { createHash } from "node:crypto";

export interface NameRules {
  maxLength: number;
  /** Lower-case letters and digits only (Azure storage accounts, AKS pool names, OCI DNS labels). */
  alphanumericOnly?: boolean;
  /** The name must start with a letter (OCI DNS labels, AKS pool names). */
  startWithLetter?: boolean;
  /** Separator between parts; ignored when alphanumericOnly. */
  separator?: string;
}

const HASH_LENGTH = 6;

export function shortHash(text: string, length = HASH_LENGTH): string {
  return createHash("sha256").update(text).digest("hex").slice(0, length);
}

/** `spillway`, `gpu-1` … → `spillway-gpu-1`, fitted to `rules`. Deterministic. */
export function resourceName(parts: string[], rules: NameRules): string {
  const sep = rules.alphanumericOnly ? "" : (rules.separator ?? "-");
  const clean = (p: string) =>
    rules.alphanumericOnly
      ? p.toLowerCase().replace(/[^a-z0-9]/g, "")
      : p
          .toLowerCase()
          .replace(/[^a-z0-9-]/g, "-")
          .replace(/-+/g, "-")
          .replace(/^-|-$/g, "");
  let name = parts.map(clean).filter(Boolean).join(sep);
  if (rules.startWithLetter && !/^[a-z]/.test(name)) name = `s${name}`;
  if (name.length <= rules.maxLength) return name;
  const hash = shortHash(parts.join("/"), Math.min(HASH_LENGTH, rules.maxLength - 1));
  const room = rules.maxLength - hash.length - sep.length;
  const head = name.slice(0, Math.max(room, 0)).replace(/-+$/, "");
  return head ? `${head}${sep}${hash}` : hash.slice(0, rules.maxLength);
}

/** Names of one stack's resources: prefix is `<project>-<stack>` unless the stack says otherwise. */
export class StackNaming {
  constructor(
    readonly project: string,
    readonly stack: string,
  ) {}

  /** A general name (OCI display names, Azure resource groups, AKS clusters): up to `maxLength`. */
  name(suffix: string, maxLength = 63): string {
    return resourceName([this.stack, suffix], { maxLength });
  }

  /** Lower-case alphanumerics, starting with a letter (storage accounts, DNS labels, pool names). */
  compact(suffix: string, maxLength: number): string {
    return resourceName([this.stack, suffix], { maxLength, alphanumericOnly: true, startWithLetter: true });
  }

  /** A name unique across the cloud (storage accounts, buckets): includes a hash of project+stack. */
  globallyUnique(suffix: string, maxLength: number, alphanumericOnly = false): string {
    const hash = shortHash(`${this.project}/${this.stack}`);
    const sep = alphanumericOnly ? "" : "-";
    const base = resourceName([this.stack, suffix], {
      maxLength: maxLength - hash.length - sep.length,
      alphanumericOnly,
      startWithLetter: true,
    });
    return `${base}${sep}${hash}`;
  }
}
