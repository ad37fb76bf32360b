/**
 * The three client patch formats: JSON merge patch (RFC 7386), JSON patch (RFC 6902,
 * through fast-json-patch) and strategic merge patch (what `kubectl apply` sends for
 * built-in kinds). Strategic merge uses the merge keys of the Kubernetes types for the
 * lists that have them (containers by name, env by name, ports by port, …); any other list
 * is replaced, as for types without patch metadata.
 */
import fastJsonPatch from "fast-json-patch";
import { ApiError, errors } from "./errors.ts";
import type { JsonObject } from "./types.ts";

const { applyPatch } = fastJsonPatch;

export type PatchType = "json" | "merge" | "strategic" | "apply";

export function patchTypeOf(contentType: string): PatchType {
  const base = contentType.split(";")[0]!.trim().toLowerCase();
  switch (base) {
    case "application/json-patch+json":
      return "json";
    case "application/merge-patch+json":
      return "merge";
    case "application/strategic-merge-patch+json":
      return "strategic";
    case "application/apply-patch+yaml":
    case "application/apply-patch+cbor":
      return "apply";
    default:
      throw errors.unsupportedMediaType(base || "(none)");
  }
}

export function isPlainObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** RFC 7386: objects merge recursively, `null` deletes, anything else replaces. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isPlainObject(patch)) return structuredClone(patch);
  const out: JsonObject = isPlainObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

export function jsonPatch(target: JsonObject, ops: unknown): JsonObject {
  if (!Array.isArray(ops)) throw errors.badRequest("json patch must be a list of operations");
  try {
    return applyPatch(structuredClone(target), ops, true, false).newDocument as JsonObject;
  } catch (e) {
    // As the real server: a patch that cannot apply (failed `test`, missing path) is 422.
    const msg = e instanceof Error ? e.message.split("\n")[0] : String(e);
    throw new ApiError(
      422,
      "Invalid",
      `the server rejected our request due to an error in our request: ${msg}`,
    );
  }
}

/** Merge keys of the Kubernetes types' lists, by field name (the few shapes that collide are told apart by their items). */
const MERGE_KEYS: Record<string, string | ((item: JsonObject) => string)> = {
  containers: "name",
  initContainers: "name",
  ephemeralContainers: "name",
  env: "name",
  volumes: "name",
  volumeMounts: "mountPath",
  volumeDevices: "devicePath",
  imagePullSecrets: "name",
  ports: (item) => ("containerPort" in item ? "containerPort" : "port"),
  conditions: "type",
  ownerReferences: "uid",
  hostAliases: "ip",
  resourceClaims: "name",
};

/** Lists of scalars that merge as sets instead of being replaced. */
const MERGED_SCALAR_LISTS = new Set(["finalizers"]);

const SET_ORDER = "$setElementOrder/";
const DELETE_FROM = "$deleteFromPrimitiveList/";

export function strategicMergePatch(target: unknown, patch: unknown): unknown {
  if (!isPlainObject(patch)) return structuredClone(patch);
  const directive = patch.$patch;
  if (directive === "replace") return stripDirectives(patch);
  if (directive === "delete") return undefined;
  const out: JsonObject = isPlainObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (k === "$patch" || k === "$retainKeys" || k.startsWith(SET_ORDER) || k.startsWith(DELETE_FROM))
      continue;
    if (v === null) delete out[k];
    else if (Array.isArray(v)) out[k] = mergeList(k, out[k], v);
    else {
      const merged = strategicMergePatch(out[k], v);
      if (merged === undefined) delete out[k];
      else out[k] = merged;
    }
  }
  applyListDirectives(out, patch);
  if (Array.isArray(patch.$retainKeys)) {
    const keep = new Set(patch.$retainKeys as string[]);
    for (const k of Object.keys(out)) if (!keep.has(k)) delete out[k];
  }
  return out;
}

function applyListDirectives(out: JsonObject, patch: JsonObject): void {
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith(DELETE_FROM) && Array.isArray(v)) {
      const field = k.slice(DELETE_FROM.length);
      const cur = out[field];
      if (Array.isArray(cur))
        out[field] = cur.filter((x) => !v.some((d) => JSON.stringify(d) === JSON.stringify(x)));
    }
    if (k.startsWith(SET_ORDER) && Array.isArray(v)) {
      const field = k.slice(SET_ORDER.length);
      const cur = out[field];
      if (Array.isArray(cur)) out[field] = reorder(field, cur, v);
    }
  }
}

function mergeKeyFor(field: string, sample: unknown): string | undefined {
  const k = MERGE_KEYS[field];
  if (!k || !isPlainObject(sample)) return undefined;
  return typeof k === "string" ? k : k(sample);
}

function mergeList(field: string, current: unknown, patchList: unknown[]): unknown[] {
  const cur = Array.isArray(current) ? current : [];
  if (MERGED_SCALAR_LISTS.has(field) && patchList.every((x) => !isPlainObject(x))) {
    const out = [...cur];
    for (const x of patchList) if (!out.includes(x)) out.push(x);
    return out;
  }
  const key = mergeKeyFor(field, patchList.find(isPlainObject));
  if (!key) return patchList.map((x) => stripDirectives(x));
  const out = cur.map((x) => x);
  for (const item of patchList) {
    if (!isPlainObject(item)) continue;
    const idx = out.findIndex(
      (x) => isPlainObject(x) && JSON.stringify(x[key]) === JSON.stringify(item[key]),
    );
    if (item.$patch === "delete") {
      if (idx >= 0) out.splice(idx, 1);
    } else if (idx >= 0) out[idx] = strategicMergePatch(out[idx], item);
    else out.push(stripDirectives(item));
  }
  return out;
}

/** `$setElementOrder`: items named in the order list come first, in that order. */
function reorder(field: string, list: unknown[], order: unknown[]): unknown[] {
  const key = mergeKeyFor(field, list.find(isPlainObject));
  const keyOf = (x: unknown) => JSON.stringify(key && isPlainObject(x) ? x[key] : x);
  const wanted = order.map(keyOf);
  const ranked = list.map((x, i) => ({ x, i, r: wanted.indexOf(keyOf(x)) }));
  ranked.sort((a, b) => (a.r < 0 ? 1e9 + a.i : a.r) - (b.r < 0 ? 1e9 + b.i : b.r));
  return ranked.map((e) => e.x);
}

function stripDirectives(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stripDirectives);
  if (!isPlainObject(v)) return v;
  const out: JsonObject = {};
  for (const [k, x] of Object.entries(v)) {
    if (k.startsWith("$")) continue;
    out[k] = stripDirectives(x);
  }
  return out;
}
