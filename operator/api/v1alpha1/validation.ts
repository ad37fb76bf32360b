/**
 * The operator's own validation of Spillway objects: the same schemas as the CRDs (so the
 * operator never trusts that the API server validated), then semantic checks no schema can
 * express. Every problem names its field path.
 */
import { parseDuration } from "../../util/duration.ts";
import { type FieldError, formatFieldError } from "../schema/types.ts";
import { SchemaValidator } from "../schema/validator.ts";
import type { CloudProvider } from "./cloudprovider.ts";
import { API_VERSION, DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN } from "./common.ts";
import type { DataSet } from "./dataset.ts";
import { KINDS, type KindName, openApiSchema } from "./kinds.ts";
import type { ProvisionedCluster } from "./provisionedcluster.ts";
import type { TrainingRun } from "./trainingrun.ts";

export type { FieldError } from "../schema/types.ts";
export { formatFieldError } from "../schema/types.ts";

const validators = new Map<KindName, SchemaValidator>();
function validatorFor(kind: KindName): SchemaValidator {
  let v = validators.get(kind);
  if (!v) {
    v = new SchemaValidator(openApiSchema(kind));
    validators.set(kind, v);
  }
  return v;
}

/** Longest TrainingRun name: its Indexed Job's pod hostnames (`<name>-<index>`) must stay ≤ 63. */
export const MAX_RUN_NAME = 56;

export class ValidationError extends Error {
  constructor(
    readonly kind: string,
    readonly objectName: string | undefined,
    readonly errors: FieldError[],
  ) {
    super(
      `${kind}${objectName ? ` "${objectName}"` : ""} is invalid: ${errors.map(formatFieldError).join("; ")}`,
    );
    this.name = "ValidationError";
  }
}

export interface ValidateOptions {
  /** The previous version of the object, for immutability (transition) rules. */
  old?: unknown;
  /** `Strict` reports unknown fields as errors (kubectl's default); `Prune` drops them. */
  unknownFields?: "Strict" | "Prune" | "Ignore";
}

/**
 * Validates (and defaults, in place) one object of a Spillway kind. Returns every error;
 * an empty list means the object is valid.
 */
export function validateObject(obj: unknown, opts: ValidateOptions = {}): FieldError[] {
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
    return [{ path: "", type: "FieldValueTypeInvalid", message: "Invalid value: an object is required" }];
  }
  const o = obj as { apiVersion?: unknown; kind?: unknown; metadata?: unknown };
  if (o.apiVersion !== API_VERSION) {
    return [
      {
        path: "apiVersion",
        type: "FieldValueNotSupported",
        message: `Unsupported value: ${JSON.stringify(o.apiVersion)}: supported values: "${API_VERSION}"`,
      },
    ];
  }
  const info = KINDS.find((k) => k.kind === o.kind);
  if (!info) {
    return [
      {
        path: "kind",
        type: "FieldValueNotSupported",
        message: `Unsupported value: ${JSON.stringify(o.kind)}: supported values: ${KINDS.map((k) => `"${k.kind}"`).join(", ")}`,
      },
    ];
  }
  const errors = validateMetadata(o.metadata, info.scope === "Namespaced", info.kind);
  const result = validatorFor(info.kind).validate(obj, {
    old: opts.old,
    unknownFields: opts.unknownFields ?? "Strict",
  });
  errors.push(...result.errors);
  if (errors.length === 0) errors.push(...semanticChecks(info.kind, obj));
  return errors;
}

/** Like `validateObject`, but throws a `ValidationError` listing every problem. */
export function assertValid<T>(obj: unknown, opts: ValidateOptions = {}): T {
  const errors = validateObject(obj, opts);
  if (errors.length > 0) {
    const o = obj as { kind?: string; metadata?: { name?: string } } | null;
    throw new ValidationError(String(o?.kind ?? "object"), o?.metadata?.name, errors);
  }
  return obj as T;
}

