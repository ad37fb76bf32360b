/**
 * Decodes the Kubernetes protobuf request bodies Helm sends into their JSON form.
 *
 * Helm v4 stores releases through client-go's typed Secret (or ConfigMap) client, which
 * always encodes request bodies as `application/vnd.kubernetes.protobuf` and does not fall
 * back to JSON on 415. The sandbox API server speaks JSON only, so the chart's install test
 * puts this translation in front of it (see install-proxy.ts). Only the messages Helm sends
 * are described: Secret, ConfigMap, DeleteOptions and what they contain. An unknown field
 * fails the decode rather than being dropped silently.
 *
 * Wire format: the 4 magic bytes "k8s\0", then a runtime.Unknown message
 * {typeMeta{apiVersion, kind}, raw, contentEncoding, contentType} whose `raw` is the object's
 * own message (k8s.io/api and apimachinery generated.proto field numbers).
 */

type FieldType =
  | "string"
  | "bytes"
  | "bool"
  | "int"
  | { message: string }
  | { map: "string" | "bytes" }
  | { repeated: "string" | { message: string } };

type MessageSpec = Record<number, [name: string, type: FieldType]>;

const MESSAGES: Record<string, MessageSpec> = {
  Unknown: {
    1: ["typeMeta", { message: "TypeMeta" }],
    2: ["raw", "bytes"],
    3: ["contentEncoding", "string"],
    4: ["contentType", "string"],
  },
  TypeMeta: { 1: ["apiVersion", "string"], 2: ["kind", "string"] },
  ObjectMeta: {
    1: ["name", "string"],
    2: ["generateName", "string"],
    3: ["namespace", "string"],
    4: ["selfLink", "string"],
    5: ["uid", "string"],
    6: ["resourceVersion", "string"],
    7: ["generation", "int"],
    8: ["creationTimestamp", { message: "Time" }],
    9: ["deletionTimestamp", { message: "Time" }],
    10: ["deletionGracePeriodSeconds", "int"],
    11: ["labels", { map: "string" }],
    12: ["annotations", { map: "string" }],
    13: ["ownerReferences", { repeated: { message: "OwnerReference" } }],
    14: ["finalizers", { repeated: "string" }],
  },
  OwnerReference: {
    1: ["kind", "string"],
    3: ["name", "string"],
    4: ["uid", "string"],
    5: ["apiVersion", "string"],
    6: ["controller", "bool"],
    7: ["blockOwnerDeletion", "bool"],
  },
  Time: { 1: ["seconds", "int"], 2: ["nanos", "int"] },
  Secret: {
    1: ["metadata", { message: "ObjectMeta" }],
    2: ["data", { map: "bytes" }],
    3: ["type", "string"],
    4: ["stringData", { map: "string" }],
    5: ["immutable", "bool"],
  },
  ConfigMap: {
    1: ["metadata", { message: "ObjectMeta" }],
    2: ["data", { map: "string" }],
    3: ["binaryData", { map: "bytes" }],
    4: ["immutable", "bool"],
  },
  DeleteOptions: {
    1: ["gracePeriodSeconds", "int"],
    2: ["preconditions", { message: "Preconditions" }],
    3: ["orphanDependents", "bool"],
    4: ["propagationPolicy", "string"],
    5: ["dryRun", { repeated: "string" }],
    6: ["ignoreStoreReadErrorWithClusterBreakingPotential", "bool"],
  },
  Preconditions: { 1: ["uid", "string"], 2: ["resourceVersion", "string"] },
};

/**
 * Fields that are pointers in Go (*int64, *bool, *string): written only when set, so a zero
 * value is meaningful (gracePeriodSeconds: 0 is "now") and is kept. Other scalars are always
 * written by Go, and their JSON form omits them when empty.
 */
const POINTER_FIELDS: Record<string, Set<string>> = {
  DeleteOptions: new Set(["gracePeriodSeconds", "orphanDependents", "propagationPolicy"]),
  ObjectMeta: new Set(["deletionGracePeriodSeconds"]),
  OwnerReference: new Set(["controller", "blockOwnerDeletion"]),
  Secret: new Set(["immutable"]),
  ConfigMap: new Set(["immutable"]),
};

const MAGIC = Buffer.from([0x6b, 0x38, 0x73, 0x00]);

