/**
 * Request bodies in Kubernetes' protobuf encoding, for the few kinds typed Go clients write
 * that Spillway's tools depend on: helm keeps releases in Secrets (and deletes them with
 * DeleteOptions), `kubectl create secret|configmap|namespace|serviceaccount` send protobuf.
 * Responses are always JSON (client-go decodes by the response's content type).
 *
 * The envelope is the 4 bytes `k8s\0` then a `runtime.Unknown` {typeMeta=1, raw=2,
 * contentEncoding=3, contentType=4}; `raw` is the object in the field numbers of the
 * Kubernetes `generated.proto` files, reproduced below for the supported messages. A kind
 * without a schema here is refused with 415, which names the media types that work.
 */
import { errors } from "./errors.ts";
import type { JsonObject } from "./types.ts";

type FieldType = "string" | "bytes" | "int" | "bool" | "time" | "stringMap" | "bytesMap" | "message";

interface Field {
  name: string;
  type: FieldType;
  repeated?: boolean;
  message?: Schema;
}
type Schema = Record<number, Field>;

const OWNER_REFERENCE: Schema = {
  1: { name: "kind", type: "string" },
  3: { name: "name", type: "string" },
  4: { name: "uid", type: "string" },
  5: { name: "apiVersion", type: "string" },
  6: { name: "controller", type: "bool" },
  7: { name: "blockOwnerDeletion", type: "bool" },
};

const FIELDS_V1: Schema = { 1: { name: "Raw", type: "bytes" } };

const MANAGED_FIELDS_ENTRY: Schema = {
  1: { name: "manager", type: "string" },
  2: { name: "operation", type: "string" },
  3: { name: "apiVersion", type: "string" },
  4: { name: "time", type: "time" },
  6: { name: "fieldsType", type: "string" },
  7: { name: "fieldsV1", type: "message", message: FIELDS_V1 },
  8: { name: "subresource", type: "string" },
};

const OBJECT_META: Schema = {
  1: { name: "name", type: "string" },
  2: { name: "generateName", type: "string" },
  3: { name: "namespace", type: "string" },
  4: { name: "selfLink", type: "string" },
  5: { name: "uid", type: "string" },
  6: { name: "resourceVersion", type: "string" },
  7: { name: "generation", type: "int" },
  8: { name: "creationTimestamp", type: "time" },
  9: { name: "deletionTimestamp", type: "time" },
  10: { name: "deletionGracePeriodSeconds", type: "int" },
  11: { name: "labels", type: "stringMap" },
  12: { name: "annotations", type: "stringMap" },
  13: { name: "ownerReferences", type: "message", repeated: true, message: OWNER_REFERENCE },
  14: { name: "finalizers", type: "string", repeated: true },
  17: { name: "managedFields", type: "message", repeated: true, message: MANAGED_FIELDS_ENTRY },
};

const meta = { 1: { name: "metadata", type: "message", message: OBJECT_META } } as const satisfies Schema;
const NAME_ONLY: Schema = { 1: { name: "name", type: "string" } };
const OBJECT_REFERENCE: Schema = {
  1: { name: "kind", type: "string" },
  2: { name: "namespace", type: "string" },
  3: { name: "name", type: "string" },
  4: { name: "uid", type: "string" },
  5: { name: "apiVersion", type: "string" },
  6: { name: "resourceVersion", type: "string" },
  7: { name: "fieldPath", type: "string" },
};

/** By `group/Kind` (core group empty). */
const KINDS: Record<string, Schema> = {
  "/Secret": {
    ...meta,
    2: { name: "data", type: "bytesMap" },
    3: { name: "type", type: "string" },
    4: { name: "stringData", type: "stringMap" },
    5: { name: "immutable", type: "bool" },
  },
  "/ConfigMap": {
    ...meta,
    2: { name: "data", type: "stringMap" },
    3: { name: "binaryData", type: "bytesMap" },
    4: { name: "immutable", type: "bool" },
  },
  "/Namespace": {
    ...meta,
    2: {
      name: "spec",
      type: "message",
      message: { 1: { name: "finalizers", type: "string", repeated: true } },
    },
  },
  "/ServiceAccount": {
    ...meta,
    2: { name: "secrets", type: "message", repeated: true, message: OBJECT_REFERENCE },
    3: { name: "imagePullSecrets", type: "message", repeated: true, message: NAME_ONLY },
    4: { name: "automountServiceAccountToken", type: "bool" },
  },
};

const DELETE_OPTIONS: Schema = {
  1: { name: "gracePeriodSeconds", type: "int" },
  2: {
    name: "preconditions",
    type: "message",
    message: { 1: { name: "uid", type: "string" }, 2: { name: "resourceVersion", type: "string" } },
  },
  3: { name: "orphanDependents", type: "bool" },
  4: { name: "propagationPolicy", type: "string" },
  5: { name: "dryRun", type: "string", repeated: true },
};

const UNKNOWN: Schema = {
  1: {
    name: "typeMeta",
    type: "message",
    message: { 1: { name: "apiVersion", type: "string" }, 2: { name: "kind", type: "string" } },
  },
  2: { name: "raw", type: "bytes" },
};

const MAGIC = Buffer.from([0x6b, 0x38, 0x73, 0x00]);

