/**
 * Kubernetes-faithful validation of an object against a structural CRD schema:
 * defaulting, pruning (or reporting) unknown fields, OpenAPI v3 value validation (through
 * ajv) and `x-kubernetes-validations` CEL rules, including transition rules with `oldSelf`.
 *
 * The operator validates its own kinds with it (it must not trust that the API server did)
 * and the sandbox API server validates every custom resource with it, so a user sees the
 * same field paths and messages from `kubectl apply` and from the operator's conditions.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import addFormatsModule from "ajv-formats";
import { evaluateRule } from "./cel.ts";
import type { FieldError, JSONSchemaProps } from "./types.ts";

// ajv-formats ships CommonJS with a default export; under ESM interop it may arrive wrapped.
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ??
  addFormatsModule) as unknown as (ajv: Ajv) => Ajv;

const KUBERNETES_KEYWORDS = [
  "x-kubernetes-preserve-unknown-fields",
  "x-kubernetes-embedded-resource",
  "x-kubernetes-int-or-string",
  "x-kubernetes-list-type",
  "x-kubernetes-list-map-keys",
  "x-kubernetes-map-type",
  "x-kubernetes-validations",
];

function newAjv(): Ajv {
  const ajv = new Ajv({ allErrors: true, strict: false, validateFormats: true, messages: true });
  addFormats(ajv);
  // Kubernetes formats ajv-formats does not know; accepted as they are by the API server too.
  for (const f of ["int32", "int64", "float", "double", "byte", "binary", "password", "quantity"]) {
    ajv.addFormat(f, true);
  }
  ajv.addVocabulary(KUBERNETES_KEYWORDS);
  return ajv;
}

/** `spec.a[0].b` from a JSON pointer `/spec/a/0/b`, using the schema to tell indexes from keys. */
export function pointerToPath(pointer: string, prefix = ""): string {
  if (pointer === "") return prefix;
  let out = prefix;
  for (const raw of pointer.split("/").slice(1)) {
    const seg = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    if (/^\d+$/.test(seg)) out += `[${seg}]`;
    else out += out === "" ? seg : `.${seg}`;
  }
  return out;
}

