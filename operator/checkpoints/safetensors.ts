/**
 * The safetensors format, read and written without the Python package:
 *
 *   [8 bytes: header length N, unsigned little-endian] [N bytes: JSON header] [data section]
 *
 * The header maps tensor names to `{dtype, shape, data_offsets: [begin, end]}` (offsets are
 * relative to the data section) plus an optional `__metadata__` string map. We validate it as
 * strictly as the reference implementation does, because a checkpoint is untrusted input: a
 * length that overflows the file, offsets outside the data, overlapping or gapped tensors,
 * or a byte length that disagrees with dtype × shape are all refused with a message that
 * names the tensor and the numbers.
 */
import { open } from "node:fs/promises";

/** The reference implementation's cap (safetensors `MAX_HEADER_SIZE`): 100 MB. */
export const MAX_HEADER_BYTES = 100_000_000;

/** Bits per element of each dtype safetensors defines. */
export const DTYPE_BITS: Readonly<Record<string, number>> = {
  BOOL: 8,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  C64: 64,
  I64: 64,
  U64: 64,
  F64: 64,
};

export interface TensorInfo {
  name: string;
  dtype: string;
  shape: number[];
  /** Offsets relative to the start of the data section. */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** Byte length of the JSON header (without the 8-byte prefix). */
  headerBytes: number;
  /** Absolute file offset where the data section starts (8 + headerBytes). */
  dataStart: number;
  tensors: TensorInfo[];
  metadata: Record<string, string>;
}

export class SafetensorsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SafetensorsError";
  }
}

/**
 * Parses and validates a header. `fileSize` is the size of the whole file; `headerJson` the
 * N bytes following the 8-byte prefix (the caller read them, having checked N first with
 * {@link checkHeaderLength}).
 */
