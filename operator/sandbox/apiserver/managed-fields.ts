/**
 * Field ownership (`metadata.managedFields`) and server-side apply. A field set is a set of
 * paths; each path is a list of segments in the `fieldsV1` vocabulary: `f:<name>` for a map
 * key, `k:{"name":"x"}` for a list item found by its merge key, `v:<json>` for a set item.
 * Update operations take ownership of the fields they change; an apply owns exactly the
 * fields in its configuration, removes the ones it stopped applying, and conflicts when it
 * would change a value another manager owns (unless forced).
 */
import { ApiError } from "./errors.ts";
import { isPlainObject } from "./patch.ts";
import type { JsonObject, KubeObject, ManagedFieldsEntry } from "./types.ts";

type Path = string[];

const LIST_KEYS: Record<string, string[]> = {
  containers: ["name"],
  initContainers: ["name"],
  env: ["name"],
  volumes: ["name"],
  volumeMounts: ["mountPath"],
  conditions: ["type"],
  ownerReferences: ["uid"],
  imagePullSecrets: ["name"],
};
const SET_LISTS = new Set(["finalizers"]);
const OWNED_METADATA = ["labels", "annotations", "finalizers", "ownerReferences"];

function listKeyOf(field: string, item: unknown): string[] | undefined {
  if (!isPlainObject(item)) return undefined;
  if (field === "ports")
    return "containerPort" in item ? ["containerPort", "protocol"] : ["port", "protocol"];
  const keys = LIST_KEYS[field];
  return keys?.every((k) => k in item) ? keys : undefined;
}

function itemSegment(keys: string[], item: JsonObject): string {
  const key: JsonObject = {};
  for (const k of keys) if (item[k] !== undefined) key[k] = item[k];
  return `k:${JSON.stringify(key)}`;
}

/** Every leaf path (and keyed list item) of `value`. */
function collect(value: unknown, field: string, prefix: Path, out: Path[]): void {
  if (isPlainObject(value) && Object.keys(value).length > 0) {
    for (const [k, v] of Object.entries(value)) collect(v, k, [...prefix, `f:${k}`], out);
    return;
  }
  if (Array.isArray(value) && value.length > 0) {
    if (SET_LISTS.has(field) && value.every((x) => !isPlainObject(x))) {
      for (const x of value) out.push([...prefix, `v:${JSON.stringify(x)}`]);
      return;
    }
    const keys = listKeyOf(field, value[0]);
    if (keys && value.every((x) => listKeyOf(field, x))) {
      for (const item of value as JsonObject[]) {
        const p = [...prefix, itemSegment(keys, item)];
        out.push([...p, "."]);
        for (const [k, v] of Object.entries(item)) collect(v, k, [...p, `f:${k}`], out);
      }
      return;
    }
  }
  out.push(prefix);
}

/** The fields an object (or an apply configuration) sets, as encoded path strings. */
export function fieldsOf(obj: JsonObject): Set<string> {
  const paths: Path[] = [];
  for (const [k, v] of Object.entries(obj)) {
    if (k === "apiVersion" || k === "kind" || k === "metadata") continue;
    collect(v, k, [`f:${k}`], paths);
  }
  const meta = isPlainObject(obj.metadata) ? obj.metadata : {};
  for (const k of OWNED_METADATA) {
    if (meta[k] !== undefined) collect(meta[k], k, ["f:metadata", `f:${k}`], paths);
  }
  return new Set(paths.map((p) => JSON.stringify(p)));
}

export function toFieldsV1(set: Set<string>): JsonObject {
  const root: JsonObject = {};
  for (const encoded of [...set].sort()) {
    let node = root;
    for (const seg of JSON.parse(encoded) as Path) {
      node[seg] ??= {};
      node = node[seg] as JsonObject;
    }
  }
  return root;
}

export function fromFieldsV1(fields: JsonObject | undefined): Set<string> {
  const out = new Set<string>();
  const walk = (node: JsonObject, prefix: Path) => {
    const keys = Object.keys(node);
    if (keys.length === 0 && prefix.length > 0) out.add(JSON.stringify(prefix));
    for (const k of keys) walk((node[k] ?? {}) as JsonObject, [...prefix, k]);
  };
  if (fields) walk(fields, []);
  return out;
}