function validateMetadata(meta: unknown, namespaced: boolean, kind: KindName): FieldError[] {
  const errors: FieldError[] = [];
  if (typeof meta !== "object" || meta === null || Array.isArray(meta)) {
    return [{ path: "metadata", type: "FieldValueRequired", message: "Required value" }];
  }
  const m = meta as { name?: unknown; generateName?: unknown; namespace?: unknown };
  if (m.name === undefined && m.generateName === undefined) {
    errors.push({
      path: "metadata.name",
      type: "FieldValueRequired",
      message: "Required value: name or generateName is required",
    });
  }
  if (m.name !== undefined) {
    errors.push(...checkName("metadata.name", m.name, DNS_SUBDOMAIN_PATTERN, 253));
    if (kind === "TrainingRun" && typeof m.name === "string" && m.name.length > MAX_RUN_NAME) {
      errors.push({
        path: "metadata.name",
        type: "FieldValueTooLong",
        message: `Too long: may not be longer than ${MAX_RUN_NAME} (the run's Job pods are named <run>-<index>)`,
      });
    }
  }
  if (namespaced && m.namespace !== undefined) {
    errors.push(...checkName("metadata.namespace", m.namespace, DNS_LABEL_PATTERN, 63));
  }
  if (!namespaced && m.namespace !== undefined && m.namespace !== "") {
    errors.push({
      path: "metadata.namespace",
      type: "FieldValueForbidden",
      message: `Forbidden: ${kind} is cluster-scoped and has no namespace`,
    });
  }
  return errors;
}

function checkName(path: string, value: unknown, pattern: string, max: number): FieldError[] {
  if (typeof value !== "string") {
    return [{ path, type: "FieldValueTypeInvalid", message: "Invalid value: must be a string" }];
  }
  if (value.length > max) {
    return [{ path, type: "FieldValueTooLong", message: `Too long: may not be longer than ${max}` }];
  }
  if (!new RegExp(pattern).test(value)) {
    return [
      {
        path,
        type: "FieldValueInvalid",
        message: `Invalid value: ${JSON.stringify(value)}: a lowercase RFC 1123 name must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character`,
      },
    ];
  }
  return [];
}

function semanticChecks(kind: KindName, obj: unknown): FieldError[] {
  switch (kind) {
    case "TrainingRun":
      return checkTrainingRun(obj as TrainingRun);
    case "CloudProvider":
      return checkCloudProvider(obj as CloudProvider);
    case "DataSet":
      return checkDataSet(obj as DataSet);
    case "ProvisionedCluster":
      return checkProvisionedCluster(obj as ProvisionedCluster);
    default:
      return [];
  }
}

function checkDuration(path: string, value: string | undefined, minMs: number, maxMs: number): FieldError[] {
  if (value === undefined) return [];
  const ms = parseDuration(value);
  if (ms < minMs || ms > maxMs) {
    return [
      {
        path,
        type: "FieldValueInvalid",
        message: `Invalid value: "${value}": must be between ${minMs / 1000}s and ${maxMs / 3_600_000}h`,
      },
    ];
  }
  return [];
}

/** Pod settings Spillway refuses to dispatch to another cluster: they would escape the run's sandboxing. */
const FORBIDDEN_POD_FIELDS = ["hostNetwork", "hostPID", "hostIPC", "nodeName"] as const;

function checkTrainingRun(run: TrainingRun): FieldError[] {
  const errors: FieldError[] = [];
  const spec = run.spec;
  errors.push(
    ...checkDuration(
      "spec.placement.rofr.decisionTimeout",
      spec.placement?.rofr?.decisionTimeout,
      1000,
      24 * 3_600_000,
    ),
  );
  const podSpec = spec.template.spec as Record<string, unknown>;
  for (const f of FORBIDDEN_POD_FIELDS) {
    if (podSpec[f] !== undefined && podSpec[f] !== false) {
      errors.push({
        path: `spec.template.spec.${f}`,
        type: "FieldValueForbidden",
        message: `Forbidden: Spillway does not dispatch pods with ${f}`,
      });
    }
  }
  const names = new Set<string>();
  spec.template.spec.containers.forEach((c, i) => {
    if (names.has(c.name)) {
      errors.push({
        path: `spec.template.spec.containers[${i}].name`,
        type: "FieldValueDuplicate",
        message: `Duplicate value: "${c.name}"`,
      });
    }
    names.add(c.name);
    const sc = c.securityContext as { privileged?: boolean; allowPrivilegeEscalation?: boolean } | undefined;
    if (sc?.privileged === true) {
      errors.push({
        path: `spec.template.spec.containers[${i}].securityContext.privileged`,
        type: "FieldValueForbidden",
        message: "Forbidden: Spillway does not dispatch privileged containers",
      });
    }
  });
  const volumes = (podSpec.volumes ?? []) as Array<Record<string, unknown>>;
  if (Array.isArray(volumes)) {
    volumes.forEach((v, i) => {
      if (v && typeof v === "object" && "hostPath" in v) {
        errors.push({
          path: `spec.template.spec.volumes[${i}].hostPath`,
          type: "FieldValueForbidden",
          message: "Forbidden: hostPath volumes are not dispatched to remote clusters",
        });
      }
    });
  }
  const cp = spec.checkpoints?.path;
  const mount = spec.data?.mountPath;
  if (cp && mount && (cp === mount || cp.startsWith(`${mount.replace(/\/$/, "")}/`))) {
    errors.push({
      path: "spec.checkpoints.path",
      type: "FieldValueInvalid",
      message: `Invalid value: "${cp}": the checkpoint path may not be inside the dataset mount ${mount}`,
    });
  }
  return errors;
}

