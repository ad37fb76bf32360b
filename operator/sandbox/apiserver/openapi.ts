/**
 * OpenAPI v3 documents, per group-version, as kubectl reads them:
 * - `kubectl explain` finds a kind's schema in `components.schemas` by its
 *   `x-kubernetes-group-version-kind` (custom resources carry their CRD's openAPIV3Schema);
 * - `kubectl apply` asks whether the server validates fields itself by looking for the
 *   `fieldValidation` parameter on the kind's PATCH operation (then it sends
 *   `fieldValidation=Strict` and skips client-side validation, which would need OpenAPI v2);
 * - PATCH operations list no strategic-merge content type, so for built-in kinds kubectl
 *   computes strategic merge patches from its compiled-in types, and for custom resources it
 *   sends JSON merge patches, as against a real server.
 * Built-in kinds get an open schema (apiVersion, kind, metadata, anything else preserved).
 * Documents are rebuilt when the served resources change (the registry's revision).
 */
import { createHash, randomUUID } from "node:crypto";
import type { JSONSchemaProps } from "../../api/schema/types.ts";
import type { ResourceRegistry } from "./registry.ts";
import type { JsonObject, ResourceType } from "./types.ts";

export interface OpenApiCache {
  /** Distinguishes this server's documents from another's that had the same revision. */
  readonly instance: string;
  revision: number;
  docs: Map<string, JsonObject>;
}

export function newOpenApiCache(): OpenApiCache {
  return { instance: randomUUID(), revision: -1, docs: new Map() };
}

function gvPaths(registry: ResourceRegistry): Map<string, { group: string; version: string }> {
  const out = new Map<string, { group: string; version: string }>();
  for (const group of registry.groups()) {
    for (const version of registry.groupVersions(group)) {
      out.set(group === "" ? `api/${version}` : `apis/${group}/${version}`, { group, version });
    }
  }
  return out;
}

function hashOf(cache: OpenApiCache, revision: number, path: string): string {
  return createHash("sha256")
    .update(`${cache.instance}/${revision}/${path}`)
    .digest("hex")
    .slice(0, 32)
    .toUpperCase();
}

export function openApiRoot(cache: OpenApiCache, registry: ResourceRegistry): JsonObject {
  const paths: JsonObject = {};
  for (const path of gvPaths(registry).keys()) {
    paths[path] = { serverRelativeURL: `/openapi/v3/${path}?hash=${hashOf(cache, registry.revision, path)}` };
  }
  return { paths };
}

export function openApiV3Document(
  cache: OpenApiCache,
  registry: ResourceRegistry,
  path: string,
): JsonObject | undefined {
  if (cache.revision !== registry.revision) {
    cache.docs.clear();
    cache.revision = registry.revision;
  }
  const cached = cache.docs.get(path);
  if (cached) return cached;
  const gv = gvPaths(registry).get(path);
  if (!gv) return undefined;
  const doc = buildDocument(registry, gv.group, gv.version);
  cache.docs.set(path, doc);
  return doc;
}

/** `spillway.dev` → `dev.spillway`, the real server's naming of CRD schemas. */
function schemaName(rt: ResourceType, version: string): string {
  if (rt.custom) return `${rt.group.split(".").reverse().join(".")}.${version}.${rt.kind}`;
  const g = rt.group === "" ? "core" : rt.group.split(".")[0];
  return `io.k8s.api.${g}.${version}.${rt.kind}`;
}

const OBJECT_META: JSONSchemaProps = {
  type: "object",
  description:
    "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
  properties: {
    name: { type: "string", description: "Name must be unique within a namespace." },
    generateName: {
      type: "string",
      description: "An optional prefix, used by the server, to generate a unique name.",
    },
    namespace: { type: "string", description: "The namespace the object lives in." },
    labels: {
      type: "object",
      additionalProperties: { type: "string" },
      description: "Map of string keys and values that can be used to organize and categorize objects.",
    },
    annotations: {
      type: "object",
      additionalProperties: { type: "string" },
      description: "Unstructured key value map stored with a resource.",
    },
    finalizers: {
      type: "array",
      items: { type: "string" },
      description: "Must be empty before the object is deleted from the registry.",
    },
    ownerReferences: {
      type: "array",
      items: { type: "object", "x-kubernetes-preserve-unknown-fields": true },
      description: "List of objects depended by this object.",
    },
    uid: { type: "string", description: "UID is the unique in time and space value for this object." },
    resourceVersion: {
      type: "string",
      description: "An opaque value that represents the internal version of this object.",
    },
    generation: {
      type: "integer",
      description: "A sequence number representing a specific generation of the desired state.",
    },
    creationTimestamp: { type: "string", format: "date-time", description: "When this object was created." },
    deletionTimestamp: {
      type: "string",
      format: "date-time",
      description: "When this object will be deleted.",
    },
  },
};