function joinPath(base: string, key: string): string {
  return base === "" ? key : `${base}.${key}`;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function describeValue(v: unknown): string {
  const s = typeof v === "string" ? JSON.stringify(v) : (JSON.stringify(v) ?? String(v));
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function ajvErrorToFieldError(e: ErrorObject, root: unknown): FieldError {
  let path = pointerToPath(e.instancePath);
  const value = e.instancePath === "" ? root : lookup(root, e.instancePath);
  switch (e.keyword) {
    case "required": {
      const missing = (e.params as { missingProperty: string }).missingProperty;
      return { path: joinPath(path, missing), type: "FieldValueRequired", message: "Required value" };
    }
    case "enum": {
      const allowed = (e.params as { allowedValues: unknown[] }).allowedValues;
      return {
        path,
        type: "FieldValueNotSupported",
        message: `Unsupported value: ${describeValue(value)}: supported values: ${allowed.map((a) => JSON.stringify(a)).join(", ")}`,
      };
    }
    case "type":
      return {
        path,
        type: "FieldValueTypeInvalid",
        message: `Invalid value: ${describeValue(value)}: ${path || "object"} in body must be of type ${(e.params as { type: string }).type}`,
      };
    case "maxLength":
      return {
        path,
        type: "FieldValueTooLong",
        message: `Too long: may not be longer than ${(e.params as { limit: number }).limit}`,
      };
    case "maxItems":
      return {
        path,
        type: "FieldValueTooMany",
        message: `Too many: must have at most ${(e.params as { limit: number }).limit} items`,
      };
    case "additionalProperties": {
      const extra = (e.params as { additionalProperty: string }).additionalProperty;
      path = joinPath(path, extra);
      return { path, type: "FieldValueUnknown", message: `unknown field "${extra}"` };
    }
    default:
      return {
        path,
        type: "FieldValueInvalid",
        message: `Invalid value: ${describeValue(value)}: ${path || "object"} in body ${e.message ?? "is invalid"}`,
      };
  }
}

function lookup(root: unknown, pointer: string): unknown {
  let cur: unknown = root;
  for (const raw of pointer.split("/").slice(1)) {
    const seg = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    if (Array.isArray(cur)) cur = cur[Number(seg)];
    else if (isPlainObject(cur)) cur = cur[seg];
    else return undefined;
  }
  return cur;
}

/** Applies schema defaults in place, the way the API server does (missing fields only). */
export function applyDefaults(schema: JSONSchemaProps, value: unknown): void {
  if (isPlainObject(value)) {
    if (schema.properties) {
      for (const [key, sub] of Object.entries(schema.properties)) {
        if (value[key] === undefined && sub.default !== undefined) {
          value[key] = structuredClone(sub.default);
        }
        if (value[key] !== undefined && value[key] !== null) applyDefaults(sub, value[key]);
      }
    }
    if (isPlainObject(schema.additionalProperties)) {
      for (const v of Object.values(value)) applyDefaults(schema.additionalProperties, v);
    }
  } else if (Array.isArray(value) && schema.items) {
    for (const item of value) applyDefaults(schema.items, item);
  }
}

/**
 * Finds fields the schema does not declare (outside `x-kubernetes-preserve-unknown-fields`),
 * and removes them when `remove` is set — the API server's pruning. `metadata` of an
 * embedded or top-level resource is never walked: the API server owns its shape.
 */
export function findUnknownFields(
  schema: JSONSchemaProps,
  value: unknown,
  remove: boolean,
  path = "",
  isRoot = true,
): string[] {
  const out: string[] = [];
  if (isPlainObject(value)) {
    const preserve = schema["x-kubernetes-preserve-unknown-fields"] === true;
    const embedded = schema["x-kubernetes-embedded-resource"] === true;
    for (const key of Object.keys(value)) {
      if ((isRoot || embedded) && (key === "apiVersion" || key === "kind" || key === "metadata")) continue;
      // Own properties only: `constructor`, `toString`, `__proto__` are unknown fields too.
      const sub =
        schema.properties && Object.hasOwn(schema.properties, key) ? schema.properties[key] : undefined;
      if (sub) {
        out.push(...findUnknownFields(sub, value[key], remove, joinPath(path, key), false));
      } else if (isPlainObject(schema.additionalProperties)) {
        out.push(
          ...findUnknownFields(schema.additionalProperties, value[key], remove, joinPath(path, key), false),
        );
      } else if (schema.additionalProperties === true || preserve) {
        // allowed as-is
      } else {
        out.push(joinPath(path, key));
        if (remove) delete value[key];
      }
    }
  } else if (Array.isArray(value) && schema.items) {
    value.forEach((item, i) => {
      out.push(...findUnknownFields(schema.items!, item, remove, `${path}[${i}]`, false));
    });
  }
  return out;
}

function ruleMentionsOldSelf(rule: string): boolean {
  return /\boldSelf\b/.test(rule);
}

/** Evaluates every `x-kubernetes-validations` rule found along the value's schema. */
export function evaluateCelRules(
  schema: JSONSchemaProps,
  value: unknown,
  oldValue: unknown,
  path = "",
): FieldError[] {
  const errors: FieldError[] = [];
  if (value === undefined || value === null) return errors;
  for (const r of schema["x-kubernetes-validations"] ?? []) {
    const transition = ruleMentionsOldSelf(r.rule);
    if (transition && (oldValue === undefined || oldValue === null) && !r.optionalOldSelf) continue;
    const result = evaluateRule(r.rule, schema, value, transition ? oldValue : undefined);
    if (result === true) continue;
    const fieldPath = r.fieldPath ? joinPath(path, r.fieldPath.replace(/^\./, "")) : path;
    const reason = r.reason ?? "FieldValueInvalid";
    const message =
      result === false
        ? (r.message ?? `Invalid value: failed rule: ${r.rule}`)
        : `Invalid value: rule could not be evaluated: ${r.rule}: ${result.error}`;
    errors.push({
      path: fieldPath,
      type: reason,
      message: result === false && r.message ? `Invalid value: ${r.message}` : message,
    });
  }
  if (isPlainObject(value)) {
    const oldObj = isPlainObject(oldValue) ? oldValue : undefined;
    if (schema.properties) {
      for (const [key, sub] of Object.entries(schema.properties)) {
        if (value[key] === undefined) continue;
        errors.push(...evaluateCelRules(sub, value[key], oldObj?.[key], joinPath(path, key)));
      }
    }
    if (isPlainObject(schema.additionalProperties)) {
      for (const [key, v] of Object.entries(value)) {
        errors.push(...evaluateCelRules(schema.additionalProperties, v, oldObj?.[key], joinPath(path, key)));
      }
    }
  } else if (Array.isArray(value) && schema.items) {
    // Transition rules inside lists are only correlated for listType=map, by the map keys.
    const keys =
      schema["x-kubernetes-list-type"] === "map" ? schema["x-kubernetes-list-map-keys"] : undefined;
    const oldList = Array.isArray(oldValue) ? oldValue : [];
    value.forEach((item, i) => {
      let oldItem: unknown;
      if (keys && isPlainObject(item)) {
        oldItem = oldList.find(
          (o) => isPlainObject(o) && keys.every((k) => JSON.stringify(o[k]) === JSON.stringify(item[k])),
        );
      }
      errors.push(...evaluateCelRules(schema.items!, item, oldItem, `${path}[${i}]`));
    });
  }
  return errors;
}

export interface ValidateOptions {
  /** The stored object, for transition rules (`oldSelf`); absent on create. */
  old?: unknown;
  /** What to do with fields the schema does not declare. Default `Strict`. */
  unknownFields?: "Strict" | "Prune" | "Ignore";
  /** Apply schema defaults to the object (in place) before validating. Default true. */
  defaults?: boolean;
}

export interface ValidationResult {
  errors: FieldError[];
  /** Unknown fields found (and removed, under `Prune`). */
  unknownFields: string[];
}

/** A compiled validator for one structural schema (one CRD version). */
export class SchemaValidator {
  private readonly check: ValidateFunction;

  constructor(readonly schema: JSONSchemaProps) {
    this.check = sharedAjv().compile(schema as object);
  }

  /** Validates `obj` in place (defaults applied, unknown fields pruned under `Prune`). */
  validate(obj: unknown, opts: ValidateOptions = {}): ValidationResult {
    const mode = opts.unknownFields ?? "Strict";
    const unknown = mode === "Ignore" ? [] : findUnknownFields(this.schema, obj, mode === "Prune");
    const errors: FieldError[] = [];
    if (mode === "Strict") {
      for (const p of unknown) {
        errors.push({ path: p, type: "FieldValueUnknown", message: `unknown field "${p}"` });
      }
    }
    if (opts.defaults !== false) applyDefaults(this.schema, obj);
    if (!this.check(obj)) {
      for (const e of this.check.errors ?? []) {
        // anyOf/oneOf wrappers repeat what their branches said; keep the branches.
        if (e.keyword === "anyOf" || e.keyword === "oneOf" || e.keyword === "if") continue;
        errors.push(ajvErrorToFieldError(e, obj));
      }
    }
    // CEL rules run only on schema-valid data, as in the API server (they assume the types).
    // The stored object was defaulted when written; default a copy of the given one the same
    // way, so `self == oldSelf` compares like with like.
    let old = opts.old;
    if (old !== undefined && opts.defaults !== false) {
      old = structuredClone(old);
      applyDefaults(this.schema, old);
    }
    if (errors.length === 0) errors.push(...evaluateCelRules(this.schema, obj, old));
    return { errors: dedupe(errors), unknownFields: unknown };
  }
}

function dedupe(errors: FieldError[]): FieldError[] {
  const seen = new Set<string>();
  return errors.filter((e) => {
    const k = `${e.path}\u0000${e.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

let ajvInstance: Ajv | undefined;
function sharedAjv(): Ajv {
  ajvInstance ??= newAjv();
  return ajvInstance;
}
