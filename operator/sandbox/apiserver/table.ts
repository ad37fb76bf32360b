/**
 * Server-side printing: the `meta.k8s.io/v1` Table that `kubectl get` asks for
 * (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`). Custom resources get their CRD's
 * `additionalPrinterColumns` (evaluated with JSONPath, dates shown as ages); a CRD without
 * columns gets Name and Age, as the real server defaults them. A few built-in kinds get the
 * columns kubectl users expect; every other kind prints Name and Age.
 */

import { jsonPath } from "./jsonpath.ts";
import { isPlainObject } from "./patch.ts";
import type { JsonObject, KubeObject, PrinterColumn, ResourceType } from "./types.ts";

export type IncludeObject = "None" | "Metadata" | "Object";

interface Column {
  def: PrinterColumn;
  cell(obj: KubeObject, now: number): unknown;
}

const NAME_COLUMN: Column = {
  def: {
    name: "Name",
    type: "string",
    format: "name",
    description:
      "Name must be unique within a namespace. More info: http://kubernetes.io/docs/user-guide/identifiers#names",
    priority: 0,
    jsonPath: ".metadata.name",
  },
  cell: (o) => o.metadata.name ?? "",
};

const AGE_COLUMN: PrinterColumn = {
  name: "Age",
  type: "date",
  jsonPath: ".metadata.creationTimestamp",
  description: "CreationTimestamp is a timestamp representing the server time when this object was created.",
};