class Reader {
  pos = 0;
  constructor(readonly buf: Buffer) {}

  done(): boolean {
    return this.pos >= this.buf.length;
  }

  varint(): number {
    let result = 0;
    let scale = 1;
    for (;;) {
      if (this.pos >= this.buf.length) throw new Error("truncated varint");
      const b = this.buf[this.pos++]!;
      result += (b & 0x7f) * scale;
      if (b < 0x80) return result;
      scale *= 128;
    }
  }

  bytes(): Buffer {
    const len = this.varint();
    const out = this.buf.subarray(this.pos, this.pos + len);
    if (out.length !== len) throw new Error("truncated field");
    this.pos += len;
    return out;
  }

  skip(wireType: number): void {
    if (wireType === 0) this.varint();
    else if (wireType === 1) this.pos += 8;
    else if (wireType === 2) this.bytes();
    else if (wireType === 5) this.pos += 4;
    else throw new Error(`unsupported wire type ${wireType}`);
  }
}

function rfc3339(seconds: number): string {
  return new Date(seconds * 1000).toISOString().replace(/\.\d+Z$/, "Z");
}

/** A map entry message: key = 1, value = 2. */
function mapEntry(buf: Buffer, bytesValue: boolean): [string, string] {
  const r = new Reader(buf);
  let key = "";
  let value = "";
  while (!r.done()) {
    const tag = r.varint();
    const field = Math.floor(tag / 8);
    if (field === 1) key = r.bytes().toString("utf8");
    else if (field === 2) {
      const b = r.bytes();
      // Secret data and ConfigMap binaryData are bytes: JSON carries them base64-encoded.
      value = bytesValue ? b.toString("base64") : b.toString("utf8");
    } else r.skip(tag & 7);
  }
  return [key, value];
}

function decodeMessage(buf: Buffer, schema: Schema): JsonObject {
  const out: JsonObject = {};
  const r = new Reader(buf);
  while (!r.done()) {
    const tag = r.varint();
    const wire = tag & 7;
    const f = schema[Math.floor(tag / 8)];
    if (!f) {
      r.skip(wire);
      continue;
    }
    let value: unknown;
    switch (f.type) {
      case "string":
        value = r.bytes().toString("utf8");
        break;
      case "bytes":
        value = r.bytes();
        break;
      case "int":
        value = r.varint();
        break;
      case "bool":
        value = r.varint() !== 0;
        break;
      case "time": {
        const t = decodeMessage(r.bytes(), { 1: { name: "seconds", type: "int" } });
        value = rfc3339(Number(t.seconds ?? 0));
        break;
      }
      case "stringMap":
      case "bytesMap": {
        const [k, v] = mapEntry(r.bytes(), f.type === "bytesMap");
        const map = (out[f.name] as Record<string, string> | undefined) ?? {};
        map[k] = v;
        out[f.name] = map;
        continue;
      }
      case "message":
        value = decodeMessage(r.bytes(), f.message!);
        break;
    }
    if (f.name === "fieldsV1" && Buffer.isBuffer((value as JsonObject).Raw)) {
      value = JSON.parse(((value as JsonObject).Raw as Buffer).toString("utf8"));
    }
    if (f.repeated) {
      const list = (out[f.name] as unknown[] | undefined) ?? [];
      list.push(value);
      out[f.name] = list;
    } else out[f.name] = value;
  }
  return out;
}

export function isProtobuf(contentType: string): boolean {
  return /application\/vnd\.kubernetes\.protobuf/i.test(contentType);
}

/**
 * The JSON form of a protobuf request body. `group/Kind` says what the URL expects; a body of
 * another kind (DeleteOptions on a DELETE) is decoded by the kind its envelope names.
 */
export function decodeProtobuf(body: Buffer, expected: { group: string; kind: string }): JsonObject {
  if (body.length < 4 || !body.subarray(0, 4).equals(MAGIC))
    throw errors.badRequest("protobuf body without the k8s envelope");
  let envelope: JsonObject;
  try {
    envelope = decodeMessage(body.subarray(4), UNKNOWN);
  } catch (e) {
    throw errors.badRequest(`malformed protobuf body: ${(e as Error).message}`);
  }
  const typeMeta = (envelope.typeMeta ?? {}) as { apiVersion?: string; kind?: string };
  const raw = Buffer.isBuffer(envelope.raw) ? envelope.raw : Buffer.alloc(0);
  const kind = typeMeta.kind || expected.kind;
  if (kind === "DeleteOptions")
    return { kind, apiVersion: typeMeta.apiVersion, ...decodeMessage(raw, DELETE_OPTIONS) };
  const schema = KINDS[`${expected.group}/${kind}`];
  if (!schema) {
    throw errors.unsupportedMediaType(
      `application/vnd.kubernetes.protobuf (the sandbox decodes protobuf only for ${Object.keys(KINDS)
        .map((k) => k.slice(1))
        .join(", ")}; send JSON)`,
    );
  }
  try {
    return { apiVersion: typeMeta.apiVersion, kind, ...decodeMessage(raw, schema) };
  } catch (e) {
    throw errors.badRequest(`malformed protobuf ${kind}: ${(e as Error).message}`);
  }
}