/** The value a path points at in an object (undefined when absent). */
function valueAt(obj: unknown, path: Path): unknown {
  let cur: unknown = obj;
  let field = "";
  for (const seg of path) {
    if (seg === ".") return cur;
    if (seg.startsWith("f:")) {
      field = seg.slice(2);
      cur = isPlainObject(cur) ? cur[field] : undefined;
    } else if (seg.startsWith("k:")) {
      const key = JSON.parse(seg.slice(2)) as JsonObject;
      cur = Array.isArray(cur)
        ? cur.find((x) => isPlainObject(x) && Object.entries(key).every(([k, v]) => x[k] === v))
        : undefined;
    } else if (seg.startsWith("v:")) {
      const v = JSON.parse(seg.slice(2));
      return Array.isArray(cur) && cur.includes(v) ? v : undefined;
    }
  }
  return cur;
}

function removeAt(obj: JsonObject, path: Path): void {
  const parentPath = path.slice(0, -1);
  const last = path[path.length - 1]!;
  if (last === ".") {
    removeAt(obj, parentPath);
    return;
  }
  const parent = valueAt(obj, parentPath);
  if (last.startsWith("f:") && isPlainObject(parent)) delete parent[last.slice(2)];
  if (Array.isArray(parent) && (last.startsWith("k:") || last.startsWith("v:"))) {
    const target = valueAt(obj, path);
    const idx = last.startsWith("v:") ? parent.indexOf(target) : parent.indexOf(target as JsonObject);
    if (idx >= 0) parent.splice(idx, 1);
  }
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

function now(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, "Z");
}

function entrySets(obj: KubeObject): Array<{ entry: ManagedFieldsEntry; set: Set<string> }> {
  return (obj.metadata.managedFields ?? []).map((entry) => ({ entry, set: fromFieldsV1(entry.fieldsV1) }));
}

function writeEntries(
  obj: KubeObject,
  entries: Array<{ entry: ManagedFieldsEntry; set: Set<string> }>,
): void {
  const kept = entries
    .filter((e) => e.set.size > 0)
    .map((e) => ({ ...e.entry, fieldsV1: toFieldsV1(e.set) }));
  if (kept.length > 0) obj.metadata.managedFields = kept;
  else delete obj.metadata.managedFields;
}

/**
 * Records that `manager` wrote `next` over `prev` with a non-apply operation: it owns the
 * fields it set or changed; fields that disappeared are owned by nobody.
 */
export function recordUpdate(
  prev: KubeObject | undefined,
  next: KubeObject,
  manager: string,
  subresource?: string,
): void {
  const nextFields = fieldsOf(next);
  const changed = new Set<string>();
  for (const p of nextFields)
    if (!prev || !same(valueAt(prev, JSON.parse(p)), valueAt(next, JSON.parse(p)))) changed.add(p);
  const entries = entrySets(next).filter(
    (e) =>
      !(e.entry.operation === "Update" && e.entry.manager === manager && e.entry.subresource === subresource),
  );
  const mine = entrySets(next).find(
    (e) =>
      e.entry.operation === "Update" && e.entry.manager === manager && e.entry.subresource === subresource,
  );
  for (const e of entries)
    for (const p of [...e.set]) if (changed.has(p) || !nextFields.has(p)) e.set.delete(p);
  const own = new Set([...(mine?.set ?? [])].filter((p) => nextFields.has(p)));
  for (const p of changed) own.add(p);
  if (own.size > 0 || mine) {
    entries.push({
      entry: {
        manager,
        operation: "Update",
        apiVersion: next.apiVersion,
        time: changed.size > 0 || !mine ? now() : mine.entry.time,
        fieldsType: "FieldsV1",
        fieldsV1: {},
        ...(subresource ? { subresource } : {}),
      },
      set: own,
    });
  }
  writeEntries(next, entries);
}

