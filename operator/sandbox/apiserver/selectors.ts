/**
 * Label selectors (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`) and field selectors
 * (`=`, `==`, `!=` on dotted paths such as `metadata.name`, `involvedObject.uid`,
 * `status.phase`), as the API server parses them from `labelSelector` / `fieldSelector`.
 */
import { errors } from "./errors.ts";
import type { KubeObject } from "./types.ts";

export type Matcher = (obj: KubeObject) => boolean;

type LabelRequirement =
  | { op: "eq" | "neq"; key: string; value: string }
  | { op: "in" | "notin"; key: string; values: string[] }
  | { op: "exists" | "notexists"; key: string };

/** Splits on commas that are not inside parentheses (`a in (x,y),b`). */
function splitTopLevel(s: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let cur = "";
  for (const ch of s) {
    if (ch === "(") depth++;
    if (ch === ")") depth--;
    if (ch === "," && depth === 0) {
      parts.push(cur);
      cur = "";
    } else cur += ch;
  }
  parts.push(cur);
  return parts.map((p) => p.trim()).filter((p) => p !== "");
}

function parseLabelRequirement(term: string): LabelRequirement {
  const setMatch = /^([^\s!=]+)\s+(in|notin)\s*\(([^)]*)\)$/.exec(term);
  if (setMatch) {
    const values = setMatch[3]!
      .split(",")
      .map((v) => v.trim())
      .filter((v) => v !== "");
    return { op: setMatch[2] as "in" | "notin", key: setMatch[1]!, values };
  }
  const cmp = /^([^\s!=]+)\s*(==|=|!=)\s*([^\s]*)$/.exec(term);
  if (cmp) return { op: cmp[2] === "!=" ? "neq" : "eq", key: cmp[1]!, value: cmp[3]! };
  const exists = /^(!?)([^\s!=(),]+)$/.exec(term);
  if (exists) return { op: exists[1] ? "notexists" : "exists", key: exists[2]! };
  throw errors.badRequest(
    `unable to parse requirement: found '${term}', expected: in, notin, =, ==, !=, gt, lt`,
  );
}

function matchesRequirement(labels: Record<string, string>, r: LabelRequirement): boolean {
  const has = Object.hasOwn(labels, r.key);
  const v = labels[r.key];
  switch (r.op) {
    case "eq":
      return has && v === r.value;
    case "neq":
      return !has || v !== r.value;
    case "in":
      return has && r.values.includes(v!);
    case "notin":
      return !has || !r.values.includes(v!);
    case "exists":
      return has;
    case "notexists":
      return !has;
  }
}

export function parseLabelSelector(selector: string | null | undefined): Matcher | undefined {
  if (!selector) return undefined;
  const reqs = splitTopLevel(selector).map(parseLabelRequirement);
  return (obj) => {
    const labels = obj.metadata.labels ?? {};
    return reqs.every((r) => matchesRequirement(labels, r));
  };
}

/** Field values compare as strings, the way the API server's field sets present them. */
function fieldValue(obj: KubeObject, path: string): string {
  let cur: unknown = obj;
  for (const seg of path.split(".")) {
    if (cur === null || typeof cur !== "object") return "";
    cur = (cur as Record<string, unknown>)[seg];
  }
  if (cur === undefined || cur === null) return "";
  return typeof cur === "string" ? cur : String(cur);
}

export function parseFieldSelector(selector: string | null | undefined): Matcher | undefined {
  if (!selector) return undefined;
  const reqs = splitTopLevel(selector).map((term) => {
    const m = /^([A-Za-z0-9_.-]+)\s*(==|=|!=)\s*(.*)$/.exec(term);
    if (!m) throw errors.badRequest(`invalid selector: '${term}'; can't understand '${term}'`);
    return { path: m[1]!, negate: m[2] === "!=", value: m[3]!.trim() };
  });
  return (obj) => reqs.every((r) => (fieldValue(obj, r.path) === r.value) !== r.negate);
}

export function both(a: Matcher | undefined, b: Matcher | undefined): Matcher | undefined {
  if (a && b) return (o) => a(o) && b(o);
  return a ?? b;
}