/** Go's `duration.HumanDuration`, which kubectl's AGE column shows. */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < -1) return "<invalid>";
  if (seconds < 0) return "0s";
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 10) return seconds % 60 === 0 ? `${minutes}m` : `${minutes}m${seconds % 60}s`;
  if (minutes < 180) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 8) return minutes % 60 === 0 ? `${hours}h` : `${hours}h${minutes % 60}m`;
  if (hours < 48) return `${hours}h`;
  if (hours < 24 * 8) return hours % 24 === 0 ? `${hours / 24}d` : `${Math.floor(hours / 24)}d${hours % 24}h`;
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24)}d`;
  const days = Math.floor(hours / 24);
  if (hours < 24 * 365 * 8)
    return days % 365 === 0 ? `${days / 365}y` : `${Math.floor(days / 365)}y${days % 365}d`;
  return `${Math.floor(days / 365)}y`;
}

function age(value: unknown, now: number): unknown {
  if (typeof value !== "string") return value ?? null;
  const t = Date.parse(value);
  return Number.isNaN(t) ? "<invalid>" : humanDuration(now - t);
}

/** A printer column's cell: the JSONPath's values (joined when several), dates as ages. */
function jsonPathColumn(def: PrinterColumn): Column {
  return {
    def: { ...def, priority: def.priority ?? 0, format: def.format ?? "" },
    cell(obj, now) {
      let values: unknown[];
      try {
        values = jsonPath(def.jsonPath, obj);
      } catch {
        return null;
      }
      if (values.length === 0) return null;
      if (def.type === "date") return age(values[0], now);
      if (values.length === 1) {
        const v = values[0];
        return isPlainObject(v) || Array.isArray(v) ? JSON.stringify(v) : v;
      }
      return values.map((v) => (typeof v === "string" ? v : JSON.stringify(v))).join(",");
    },
  };
}

function computed(
  name: string,
  cell: (o: KubeObject) => unknown,
  extra: Partial<PrinterColumn> = {},
): Column {
  return { def: { name, type: "string", jsonPath: "", priority: 0, ...extra }, cell };
}

function field(o: KubeObject, ...path: string[]): unknown {
  let cur: unknown = o;
  for (const k of path) cur = isPlainObject(cur) ? cur[k] : undefined;
  return cur;
}

function count(v: unknown): number {
  return isPlainObject(v) ? Object.keys(v).length : Array.isArray(v) ? v.length : 0;
}

function podStatus(o: KubeObject): string {
  if (o.metadata.deletionTimestamp) return "Terminating";
  const reason = field(o, "status", "reason");
  if (typeof reason === "string") return reason;
  const statuses = field(o, "status", "containerStatuses");
  if (Array.isArray(statuses)) {
    for (const s of statuses) {
      const waiting = field(s as KubeObject, "state", "waiting", "reason");
      if (typeof waiting === "string") return waiting;
      const terminated = field(s as KubeObject, "state", "terminated", "reason");
      if (typeof terminated === "string") return terminated;
    }
  }
  return String(field(o, "status", "phase") ?? "Pending");
}

function podReady(o: KubeObject): string {
  const containers = field(o, "spec", "containers");
  const statuses = field(o, "status", "containerStatuses");
  const total = Array.isArray(containers) ? containers.length : 0;
  const ready = Array.isArray(statuses)
    ? statuses.filter((s) => isPlainObject(s) && s.ready === true).length
    : 0;
  return `${ready}/${total}`;
}

function podRestarts(o: KubeObject): number {
  const statuses = field(o, "status", "containerStatuses");
  if (!Array.isArray(statuses)) return 0;
  return statuses.reduce((n: number, s) => n + (isPlainObject(s) ? Number(s.restartCount ?? 0) : 0), 0);
}

function jobStatus(o: KubeObject): string {
  const conditions = field(o, "status", "conditions");
  if (Array.isArray(conditions)) {
    for (const t of ["Complete", "Failed", "Suspended"]) {
      if (conditions.some((c) => isPlainObject(c) && c.type === t && c.status === "True"))
        return t === "Suspended" ? "Suspended" : t;
    }
  }
  return o.metadata.deletionTimestamp ? "Terminating" : "Running";
}

function servicePorts(o: KubeObject): string {
  const ports = field(o, "spec", "ports");
  if (!Array.isArray(ports) || ports.length === 0) return "<none>";
  return ports
    .map((p) =>
      isPlainObject(p) ? `${p.port}${p.nodePort ? `:${p.nodePort}` : ""}/${p.protocol ?? "TCP"}` : "",
    )
    .join(",");
}

const age_ = jsonPathColumn(AGE_COLUMN);

/** An Event's LAST SEEN: its last timestamp (or event time, or creation) as an age. */
function eventAge(o: KubeObject, now: number): unknown {
  const t = o.lastTimestamp ?? o.eventTime ?? o.metadata.creationTimestamp;
  return age(t, now);
}

/** Columns of the built-in kinds that have more than Name and Age. */
const BUILTIN_COLUMNS: Record<string, Column[]> = {
  "/namespaces": [computed("Status", (o) => field(o, "status", "phase") ?? "Active"), age_],
  "/pods": [
    computed("Ready", podReady),
    computed("Status", podStatus),
    computed("Restarts", podRestarts, { type: "string" }),
    age_,
    computed("IP", (o) => field(o, "status", "podIP") ?? "<none>", { priority: 1 }),
    computed("Node", (o) => field(o, "spec", "nodeName") ?? "<none>", { priority: 1 }),
  ],
  "batch/jobs": [
    computed("Status", jobStatus),
    computed(
      "Completions",
      (o) => `${field(o, "status", "succeeded") ?? 0}/${field(o, "spec", "completions") ?? 1}`,
    ),
    age_,
  ],
  "/configmaps": [computed("Data", (o) => count(o.data) + count(o.binaryData), { type: "integer" }), age_],
  "/secrets": [
    computed("Type", (o) => o.type ?? "Opaque"),
    computed("Data", (o) => count(o.data), { type: "integer" }),
    age_,
  ],
  "/services": [
    computed("Type", (o) => field(o, "spec", "type") ?? "ClusterIP"),
    computed("Cluster-IP", (o) => field(o, "spec", "clusterIP") ?? "<none>"),
    computed("External-IP", () => "<none>"),
    computed("Port(s)", servicePorts),
    age_,
  ],
  "/nodes": [
    computed("Status", (o) => {
      const conditions = field(o, "status", "conditions");
      const ready =
        Array.isArray(conditions) &&
        conditions.some((c) => isPlainObject(c) && c.type === "Ready" && c.status === "True");
      return ready ? "Ready" : "NotReady";
    }),
    age_,
  ],
  "apps/deployments": [
    computed(
      "Ready",
      (o) => `${field(o, "status", "readyReplicas") ?? 0}/${field(o, "spec", "replicas") ?? 1}`,
    ),
    computed("Up-to-date", (o) => field(o, "status", "updatedReplicas") ?? 0, { type: "integer" }),
    computed("Available", (o) => field(o, "status", "availableReplicas") ?? 0, { type: "integer" }),
    age_,
  ],
  "/events": [
    computed("Last Seen", (o) => eventAge(o, Date.now()), { type: "string" }),
    computed("Type", (o) => o.type ?? ""),
    computed("Reason", (o) => o.reason ?? ""),
    computed("Object", (o) => {
      const ref = isPlainObject(o.involvedObject) ? o.involvedObject : {};
      return `${String(ref.kind ?? "").toLowerCase()}/${ref.name ?? ""}`;
    }),
    computed("Message", (o) => o.message ?? ""),
    // As on a real server: events list without their (generated) names unless -o wide.
    { ...NAME_COLUMN, def: { ...NAME_COLUMN.def, priority: 1 } },
  ],
  "events.k8s.io/events": [
    computed("Last Seen", (o) =>
      age(o.deprecatedLastTimestamp ?? o.eventTime ?? o.metadata.creationTimestamp, Date.now()),
    ),
    computed("Type", (o) => o.type ?? ""),
    computed("Reason", (o) => o.reason ?? ""),
    computed("Object", (o) => {
      const ref = isPlainObject(o.regarding) ? o.regarding : {};
      return `${String(ref.kind ?? "").toLowerCase()}/${ref.name ?? ""}`;
    }),
    computed("Message", (o) => o.note ?? ""),
    { ...NAME_COLUMN, def: { ...NAME_COLUMN.def, priority: 1 } },
  ],
  "coordination.k8s.io/leases": [computed("Holder", (o) => field(o, "spec", "holderIdentity") ?? ""), age_],
  "apiextensions.k8s.io/customresourcedefinitions": [
    computed("Created At", (o) => o.metadata.creationTimestamp ?? null, { type: "date" }),
  ],
};

function columnsFor(rt: ResourceType, version: string): Column[] {
  const custom = rt.custom?.byVersion.get(version);
  if (custom) {
    const cols = custom.columns.length > 0 ? custom.columns : [AGE_COLUMN];
    return [NAME_COLUMN, ...cols.map(jsonPathColumn)];
  }
  const builtin = BUILTIN_COLUMNS[`${rt.group}/${rt.plural}`] ?? [age_];
  return builtin.some((c) => c.def.name === "Name") ? builtin : [NAME_COLUMN, ...builtin];
}

function partialMetadata(obj: KubeObject): JsonObject {
  return { kind: "PartialObjectMetadata", apiVersion: "meta.k8s.io/v1", metadata: obj.metadata };
}

export interface TableOptions {
  includeObject: IncludeObject;
  /** Column definitions are sent once per watch; list and get always carry them. */
  withColumns: boolean;
  listMeta?: { resourceVersion?: string; continue?: string; remainingItemCount?: number };
}

export function toTable(
  rt: ResourceType,
  version: string,
  objs: KubeObject[],
  opts: TableOptions,
): JsonObject {
  const columns = columnsFor(rt, version);
  const now = Date.now();
  return {
    kind: "Table",
    apiVersion: "meta.k8s.io/v1",
    metadata: opts.listMeta ?? {},
    columnDefinitions: opts.withColumns
      ? columns.map((c) => ({
          name: c.def.name,
          type: c.def.type,
          format: c.def.format ?? "",
          description: c.def.description ?? "",
          priority: c.def.priority ?? 0,
        }))
      : [],
    rows: objs.map((o) => ({
      cells: columns.map((c) => c.cell(o, now) ?? null),
      ...(opts.includeObject === "None"
        ? {}
        : { object: opts.includeObject === "Object" ? o : partialMetadata(o) }),
    })),
  };
}

export function includeObjectOf(q: URLSearchParams): IncludeObject {
  const v = q.get("includeObject");
  return v === "None" || v === "Object" ? v : "Metadata";
}
