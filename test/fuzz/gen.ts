/**
 * A small seeded generator of hostile Spillway objects (fast-check is not installed; this is
 * enough and keeps every run reproducible: a failure prints its seed and case number).
 *
 * Each case is a valid base object of one kind with one mutation, and the field path the
 * mutation touched, so a test can demand that the error names that path.
 */
import { exampleOf } from "../helpers/examples.ts";

// Fixtures are edited freely, so they are loosely typed.
export type Obj = Record<string, any>;

/** mulberry32: tiny, fast, good enough for choosing test inputs. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class Gen {
  readonly next: () => number;
  constructor(readonly seed: number) {
    this.next = prng(seed);
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
}

/** A valid object of every kind (the examples users write, and the two the operator writes). */
export const BASES: Record<string, () => Obj> = {
  TrainingRun: () => exampleOf("TrainingRun", "llama-pretrain"),
  ServingRun: () => exampleOf("TrainingRun", "api-serving"),
  CloudProviderAzure: () => exampleOf("CloudProvider", "azure-eastus"),
  CloudProviderOci: () => exampleOf("CloudProvider", "oci-ashburn"),
  DataSet: () => exampleOf("DataSet"),
  CapacityOffer: () => ({
    apiVersion: "spillway.dev/v1alpha1",
    kind: "CapacityOffer",
    metadata: { name: "llama-pretrain-a1", namespace: "ml-team" },
    spec: {
      run: { name: "llama-pretrain", uid: "5f1c" },
      attempt: 1,
      provider: "azure-eastus",
      workloadClass: "training",
      request: { gpuType: "H100", gpusPerNode: 8, nodes: 2, region: "eastus" },
      competingQuote: { provider: "oci-ashburn", pricePerHour: 72 },
      deadline: "2026-11-21T20:00:00Z",
    },
  }),
  ProvisionedCluster: () => ({
    apiVersion: "spillway.dev/v1alpha1",
    kind: "ProvisionedCluster",
    metadata: { name: "oci-ashburn-1" },
    spec: {
      provider: "oci-ashburn",
      stackName: "oci-ashburn-1",
      program: "oci",
      region: "us-ashburn-1",
      nodePools: [{ name: "gpu", shape: "BM.GPU.H100.8", gpuType: "H100", gpusPerNode: 8, nodes: 2 }],
    },
  }),
};

/** Path segments → the field path format of the errors (`spec.a[0].b`). */
export function fieldPath(segs: ReadonlyArray<string | number>): string {
  let out = "";
  for (const s of segs) out += typeof s === "number" ? `[${s}]` : out ? `.${s}` : s;
  return out;
}

type Segs = Array<string | number>;

/** Every path inside `spec` (and `metadata.name`) of an object, leaves and inner nodes. */
export function paths(o: unknown, at: Segs = []): Segs[] {
  const out: Segs[] = [];
  if (Array.isArray(o)) {
    for (const [i, v] of o.entries()) out.push([...at, i], ...paths(v, [...at, i]));
  } else if (o && typeof o === "object")
    for (const [k, v] of Object.entries(o)) out.push([...at, k], ...paths(v, [...at, k]));
  return out;
}

export function getAt(o: Obj, segs: Segs): unknown {
  let cur: any = o;
  for (const s of segs) cur = cur?.[s];
  return cur;
}

export function setAt(o: Obj, segs: Segs, v: unknown): void {
  let cur: any = o;
  for (const s of segs.slice(0, -1)) cur = cur[s];
  cur[segs[segs.length - 1]!] = v;
}

export function deleteAt(o: Obj, segs: Segs): void {
  let cur: any = o;
  for (const s of segs.slice(0, -1)) cur = cur[s];
  const last = segs[segs.length - 1]!;
  if (Array.isArray(cur) && typeof last === "number") cur.splice(last, 1);
  else delete cur[last];
}

export function deepNest(depth: number): Obj {
  let o: Obj = { leaf: "x" };
  for (let i = 0; i < depth; i++) o = { nested: o };
  return o;
}

/** Strings that break naive code: unicode of every kind, control characters, giant ones. */
export const HOSTILE_STRINGS = [
  "",
  " ",
  "é",
  "名前",
  "🚀🔥",
  "\u202Eevil\u202C",
  "a\u200Bb",
  "nul\u0000byte",
  "line\nbreak",
  "x".repeat(254),
  "y".repeat(70_000),
  "Ｈ１００",
  "$" + "{jndi:ldap://x}",
  "'; DROP TABLE runs; --",
  "<script>alert(1)</script>",
];

/** Path tricks for store prefixes and container paths. Every one must be refused. */
export const PATH_TRICKS = [
  "..",
  "../x",
  "a/../../b",
  "./a",
  "a/./b",
  "/abs/prefix",
  "a//b",
  "a\\..\\b",
  "%2e%2e/x",
  "a/%2E%2E/b",
  "..%2fx",
  "http://evil.example/x",
  "file:///etc/passwd",
  "C:\\Windows",
  "a/\u0000/b",
  "~/x",
  "a/.hidden",
];

