/**
 * Shapes shared by the sandbox API server's modules. Objects are kept as plain JSON (the
 * server is generic over kinds, like the real one's unstructured storage for CRDs).
 */

import type { JSONSchemaProps } from "../../api/schema/types.ts";
import type { SchemaValidator } from "../../api/schema/validator.ts";

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
export type JsonObject = Record<string, unknown>;

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  deletionGracePeriodSeconds?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  ownerReferences?: OwnerReference[];
  managedFields?: ManagedFieldsEntry[];
}

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

export interface ManagedFieldsEntry {
  manager: string;
  operation: "Apply" | "Update";
  apiVersion: string;
  time: string;
  fieldsType: "FieldsV1";
  fieldsV1: JsonObject;
  subresource?: string;
}

/** A stored object: any kind, with the metadata the server manages. */
export interface KubeObject extends JsonObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
}

export interface PrinterColumn {
  name: string;
  type: string;
  jsonPath: string;
  description?: string;
  format?: string;
  priority?: number;
}

/** One served resource (a plural in a group), built in or defined by a CRD. */
export interface ResourceType {
  group: string;
  /** Versions served, the storage (preferred) version first. */
  versions: string[];
  kind: string;
  listKind: string;
  plural: string;
  singular: string;
  namespaced: boolean;
  shortNames: string[];
  categories: string[];
  /** Has a `status` subresource: main writes keep the stored status, status writes only status. */
  statusSubresource: boolean;
  /** Only for CRD-defined resources. */
  custom?: CustomResourceInfo;
}

export interface CustomResourceInfo {
  crdName: string;
  /** Per served version: its schema, validator and printer columns. */
  byVersion: Map<string, { schema?: JSONSchemaProps; validator?: SchemaValidator; columns: PrinterColumn[] }>;
}

export function apiVersionOf(group: string, version: string): string {
  return group === "" ? version : `${group}/${version}`;
}

/** The key under which a resource's objects live: group and plural, version-independent. */
export function resourceKey(rt: Pick<ResourceType, "group" | "plural">): string {
  return `${rt.group}/${rt.plural}`;
}