const API_VERSION_PROP: JSONSchemaProps = {
  type: "string",
  description:
    "APIVersion defines the versioned schema of this representation of an object. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
};
const KIND_PROP: JSONSchemaProps = {
  type: "string",
  description:
    "Kind is a string value representing the REST resource this object represents. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
};

function kindSchema(rt: ResourceType, version: string): JsonObject {
  const gvk = [{ group: rt.group, version, kind: rt.kind }];
  const crdSchema = rt.custom?.byVersion.get(version)?.schema;
  if (crdSchema) {
    const properties = { ...(crdSchema.properties ?? {}) };
    properties.apiVersion = { ...API_VERSION_PROP, ...(properties.apiVersion ?? {}) };
    properties.kind = { ...KIND_PROP, ...(properties.kind ?? {}) };
    properties.metadata = OBJECT_META;
    return { ...crdSchema, type: "object", properties, "x-kubernetes-group-version-kind": gvk } as JsonObject;
  }
  return {
    type: "object",
    description: `${rt.kind} (${rt.group === "" ? "core" : rt.group}/${version}), stored as given by the sandbox API server.`,
    properties: { apiVersion: API_VERSION_PROP, kind: KIND_PROP, metadata: OBJECT_META },
    "x-kubernetes-preserve-unknown-fields": true,
    "x-kubernetes-group-version-kind": gvk,
  };
}

function param(name: string, description: string): JsonObject {
  return { name, in: "query", description, schema: { type: "string", uniqueItems: true } };
}

const WRITE_PARAMS = [
  param("dryRun", "When present, indicates that modifications should not be persisted."),
  param("fieldManager", "A name associated with the actor or entity that is making these changes."),
  param("fieldValidation", "How the server treats unknown or duplicate fields: Ignore, Warn or Strict."),
];

function operations(rt: ResourceType, version: string, ref: JsonObject, item: boolean): JsonObject {
  const gvk = { group: rt.group, version, kind: rt.kind };
  const op = (action: string, extra: JsonObject = {}): JsonObject => ({
    description: `${action} ${rt.kind}`,
    operationId: `${action}${rt.kind}`,
    responses: { "200": { description: "OK", content: { "application/json": { schema: ref } } } },
    "x-kubernetes-action": action,
    "x-kubernetes-group-version-kind": gvk,
    ...extra,
  });
  const body = (types: string[]): JsonObject => ({
    requestBody: { content: Object.fromEntries(types.map((t) => [t, { schema: ref }])) },
  });
  if (!item) {
    return {
      get: op("list", {
        parameters: [param("labelSelector", ""), param("fieldSelector", ""), param("watch", "")],
      }),
      post: op("post", { parameters: WRITE_PARAMS, ...body(["application/json", "application/yaml"]) }),
      delete: op("deletecollection"),
    };
  }
  return {
    get: op("get"),
    put: op("put", { parameters: WRITE_PARAMS, ...body(["application/json", "application/yaml"]) }),
    patch: op("patch", {
      parameters: [...WRITE_PARAMS, param("force", "Force is going to force Apply requests.")],
      ...body([
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
      ]),
    }),
    delete: op("delete", { parameters: [param("dryRun", "")] }),
  };
}

function buildDocument(registry: ResourceRegistry, group: string, version: string): JsonObject {
  const paths: JsonObject = {};
  const schemas: JsonObject = {};
  const prefix = group === "" ? `/api/${version}` : `/apis/${group}/${version}`;
  for (const rt of registry.inGroup(group)) {
    if (!rt.versions.includes(version)) continue;
    const name = schemaName(rt, version);
    schemas[name] = kindSchema(rt, version);
    const ref = { $ref: `#/components/schemas/${name}` };
    const base = rt.namespaced ? `${prefix}/namespaces/{namespace}/${rt.plural}` : `${prefix}/${rt.plural}`;
    paths[base] = operations(rt, version, ref, false);
    paths[`${base}/{name}`] = operations(rt, version, ref, true);
    if (rt.statusSubresource) paths[`${base}/{name}/status`] = operations(rt, version, ref, true);
  }
  return {
    openapi: "3.0.0",
    info: { title: "Kubernetes", version: "v1.32.0" },
    paths,
    components: { schemas },
  };
}