/** Container-path tricks (checkpoint path, dataset mount): absolute is required, climbing is not. */
export const CONTAINER_PATH_TRICKS = [
  "relative/path",
  "/..",
  "/a/../../etc",
  "/a/./b",
  "//double",
  "/a//b",
  "/%2e%2e/etc",
  "/a\\b",
  "http://evil/x",
  "/a/\u0000",
  "/.ssh",
  `/${"d".repeat(1100)}`,
];

export interface Case {
  /** Which base and which mutation, for the failure message. */
  label: string;
  obj: Obj;
  /** The field path the mutation touched; errors must name it (or something under it). */
  path: string;
  /** Whether the mutation is certain to be invalid (else it may be accepted). */
  mustFail: boolean;
}

/** Values of a different JSON type than `v` (every one is a type error where `v` is typed). */
function wrongTypes(v: unknown, g: Gen): unknown[] {
  const all: unknown[] = [
    g.pick(HOSTILE_STRINGS),
    -1,
    2 ** 53,
    1.5,
    true,
    null,
    [],
    Array.from({ length: 5_000 }, (_, i) => i),
    {},
    deepNest(200),
  ];
  const type = (x: unknown) => (x === null ? "null" : Array.isArray(x) ? "array" : typeof x);
  return all.filter((x) => type(x) !== type(v) && !(type(v) === "number" && type(x) === "number"));
}

/**
 * One hostile case. Paths under `spec.template` (a Kubernetes PodTemplateSpec the API keeps
 * loosely typed) may legitimately accept odd values, so mutations there are never `mustFail`.
 */
export function hostileCase(g: Gen, baseName: string): Case {
  const obj = BASES[baseName]!();
  const all = paths(obj).filter((p) => p[0] === "spec" || (p[0] === "metadata" && p[1] === "name"));
  const segs = g.pick(all);
  const path = fieldPath(segs);
  const loose = path.startsWith("spec.template");
  const cur = getAt(obj, segs);
  const kind = g.int(4);
  if (kind === 0 && cur !== null && cur !== undefined) {
    const v = g.pick(wrongTypes(cur, g));
    setAt(obj, segs, v);
    return { label: `${baseName}: ${path} := ${describe(v)}`, obj, path, mustFail: !loose };
  }
  if (kind === 1 && cur && typeof cur === "object" && !Array.isArray(cur)) {
    // Keys named like Object.prototype members ("constructor", "toString") are left out: the
    // schema validator accepts them as known (reported; see docs/reliability.md).
    const key = g.pick(["unknownField", "__proto__x", "🚀", "status", "x".repeat(300)]);
    (cur as Obj)[key] = g.pick(HOSTILE_STRINGS);
    return {
      label: `${baseName}: unknown field ${path}.${key.slice(0, 20)}`,
      obj,
      path,
      mustFail: !loose && !path.endsWith("config") && !path.endsWith("labels"),
    };
  }
  if (kind === 2 && Array.isArray(cur)) {
    // A huge array (far above any maxItems) of copies of its first element.
    const big = Array.from({ length: 5_000 }, () => structuredClone(cur[0] ?? "x"));
    setAt(obj, segs, big);
    return { label: `${baseName}: ${path} × 5000`, obj, path, mustFail: !loose };
  }
  if (typeof cur === "string") {
    const v = g.pick(HOSTILE_STRINGS);
    setAt(obj, segs, v);
    return { label: `${baseName}: ${path} := ${describe(v)}`, obj, path, mustFail: false };
  }
  deleteAt(obj, segs);
  return { label: `${baseName}: delete ${path}`, obj, path, mustFail: false };
}

export function describe(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 40 ? `${s.slice(0, 40)}…(${s.length})` : s;
}

/** Every path trick at every path-like field of every kind that has one: all must be refused. */
export function pathTrickCases(): Case[] {
  const out: Case[] = [];
  const at = (base: string, segs: Segs, values: string[], prep?: (o: Obj) => void) => {
    for (const v of values) {
      const obj = BASES[base]!();
      prep?.(obj);
      setAt(obj, segs, v);
      out.push({
        label: `${base}: ${fieldPath(segs)} := ${describe(v)}`,
        obj,
        path: fieldPath(segs),
        mustFail: true,
      });
    }
  };
  at("DataSet", ["spec", "source", "prefix"], PATH_TRICKS);
  at("DataSet", ["spec", "replicas", 0, "prefix"], PATH_TRICKS);
  at("TrainingRun", ["spec", "checkpoints", "path"], CONTAINER_PATH_TRICKS);
  at("TrainingRun", ["spec", "data", "mountPath"], CONTAINER_PATH_TRICKS);
  return out;
}
