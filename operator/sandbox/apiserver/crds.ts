/**
 * CustomResourceDefinitions: turning a stored CRD into a served resource (names, scope,
 * versions, schema, printer columns), the status the real server reports once the names are
 * accepted, and validation of custom objects with the shared structural-schema validator.
 */
import type { FieldError, JSONSchemaProps } from "../../api/schema/types.ts";
import { findUnknownFields, SchemaValidator } from "../../api/schema/validator.ts";
import { ApiError, errors } from "./errors.ts";
import { isPlainObject } from "./patch.ts";
import type { CustomResourceInfo, KubeObject, PrinterColumn, ResourceType } from "./types.ts";

interface CrdVersion {
  name: string;
  served?: boolean;
  storage?: boolean;
  schema?: { openAPIV3Schema?: JSONSchemaProps };
  subresources?: { status?: object; scale?: object };
  additionalPrinterColumns?: PrinterColumn[];
}

interface CrdSpec {
  group?: string;
  scope?: string;
  names?: {
    kind?: string;
    listKind?: string;
    plural?: string;
    singular?: string;
    shortNames?: string[];
    categories?: string[];
  };
  versions?: CrdVersion[];
}

export const CRD_RESOURCE = {
  group: "apiextensions.k8s.io",
  plural: "customresourcedefinitions",
  kind: "CustomResourceDefinition",
};

/** Compiled validators, by schema text: re-applying an unchanged CRD must not recompile. */
const validatorCache = new Map<string, SchemaValidator>();

function validatorFor(schema: JSONSchemaProps): SchemaValidator {
  const key = JSON.stringify(schema);
  let v = validatorCache.get(key);
  if (!v) {
    v = new SchemaValidator(schema);
    validatorCache.set(key, v);
  }
  return v;
}

function specOf(crd: KubeObject): CrdSpec {
  return (isPlainObject(crd.spec) ? crd.spec : {}) as CrdSpec;
}

/** Field errors that make the API server refuse a CRD. */
export function validateCrd(crd: KubeObject): FieldError[] {
  const spec = specOf(crd);
  const out: FieldError[] = [];
  const req = (path: string, v: unknown) => {
    if (v === undefined || v === "")
      out.push({ path, type: "FieldValueRequired", message: "Required value" });
  };
  req("spec.group", spec.group);
  req("spec.names.plural", spec.names?.plural);
  req("spec.names.kind", spec.names?.kind);
  if (spec.scope !== "Namespaced" && spec.scope !== "Cluster") {
    out.push({
      path: "spec.scope",
      type: "FieldValueNotSupported",
      message: `Unsupported value: "${spec.scope ?? ""}": supported values: "Cluster", "Namespaced"`,
    });
  }
  const versions = spec.versions ?? [];
  if (versions.length === 0)
    out.push({ path: "spec.versions", type: "FieldValueRequired", message: "Required value" });
  if (versions.filter((v) => v.storage).length !== 1 && versions.length > 0) {
    out.push({
      path: "spec.versions",
      type: "FieldValueInvalid",
      message: "Invalid value: must have exactly one version marked as storage version",
    });
  }
  if (spec.group && spec.names?.plural && crd.metadata.name !== `${spec.names.plural}.${spec.group}`) {
    out.push({
      path: "metadata.name",
      type: "FieldValueInvalid",
      message: `Invalid value: "${crd.metadata.name}": must be spec.names.plural+"."+spec.group`,
    });
  }
  for (const [i, v] of versions.entries()) {
    const schema = v.schema?.openAPIV3Schema;
    if (!schema) continue;
    try {
      validatorFor(schema);
    } catch (e) {
      out.push({
        path: `spec.versions[${i}].schema.openAPIV3Schema`,
        type: "FieldValueInvalid",
        message: `Invalid value: ${(e as Error).message}`,
      });
    }
  }
  return out;
}