/** Merges an apply configuration into the live object: maps recursively, keyed lists by key. */
function mergeApplied(live: unknown, applied: unknown, field: string): unknown {
  if (isPlainObject(applied)) {
    const out: JsonObject = isPlainObject(live) ? { ...live } : {};
    for (const [k, v] of Object.entries(applied)) {
      out[k] = v === null ? null : mergeApplied(out[k], v, k);
    }
    return out;
  }
  if (Array.isArray(applied) && Array.isArray(live)) {
    if (SET_LISTS.has(field)) return [...new Set([...live, ...applied])];
    const keys = listKeyOf(field, applied[0]);
    if (keys) {
      const out = [...live];
      for (const item of applied as JsonObject[]) {
        const seg = itemSegment(keys, item);
        const idx = out.findIndex((x) => isPlainObject(x) && itemSegment(keys, x) === seg);
        if (idx >= 0) out[idx] = mergeApplied(out[idx], item, field);
        else out.push(item);
      }
      return out;
    }
  }
  return structuredClone(applied);
}

function describePath(path: Path): string {
  return path
    .map((s) => (s.startsWith("f:") ? `.${s.slice(2)}` : s === "." ? "" : `[${s.slice(2)}]`))
    .join("");
}

/**
 * Server-side apply of `applied` by `manager` over `live` (undefined when creating).
 * Returns the merged object with managedFields updated, or throws 409 on conflicts.
 */
export function serverSideApply(
  live: KubeObject | undefined,
  applied: KubeObject,
  manager: string,
  force: boolean,
  subresource?: string,
): KubeObject {
  const appliedFields = fieldsOf(applied);
  const base: KubeObject = live
    ? structuredClone(live)
    : {
        apiVersion: applied.apiVersion,
        kind: applied.kind,
        // An apply that creates names the object: identity comes from the configuration.
        metadata: { name: applied.metadata.name, namespace: applied.metadata.namespace },
      };
  const all = entrySets(base);
  const isMine = (e: ManagedFieldsEntry) =>
    e.manager === manager && e.operation === "Apply" && e.subresource === subresource;
  const others = all.filter((e) => !isMine(e.entry));
  const previous = all.find((e) => isMine(e.entry))?.set ?? new Set<string>();
  const conflicts: Array<{ manager: string; path: Path }> = [];
  for (const o of others) {
    for (const p of o.set) {
      if (!appliedFields.has(p)) continue;
      const path = JSON.parse(p) as Path;
      if (same(valueAt(base, path), valueAt(applied, path))) continue;
      if (force) o.set.delete(p);
      else conflicts.push({ manager: o.entry.manager, path });
    }
  }
  if (conflicts.length > 0) throw conflictError(conflicts, applied);
  const merged = mergeApplied(base, { ...applied, metadata: appliedMetadata(applied) }, "") as KubeObject;
  merged.metadata = { ...base.metadata, ...(merged.metadata as object) };
  const ownedByOthers = new Set(others.flatMap((o) => [...o.set]));
  for (const p of previous) {
    if (!appliedFields.has(p) && !ownedByOthers.has(p)) removeAt(merged, JSON.parse(p));
  }
  merged.metadata.managedFields = base.metadata.managedFields;
  writeEntries(merged, [
    ...others,
    {
      entry: {
        manager,
        operation: "Apply",
        apiVersion: applied.apiVersion,
        time: now(),
        fieldsType: "FieldsV1",
        fieldsV1: {},
        ...(subresource ? { subresource } : {}),
      },
      set: appliedFields,
    },
  ]);
  return merged;
}

function appliedMetadata(applied: KubeObject): JsonObject {
  const meta: JsonObject = {};
  for (const k of OWNED_METADATA) {
    const v = (applied.metadata as JsonObject)[k];
    if (v !== undefined) meta[k] = v;
  }
  return meta;
}

function conflictError(conflicts: Array<{ manager: string; path: Path }>, applied: KubeObject): ApiError {
  const lines = conflicts.map((c) => `conflict with "${c.manager}": ${describePath(c.path)}`);
  const head = `Apply failed with ${conflicts.length} conflict${conflicts.length === 1 ? "" : "s"}: `;
  return new ApiError(409, "Conflict", head + lines.join("\n"), {
    name: applied.metadata.name,
    causes: conflicts.map((c) => ({
      reason: "FieldManagerConflict",
      message: `conflict with "${c.manager}"`,
      field: describePath(c.path),
    })),
  });
}