export function parseSafetensorsHeader(headerJson: Uint8Array, fileSize: number): SafetensorsHeader {
  const headerBytes = headerJson.length;
  const dataStart = 8 + headerBytes;
  const dataSize = fileSize - dataStart;
  if (headerBytes === 0 || headerJson[0] !== 0x7b /* { */) {
    throw new SafetensorsError("safetensors header is not a JSON object (must start with '{')");
  }
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerJson));
  } catch (e) {
    throw new SafetensorsError(`safetensors header is not valid UTF-8 JSON: ${(e as Error).message}`);
  }
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) {
    throw new SafetensorsError("safetensors header is not a JSON object");
  }
  const metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  for (const [name, value] of Object.entries(raw as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (!value || typeof value !== "object" || Array.isArray(value)) {
        throw new SafetensorsError("safetensors __metadata__ must be an object of strings");
      }
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== "string")
          throw new SafetensorsError(`safetensors __metadata__.${k} is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    tensors.push(parseTensor(name, value, dataSize));
  }
  // Tensors must tile the data section exactly, in offset order: no overlap, no hole, no tail.
  const ordered = [...tensors].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let expected = 0;
  for (const t of ordered) {
    if (t.begin < expected) {
      throw new SafetensorsError(
        `safetensors tensor "${t.name}" overlaps the previous tensor (starts at ${t.begin}, previous ends at ${expected})`,
      );
    }
    if (t.begin > expected) {
      throw new SafetensorsError(
        `safetensors tensor "${t.name}" leaves a gap: starts at ${t.begin}, previous data ends at ${expected}`,
      );
    }
    expected = t.end;
  }
  if (expected !== dataSize) {
    throw new SafetensorsError(
      `safetensors data section is ${dataSize} bytes but the tensors cover ${expected} (truncated or padded file)`,
    );
  }
  return { headerBytes, dataStart, tensors: tensors.sort(byName), metadata };
}

function byName(a: TensorInfo, b: TensorInfo): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

function parseTensor(name: string, value: unknown, dataSize: number): TensorInfo {
  const where = `safetensors tensor "${name}"`;
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    throw new SafetensorsError(`${where} is not an object`);
  }
  const v = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  if (typeof v.dtype !== "string" || !(v.dtype in DTYPE_BITS)) {
    throw new SafetensorsError(`${where} has unknown dtype ${JSON.stringify(v.dtype)}`);
  }
  if (!Array.isArray(v.shape) || !v.shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
    throw new SafetensorsError(`${where} shape must be an array of non-negative integers`);
  }
  const offsets = v.data_offsets;
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o) && (o as number) >= 0)
  ) {
    throw new SafetensorsError(`${where} data_offsets must be two non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (end < begin) throw new SafetensorsError(`${where} data_offsets end ${end} is before begin ${begin}`);
  if (end > dataSize) {
    throw new SafetensorsError(
      `${where} data_offsets [${begin}, ${end}] run past the data section (${dataSize} bytes)`,
    );
  }
  // BigInt: a lying shape can multiply past 2^53.
  const elements = (v.shape as number[]).reduce((n, d) => n * BigInt(d), 1n);
  const bits = elements * BigInt(DTYPE_BITS[v.dtype]!);
  if (bits % 8n !== 0n) {
    throw new SafetensorsError(`${where}: ${elements} elements of ${v.dtype} is not a whole number of bytes`);
  }
  if (bits / 8n !== BigInt(end - begin)) {
    throw new SafetensorsError(
      `${where}: dtype ${v.dtype} × shape [${(v.shape as number[]).join(", ")}] is ${bits / 8n} bytes but data_offsets span ${end - begin}`,
    );
  }
  return { name, dtype: v.dtype, shape: [...(v.shape as number[])], begin, end };
}

/** Checks the 8-byte prefix against the file size and the cap; returns the header length. */
export function checkHeaderLength(prefix: Uint8Array, fileSize: number): number {
  if (fileSize < 8 || prefix.length < 8) {
    throw new SafetensorsError(
      `safetensors file is ${fileSize} bytes: too short for the 8-byte header length`,
    );
  }
  const n = Buffer.from(prefix.buffer, prefix.byteOffset, 8).readBigUInt64LE(0);
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(`safetensors header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte cap`);
  }
  if (n + 8n > BigInt(fileSize)) {
    throw new SafetensorsError(
      `safetensors header length ${n} overflows the file (${fileSize} bytes, header would end at ${n + 8n})`,
    );
  }
  return Number(n);
}

/** Reads and validates the header of a file on disk, reading only the header bytes. */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  const fh = await open(path, "r");
  try {
    const size = (await fh.stat()).size;
    const prefix = Buffer.alloc(8);
    await fh.read(prefix, 0, Math.min(8, size), 0);
    const n = checkHeaderLength(prefix, size);
    const json = Buffer.alloc(n);
    await fh.read(json, 0, n, 8);
    return parseSafetensorsHeader(json, size);
  } finally {
    await fh.close();
  }
}

/** Parses a whole safetensors file held in memory. */
export function parseSafetensors(file: Uint8Array): SafetensorsHeader {
  const n = checkHeaderLength(file.subarray(0, 8), file.length);
  return parseSafetensorsHeader(file.subarray(8, 8 + n), file.length);
}

export interface TensorData {
  dtype: string;
  shape: number[];
  data: Uint8Array;
}

/**
 * Encodes tensors as a safetensors file (names sorted, data in that order, header padded with
 * spaces to 8 bytes as the reference writer does). Used by the sandbox trainer and the tests.
 */
export function encodeSafetensors(
  tensors: Record<string, TensorData>,
  metadata?: Record<string, string>,
): Buffer {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const name of names) {
    const t = tensors[name]!;
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.length] };
    offset += t.data.length;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const headerBuf = Buffer.from(json, "utf8");
  const out = Buffer.alloc(8 + headerBuf.length + offset);
  out.writeBigUInt64LE(BigInt(headerBuf.length), 0);
  headerBuf.copy(out, 8);
  let at = 8 + headerBuf.length;
  for (const name of names) {
    out.set(tensors[name]!.data, at);
    at += tensors[name]!.data.length;
  }
  return out;
}