function checkCloudProvider(cp: CloudProvider): FieldError[] {
  const errors: FieldError[] = [];
  const offered = new Set(cp.spec.capacity.gpus.map((g) => g.type));
  const seen = new Set<string>();
  cp.spec.capacity.gpus.forEach((g, i) => {
    if (seen.has(g.type)) {
      errors.push({
        path: `spec.capacity.gpus[${i}].type`,
        type: "FieldValueDuplicate",
        message: `Duplicate value: "${g.type}"`,
      });
    }
    seen.add(g.type);
  });
  (cp.spec.pricing?.gpus ?? []).forEach((p, i) => {
    if (!offered.has(p.type)) {
      errors.push({
        path: `spec.pricing.gpus[${i}].type`,
        type: "FieldValueInvalid",
        message: `Invalid value: "${p.type}": not a GPU type listed in spec.capacity.gpus`,
      });
    }
    if (p.floorPerGpuHour !== undefined && p.floorPerGpuHour > p.pricePerGpuHour) {
      errors.push({
        path: `spec.pricing.gpus[${i}].floorPerGpuHour`,
        type: "FieldValueInvalid",
        message: `Invalid value: ${p.floorPerGpuHour}: the floor may not exceed the list price ${p.pricePerGpuHour}`,
      });
    }
  });
  errors.push(
    ...checkDuration(
      "spec.cluster.provision.idleTTL",
      cp.spec.cluster.provision?.idleTTL,
      0,
      30 * 24 * 3_600_000,
    ),
  );
  return errors;
}

function checkDataSet(ds: DataSet): FieldError[] {
  const errors: FieldError[] = [];
  (ds.spec.replicas ?? []).forEach((r, i) => {
    if (r.provider === ds.spec.source.provider) {
      errors.push({
        path: `spec.replicas[${i}].provider`,
        type: "FieldValueInvalid",
        message: `Invalid value: "${r.provider}": the source provider cannot also be a replica`,
      });
    }
  });
  errors.push(
    ...checkDuration("spec.syncPolicy.interval", ds.spec.syncPolicy?.interval, 10_000, 7 * 24 * 3_600_000),
  );
  return errors;
}

function checkProvisionedCluster(pc: ProvisionedCluster): FieldError[] {
  const errors: FieldError[] = [];
  const names = new Set<string>();
  pc.spec.nodePools.forEach((p, i) => {
    if (names.has(p.name)) {
      errors.push({
        path: `spec.nodePools[${i}].name`,
        type: "FieldValueDuplicate",
        message: `Duplicate value: "${p.name}"`,
      });
    }
    names.add(p.name);
  });
  return errors;
}

/**
 * Cross-object rule no schema can hold: at most one CloudProvider is the primary. Returns
 * the names of the primaries when there is more than one (each then gets a condition).
 */
export function conflictingPrimaries(providers: readonly CloudProvider[]): string[] {
  const primaries = providers.filter((p) => p.spec.role === "primary" && !p.metadata.deletionTimestamp);
  return primaries.length > 1 ? primaries.map((p) => p.metadata.name!).sort() : [];
}