class Reader {
  pos = 0;
  constructor(readonly buf: Buffer) {}
  done(): boolean {
    return this.pos >= this.buf.length;
  }
  varint(): bigint {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (this.pos >= this.buf.length) throw new Error("truncated varint");
      const b = this.buf[this.pos++]!;
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
      shift += 7n;
    }
  }
  bytes(): Buffer {
    const len = Number(this.varint());
    if (this.pos + len > this.buf.length) throw new Error("truncated length-delimited field");
    const out = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }
}

/** A signed int64 from its two's-complement varint. */
const toInt = (v: bigint): number => Number(BigInt.asIntN(64, v));

function decodeMapEntry(buf: Buffer, valueType: "string" | "bytes"): [string, string] {
  const r = new Reader(buf);
  let key = "";
  let value = "";
  while (!r.done()) {
    const tag = Number(r.varint());
    const field = tag >> 3;
    if ((tag & 7) !== 2) throw new Error(`map entry: unexpected wire type ${tag & 7}`);
    const b = r.bytes();
    if (field === 1) key = b.toString("utf8");
    else if (field === 2) value = valueType === "bytes" ? b.toString("base64") : b.toString("utf8");
  }
  return [key, value];
}

/** Decodes one message into a plain object (JSON field names; bytes as base64, as in JSON). */
export function decodeMessage(name: string, buf: Buffer): Record<string, unknown> {
  const spec = MESSAGES[name];
  if (!spec) throw new Error(`no protobuf description for ${name}`);
  const out: Record<string, unknown> = {};
  const r = new Reader(buf);
  while (!r.done()) {
    const tag = Number(r.varint());
    const field = tag >> 3;
    const wire = tag & 7;
    const entry = spec[field];
    if (!entry) throw new Error(`${name}: field ${field} is not described (wire type ${wire})`);
    const [key, type] = entry;
    const scalar = (v: unknown) => {
      if (POINTER_FIELDS[name]?.has(key) || (v !== "" && v !== 0 && v !== false)) out[key] = v;
    };
    if (type === "bool") scalar(r.varint() !== 0n);
    else if (type === "int") scalar(toInt(r.varint()));
    else if (type === "string") scalar(r.bytes().toString("utf8"));
    else if (type === "bytes") out[key] = r.bytes();
    else if ("message" in type) out[key] = decodeMessage(type.message, r.bytes());
    else if ("map" in type) {
      const [k, v] = decodeMapEntry(r.bytes(), type.map);
      out[key] = { ...((out[key] as Record<string, string>) ?? {}), [k]: v };
    } else {
      const item =
        type.repeated === "string"
          ? r.bytes().toString("utf8")
          : decodeMessage(type.repeated.message, r.bytes());
      out[key] = [...((out[key] as unknown[]) ?? []), item];
    }
  }
  return out;
}

/** metav1.Time is RFC 3339 in JSON. */
function fixTimes(meta: Record<string, unknown>): void {
  for (const k of ["creationTimestamp", "deletionTimestamp"]) {
    const t = meta[k] as { seconds?: number } | undefined;
    if (!t) continue;
    if (t.seconds) meta[k] = new Date(t.seconds * 1000).toISOString().replace(".000Z", "Z");
    else delete meta[k]; // the zero time is `null` in JSON
  }
}

/** A protobuf request body (with the k8s envelope) → its JSON object. */
export function decodeKubernetesProtobuf(body: Buffer): Record<string, unknown> {
  if (body.length < 4 || !body.subarray(0, 4).equals(MAGIC))
    throw new Error("not a Kubernetes protobuf body");
  const unknown = decodeMessage("Unknown", body.subarray(4));
  const typeMeta = (unknown.typeMeta ?? {}) as { apiVersion?: string; kind?: string };
  if (unknown.contentEncoding) throw new Error(`unsupported contentEncoding ${unknown.contentEncoding}`);
  const kind = typeMeta.kind ?? "";
  const obj = decodeMessage(kind, (unknown.raw as Buffer | undefined) ?? Buffer.alloc(0));
  if (obj.metadata) fixTimes(obj.metadata as Record<string, unknown>);
  return { apiVersion: typeMeta.apiVersion, kind, ...obj };
}
