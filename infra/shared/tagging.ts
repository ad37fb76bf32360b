/**
 * Tags on every taggable resource: which stack made it and that Spillway manages it, so a
 * platform team can find (and account for) everything a stack created, even without its state.
 */
export const MANAGED_BY_KEY = "managed-by";
export const MANAGED_BY_VALUE = "spillway";
export const STACK_KEY = "spillway-stack";
export const PROJECT_KEY = "spillway-project";

export function stackTags(
  project: string,
  stack: string,
  extra: Record<string, string> = {},
): Record<string, string> {
  return { ...extra, [PROJECT_KEY]: project, [STACK_KEY]: stack, [MANAGED_BY_KEY]: MANAGED_BY_VALUE };
}

/** Parses `key=value,key2=value2` (the `tags` config key) into a map. */
export function parseTagList(text: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of (text ?? "").split(",")) {
    const trimmed = item.trim();
    if (!trimmed) continue;
    const eq = trimmed.indexOf("=");
    if (eq <= 0) throw new Error(`tag '${trimmed}' is not key=value`);
    out[trimmed.slice(0, eq).trim()] = trimmed.slice(eq + 1).trim();
  }
  return out;
}