/** The served resource a (valid) CRD defines. */
export function resourceFromCrd(crd: KubeObject): ResourceType {
  const spec = specOf(crd);
  const names = spec.names ?? {};
  const served = (spec.versions ?? []).filter((v) => v.served !== false);
  served.sort((a, b) => Number(b.storage ?? false) - Number(a.storage ?? false));
  const byVersion: CustomResourceInfo["byVersion"] = new Map();
  for (const v of served) {
    const schema = v.schema?.openAPIV3Schema;
    byVersion.set(v.name, {
      schema,
      validator: schema ? validatorFor(schema) : undefined,
      columns: v.additionalPrinterColumns ?? [],
    });
  }
  const kind = names.kind!;
  return {
    group: spec.group!,
    versions: served.map((v) => v.name),
    kind,
    listKind: names.listKind ?? `${kind}List`,
    plural: names.plural!,
    singular: names.singular ?? kind.toLowerCase(),
    namespaced: spec.scope === "Namespaced",
    shortNames: names.shortNames ?? [],
    categories: names.categories ?? [],
    statusSubresource: served.some((v) => v.subresources?.status !== undefined),
    custom: { crdName: crd.metadata.name!, byVersion },
  };
}

function condition(
  type: string,
  reason: string,
  message: string,
  previous: unknown[],
): Record<string, unknown> {
  const old = previous.find((c) => isPlainObject(c) && c.type === type && c.status === "True") as
    | Record<string, unknown>
    | undefined;
  return {
    type,
    status: "True",
    reason,
    message,
    lastTransitionTime:
      (old?.lastTransitionTime as string) ?? new Date().toISOString().replace(/\.\d+Z$/, "Z"),
  };
}

/** The status the real server's controllers give a CRD whose names were accepted. */
export function establishedStatus(crd: KubeObject): Record<string, unknown> {
  const spec = specOf(crd);
  const names = spec.names ?? {};
  const prev = isPlainObject(crd.status) && Array.isArray(crd.status.conditions) ? crd.status.conditions : [];
  const storage = (spec.versions ?? []).find((v) => v.storage)?.name;
  const stored =
    isPlainObject(crd.status) && Array.isArray(crd.status.storedVersions)
      ? (crd.status.storedVersions as string[])
      : [];
  return {
    conditions: [
      condition("NamesAccepted", "NoConflicts", "no conflicts found", prev),
      condition("Established", "InitialNamesAccepted", "the initial names have been accepted", prev),
    ],
    acceptedNames: {
      kind: names.kind,
      listKind: names.listKind ?? `${names.kind}List`,
      plural: names.plural,
      singular: names.singular ?? names.kind?.toLowerCase(),
      ...(names.shortNames ? { shortNames: names.shortNames } : {}),
      ...(names.categories ? { categories: names.categories } : {}),
    },
    storedVersions: storage && !stored.includes(storage) ? [...stored, storage] : stored,
  };
}

export type FieldValidation = "Strict" | "Warn" | "Ignore";

/**
 * Validates a custom object in place (defaults applied, unknown fields pruned) against the
 * schema of the version it was sent in. Returns warnings; throws 400 for unknown fields
 * under `Strict` and 422 with every failing field otherwise.
 */
export function validateCustomObject(
  rt: ResourceType,
  version: string,
  obj: KubeObject,
  old: KubeObject | undefined,
  fieldValidation: FieldValidation,
): string[] {
  const entry = rt.custom?.byVersion.get(version);
  if (!entry?.validator || !entry.schema) return [];
  const unknown = findUnknownFields(entry.schema, structuredClone(obj), false);
  if (unknown.length > 0 && fieldValidation === "Strict") {
    const list = unknown.map((u) => `unknown field "${u}"`).join(", ");
    throw new ApiError(
      400,
      "BadRequest",
      `${rt.kind} in version "${version}" cannot be handled as a ${rt.kind}: strict decoding error: ${list}`,
    );
  }
  const result = entry.validator.validate(obj, { old, unknownFields: "Prune" });
  if (result.errors.length > 0) {
    throw errors.invalid(
      { group: rt.group, plural: rt.plural, kind: rt.kind },
      obj.metadata.name ?? "",
      result.errors,
    );
  }
  return fieldValidation === "Warn" ? unknown.map((u) => `unknown field "${u}"`) : [];
}
