/**
 * Building blocks shared by the spillway.dev/v1alpha1 kinds.
 *
 * This folder is the single source of truth of the API: each schema here is both the
 * TypeScript type (through TypeBox's `Static`) and the OpenAPI v3 schema that
 * `npm run gen:crds` writes into `crds/`. The helpers below only produce what a
 * *structural* Kubernetes schema allows: a `type` on every node, no `anyOf` carrying types,
 * maps as `additionalProperties`, and a description on every field for `kubectl explain`.
 */
import { type TSchema, type TUnsafe, Type } from "@sinclair/typebox";
import type { ValidationRule } from "../schema/types.ts";

export const GROUP = "spillway.dev";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;

/** Kubernetes duration strings as `metav1.Duration` prints them: `90s`, `5m`, `1h30m`. */
export const DURATION_PATTERN = "^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$";
/** A DNS-1123 subdomain: object names (max 253). */
export const DNS_SUBDOMAIN_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/** A DNS-1123 label: namespaces, provider names used in labels (max 63). */
export const DNS_LABEL_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/**
 * A relative object-store prefix. Segments may not start with a dot, so `.` and `..` can
 * never appear: a prefix cannot climb out of the store location it is joined to. No
 * backslashes, no leading slash, no empty segments.
 */
export const STORE_PREFIX_PATTERN =
  "^([A-Za-z0-9_=+@-][A-Za-z0-9._=+@-]*/)*([A-Za-z0-9_=+@-][A-Za-z0-9._=+@-]*/?)?$";
/** An absolute container path with no `.`/`..` segments. */
export const CONTAINER_PATH_PATTERN = "^(/[A-Za-z0-9_=+@-][A-Za-z0-9._=+@-]*)+/?$";
/** A jurisdiction code: ISO 3166 country codes or blocs such as `EU`. */
export const JURISDICTION_PATTERN = "^[A-Z]{2,8}$";
/** A GPU type name as users write it: `H100`, `A100-80GB`, `MI300X`. */
export const GPU_TYPE_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]*$";

/** A string with an upper length bound (every string in the API has one). */
export function Str(description: string, opts: Record<string, unknown> = {}) {
  return Type.String({ maxLength: 253, ...opts, description });
}

/** A string enum rendered as `type: string` + `enum` (structural, unlike a union's anyOf). */
export function StrEnum<const T extends readonly string[]>(
  values: T,
  description: string,
  opts: Record<string, unknown> = {},
): TUnsafe<T[number]> {
  return Type.Unsafe<T[number]>({ type: "string", enum: [...values], ...opts, description });
}

/** `map[string]string` rendered as `additionalProperties` (structural). */
export function StringMap(description: string, opts: Record<string, unknown> = {}) {
  return Type.Unsafe<Record<string, string>>({
    type: "object",
    additionalProperties: { type: "string", maxLength: 4096, description: "A value." },
    maxProperties: 128,
    ...opts,
    description,
  });
}

/** An object that keeps fields the schema does not declare (embedded pod templates). */
export function OpenObject<T = Record<string, unknown>>(
  description: string,
  opts: Record<string, unknown> = {},
) {
  return Type.Unsafe<T>({
    type: "object",
    "x-kubernetes-preserve-unknown-fields": true,
    ...opts,
    description,
  });
}

export function Int(description: string, opts: Record<string, unknown> = {}) {
  return Type.Integer({ format: "int32", ...opts, description });
}

export function Rules(...rules: ValidationRule[]): { "x-kubernetes-validations": ValidationRule[] } {
  return { "x-kubernetes-validations": rules };
}

export const Duration = (description: string, opts: Record<string, unknown> = {}) =>
  Str(description, { pattern: DURATION_PATTERN, maxLength: 32, ...opts });

export const ObjectName = (description: string, opts: Record<string, unknown> = {}) =>
  Str(description, { pattern: DNS_SUBDOMAIN_PATTERN, minLength: 1, maxLength: 253, ...opts });

export const LabelName = (description: string, opts: Record<string, unknown> = {}) =>
  Str(description, { pattern: DNS_LABEL_PATTERN, minLength: 1, maxLength: 63, ...opts });

export const Timestamp = (description: string) => Str(description, { format: "date-time", maxLength: 64 });

/** `metav1.Condition`, exactly as upstream defines it. */
export const Condition = Type.Object(
  {
    type: Str("Type of condition in CamelCase, e.g. Ready, Placed, Stalled.", {
      pattern:
        "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
      maxLength: 316,
    }),
    status: StrEnum(
      ["True", "False", "Unknown"] as const,
      "Status of the condition: True, False or Unknown.",
    ),
    observedGeneration: Type.Optional(
      Type.Integer({
        format: "int64",
        minimum: 0,
        description: "The .metadata.generation the condition was set from.",
      }),
    ),
    lastTransitionTime: Timestamp("Last time the condition went from one status to another."),
    reason: Str("Programmatic identifier of the condition's last transition, in CamelCase.", {
      pattern: "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
      minLength: 1,
      maxLength: 1024,
    }),
    message: Str("Human-readable details about the transition.", { maxLength: 32768 }),
  },
  { description: "A condition in the metav1.Condition shape." },
);
export type Condition = {
  type: string;
  status: "True" | "False" | "Unknown";
  observedGeneration?: number;
  lastTransitionTime: string;
  reason: string;
  message: string;
};

export const Conditions = Type.Array(Condition, {
  maxItems: 32,
  "x-kubernetes-list-type": "map",
  "x-kubernetes-list-map-keys": ["type"],
  description: "The latest observations of the object's state, one per condition type.",
});

export const ObservedGeneration = Type.Optional(
  Type.Integer({
    format: "int64",
    minimum: 0,
    description: "The .metadata.generation this status describes.",
  }),
);

/** A reference to a key of a Secret. */
export const SecretKeyRef = Type.Object(
  {
    name: ObjectName("Name of the Secret."),
    namespace: Type.Optional(
      LabelName("Namespace of the Secret; defaults to the operator's namespace for cluster-scoped objects."),
    ),
    key: Type.Optional(
      Str("Key within the Secret; each consumer documents its default.", { maxLength: 253 }),
    ),
  },
  {
    description:
      "A reference to a Secret (and optionally one of its keys). Secret values never appear in status.",
  },
);

/** The ObjectMeta fields every object carries; the API server owns the full shape. */
export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  ownerReferences?: Array<{
    apiVersion: string;
    kind: string;
    name: string;
    uid: string;
    controller?: boolean;
    blockOwnerDeletion?: boolean;
  }>;
}

/** The top-level shape of a custom resource of this API. */
export interface Resource<K extends string, Spec, Status> {
  apiVersion: typeof API_VERSION;
  kind: K;
  metadata: ObjectMeta;
  spec: Spec;
  status?: Status;
}

/** Wraps a kind's spec and status schemas into the CRD's top-level `openAPIV3Schema`. */
export function resourceSchema(kind: string, description: string, spec: TSchema, status: TSchema): TSchema {
  return Type.Object(
    {
      apiVersion: Type.Optional(
        Str(
          "APIVersion defines the versioned schema of this representation of an object. Always spillway.dev/v1alpha1.",
        ),
      ),
      kind: Type.Optional(Str(`Kind is the REST resource this object represents. Always ${kind}.`)),
      metadata: Type.Optional(Type.Object({}, { description: "Standard object metadata." })),
      spec,
      status: Type.Optional(status),
    },
    { description },
  );
}
