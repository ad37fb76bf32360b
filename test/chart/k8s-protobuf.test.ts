/** The protobuf decoding the install test relies on, checked on hand-built messages. */
import { decodeKubernetesProtobuf } from "./k8s-protobuf.ts";

const varint = (n: number): number[] => {
  const out: number[] = [];
  let v = n;
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
};
const lenField = (field: number, bytes: Buffer | number[]): number[] => [
  ...varint((field << 3) | 2),
  ...varint(bytes.length),
  ...bytes,
];
const str = (field: number, s: string) => lenField(field, Buffer.from(s, "utf8"));
const intField = (field: number, n: number) => [...varint(field << 3), ...varint(n)];
const mapEntry = (field: number, k: string, v: Buffer | string) =>
  lenField(field, [...str(1, k), ...lenField(2, typeof v === "string" ? Buffer.from(v) : v)]);
const envelope = (apiVersion: string, kind: string, raw: number[]) =>
  Buffer.from([
    0x6b,
    0x38,
    0x73,
    0x00,
    ...lenField(1, [...str(1, apiVersion), ...str(2, kind)]),
    ...lenField(2, raw),
  ]);

test("a Secret as Helm writes it becomes the JSON a Kubernetes API server would accept", () => {
  const meta = [
    ...str(1, "sh.helm.release.v1.spillway.v1"),
    ...str(2, ""), // Go writes empty optional strings
    ...str(3, "spillway-system"),
    ...mapEntry(11, "owner", "helm"),
    ...mapEntry(11, "status", "deployed"),
    ...lenField(8, []), // zero creationTimestamp
  ];
  const raw = [
    ...lenField(1, meta),
    ...mapEntry(2, "release", Buffer.from([0, 1, 254, 255])),
    ...str(3, "helm.sh/release.v1"),
  ];
  expect(decodeKubernetesProtobuf(envelope("v1", "Secret", raw))).toEqual({
    apiVersion: "v1",
    kind: "Secret",
    metadata: {
      name: "sh.helm.release.v1.spillway.v1",
      namespace: "spillway-system",
      labels: { owner: "helm", status: "deployed" },
    },
    data: { release: Buffer.from([0, 1, 254, 255]).toString("base64") },
    type: "helm.sh/release.v1",
  });
});

test("DeleteOptions keep their propagation policy, preconditions and a zero grace period (delete now)", () => {
  const raw = [...str(4, "Background"), ...lenField(2, [...str(1, "uid-1")]), ...intField(1, 0)];
  expect(decodeKubernetesProtobuf(envelope("v1", "DeleteOptions", raw))).toEqual({
    apiVersion: "v1",
    kind: "DeleteOptions",
    propagationPolicy: "Background",
    preconditions: { uid: "uid-1" },
    gracePeriodSeconds: 0,
  });
});

test("an undescribed field or kind is an error, never silently dropped", () => {
  expect(() => decodeKubernetesProtobuf(envelope("v1", "Secret", str(9, "x")))).toThrow(
    "Secret: field 9 is not described",
  );
  expect(() => decodeKubernetesProtobuf(envelope("v1", "Pod", []))).toThrow(
    "no protobuf description for Pod",
  );
  expect(() => decodeKubernetesProtobuf(Buffer.from("{}"))).toThrow("not a Kubernetes protobuf body");
});
