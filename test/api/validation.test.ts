import {
  assertValid,
  type CloudProvider,
  conflictingPrimaries,
  ValidationError,
  validateObject,
} from "../../operator/api/v1alpha1/index.ts";
import { exampleOf, loadExamples } from "../helpers/examples.ts";

// Fixtures are edited freely, so they are loosely typed.
type Obj = Record<string, any>;

const spillwayExamples = loadExamples().filter((e) => String(e.doc.apiVersion).startsWith("spillway.dev/"));

describe("examples", () => {
  test("cover every kind users write", () => {
    const kinds = new Set(spillwayExamples.map((e) => e.doc.kind));
    expect([...kinds].sort()).toEqual(["CloudProvider", "DataSet", "TrainingRun"]);
    expect(
      spillwayExamples
        .filter((e) => e.doc.kind === "TrainingRun")
        .map((e) => (e.doc.spec as Obj).workloadClass),
    ).toEqual(["training", "serving"]);
  });

  test.each(spillwayExamples)("$file validates", ({ doc }) => {
    expect(validateObject(structuredClone(doc))).toEqual([]);
  });

  test("defaults are applied: the serving run gets decision timeout, matching and failback defaults", () => {
    const run = exampleOf("TrainingRun", "api-serving");
    run.spec.placement = {};
    expect(validateObject(run)).toEqual([]);
    expect(run.spec.placement.failback).toBe("Never");
    expect(run.spec.resources.nodes).toBe(1);
    expect(run.spec.runPolicy).toBeUndefined();
  });
});

const run = () => exampleOf("TrainingRun", "llama-pretrain") as Obj;
const serving = () => exampleOf("TrainingRun", "api-serving") as Obj;
const azure = () => exampleOf("CloudProvider", "azure-eastus") as Obj;
const oci = () => exampleOf("CloudProvider", "oci-ashburn") as Obj;
const dataset = () => exampleOf("DataSet") as Obj;
const offer = (): Obj => ({
  apiVersion: "spillway.dev/v1alpha1",
  kind: "CapacityOffer",
  metadata: { name: "llama-pretrain-1", namespace: "ml-team" },
  spec: {
    run: { name: "llama-pretrain", uid: "5f1c" },
    attempt: 1,
    provider: "azure-eastus",
    workloadClass: "training",
    request: { gpuType: "H100", gpusPerNode: 8, nodes: 2, region: "eastus" },
    competingQuote: { provider: "oci-ashburn", pricePerHour: 72 },
    deadline: "2026-11-21T20:00:00Z",
  },
});
const cluster = (): Obj => ({
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
});

const TEN_MB = "x".repeat(10 * 1024 * 1024);

/** [description, object, expected field path, old object (for updates)] */
const invalid: Array<[string, () => Obj, string, (() => Obj)?]> = [
  [
    "GPU count as a string",
    () => Object.assign(run(), {}).spec && mut(run(), (o) => (o.spec.resources.gpu.count = "8")),
    "spec.resources.gpu.count",
  ],
  ["GPU count 0", () => mut(run(), (o) => (o.spec.resources.gpu.count = 0)), "spec.resources.gpu.count"],
  ["GPU count 17", () => mut(run(), (o) => (o.spec.resources.gpu.count = 17)), "spec.resources.gpu.count"],
  [
    "GPU count fractional",
    () => mut(run(), (o) => (o.spec.resources.gpu.count = 2.5)),
    "spec.resources.gpu.count",
  ],
  ["nodes 0", () => mut(run(), (o) => (o.spec.resources.nodes = 0)), "spec.resources.nodes"],
  ["missing GPU type", () => mut(run(), (o) => delete o.spec.resources.gpu.type), "spec.resources.gpu.type"],
  ["missing template", () => mut(run(), (o) => delete o.spec.template), "spec.template"],
  [
    "no containers",
    () => mut(run(), (o) => (o.spec.template.spec.containers = [])),
    "spec.template.spec.containers",
  ],
  [
    "container without image",
    () => mut(run(), (o) => delete o.spec.template.spec.containers[0].image),
    "spec.template.spec.containers[0].image",
  ],
  ["unknown workload class", () => mut(run(), (o) => (o.spec.workloadClass = "batch")), "spec.workloadClass"],
  [
    "unknown failback",
    () => mut(run(), (o) => (o.spec.placement.failback = "Sometimes")),
    "spec.placement.failback",
  ],
  [
    "duration without unit",
    () => mut(run(), (o) => (o.spec.placement.rofr.decisionTimeout = "300")),
    "spec.placement.rofr.decisionTimeout",
  ],
  [
    "decision timeout of 3 days",
    () => mut(run(), (o) => (o.spec.placement.rofr.decisionTimeout = "72h")),
    "spec.placement.rofr.decisionTimeout",
  ],
  [
    "negative max price",
    () => mut(run(), (o) => (o.spec.placement.maxHourlyPrice = -1)),
    "spec.placement.maxHourlyPrice",
  ],
  [
    "lower-case jurisdiction",
    () => mut(run(), (o) => (o.spec.placement.jurisdictions = ["eu"])),
    "spec.placement.jurisdictions[0]",
  ],
  [
    "serving run naming alternatives (CEL)",
    () => mut(serving(), (o) => (o.spec.placement = { alternatives: ["oci-ashburn"] })),
    "spec.placement.alternatives",
  ],
  [
    "primary listed as alternative (CEL)",
    () => mut(run(), (o) => (o.spec.placement.primary = "oci-ashburn")),
    "spec.placement.alternatives",
  ],
  ["hostile run name ../../etc", () => mut(run(), (o) => (o.metadata.name = "../../etc")), "metadata.name"],
  [
    "run name too long for its Job",
    () => mut(run(), (o) => (o.metadata.name = "a".repeat(60))),
    "metadata.name",
  ],
  [
    "hostile namespace",
    () => mut(run(), (o) => (o.metadata.namespace = "kube-system/../x")),
    "metadata.namespace",
  ],
  [
    "10 MB image string",
    () => mut(run(), (o) => (o.spec.template.spec.containers[0].image = TEN_MB)),
    "spec.template.spec.containers[0].image",
  ],
  ["10 MB dataset name", () => mut(run(), (o) => (o.spec.data.dataset = TEN_MB)), "spec.data.dataset"],
  ["unknown field", () => mut(run(), (o) => (o.spec.resources.tpu = 4)), "spec.resources.tpu"],
  [
    "checkpoint path with ..",
    () => mut(run(), (o) => (o.spec.checkpoints.path = "/ckpt/../../etc")),
    "spec.checkpoints.path",
  ],
  [
    "relative checkpoint path",
    () => mut(run(), (o) => (o.spec.checkpoints.path = "ckpt")),
    "spec.checkpoints.path",
  ],
  [
    "checkpoint path inside the dataset mount",
    () => mut(run(), (o) => (o.spec.checkpoints.path = "/data/ckpt")),
    "spec.checkpoints.path",
  ],
  ["keep 0 checkpoints", () => mut(run(), (o) => (o.spec.checkpoints.keep = 0)), "spec.checkpoints.keep"],
  [
    "privileged trainer",
    () => mut(run(), (o) => (o.spec.template.spec.containers[0].securityContext = { privileged: true })),
    "spec.template.spec.containers[0].securityContext.privileged",
  ],
  [
    "hostPath volume",
    () => mut(run(), (o) => (o.spec.template.spec.volumes = [{ name: "h", hostPath: { path: "/" } }])),
    "spec.template.spec.volumes[0].hostPath",
  ],
  [
    "hostNetwork",
    () => mut(run(), (o) => (o.spec.template.spec.hostNetwork = true)),
    "spec.template.spec.hostNetwork",
  ],
  [
    "changing a run's resources (immutable, CEL)",
    () => mut(run(), (o) => (o.spec.resources.nodes = 4)),
    "spec.resources",
    run,
  ],
  [
    "changing a run's workload class (immutable, CEL)",
    () => mut(run(), (o) => (o.spec.workloadClass = "research")),
    "spec.workloadClass",
    run,
  ],
  ["provider of unknown type", () => mut(oci(), (o) => (o.spec.type = "aws")), "spec.type"],
  [
    "provider with both existing and provision (CEL)",
    () => mut(oci(), (o) => (o.spec.cluster.existing = { kubeconfigSecretRef: { name: "k" } })),
    "spec.cluster",
  ],
  [
    "azure settings on an oci provider (CEL)",
    () => mut(oci(), (o) => (o.spec.azure = azure().spec.azure)),
    "spec.azure",
  ],
  [
    "azure primary without azure settings (CEL)",
    () => mut(azure(), (o) => delete o.spec.azure),
    "spec.azure",
  ],
  [
    "storage with neither blob nor s3 (CEL)",
    () => mut(oci(), (o) => delete o.spec.storage.s3),
    "spec.storage",
  ],
  [
    "GPUs per node 32",
    () => mut(oci(), (o) => (o.spec.capacity.gpus[0].gpusPerNode = 32)),
    "spec.capacity.gpus[0].gpusPerNode",
  ],
  [
    "price for a GPU type not offered",
    () => mut(oci(), (o) => (o.spec.pricing.gpus[0].type = "A100")),
    "spec.pricing.gpus[0].type",
  ],
  [
    "floor above list price",
    () => mut(azure(), (o) => (o.spec.pricing.gpus[0].floorPerGpuHour = 9)),
    "spec.pricing.gpus[0].floorPerGpuHour",
  ],
  [
    "cluster-scoped provider with a namespace",
    () => mut(oci(), (o) => (o.metadata.namespace = "ml-team")),
    "metadata.namespace",
  ],
  [
    "maxClusters 0",
    () => mut(oci(), (o) => (o.spec.cluster.provision.maxClusters = 0)),
    "spec.cluster.provision.maxClusters",
  ],
  [
    "dataset prefix escaping with ..",
    () => mut(dataset(), (o) => (o.spec.source.prefix = "corpora/../../secrets/")),
    "spec.source.prefix",
  ],
  [
    "dataset prefix absolute",
    () => mut(dataset(), (o) => (o.spec.replicas[0].prefix = "/etc/")),
    "spec.replicas[0].prefix",
  ],
  [
    "dataset replica equal to its source",
    () => mut(dataset(), (o) => (o.spec.replicas[0].provider = "azure-eastus")),
    "spec.replicas[0].provider",
  ],
  [
    "dataset sync concurrency 1000",
    () => mut(dataset(), (o) => (o.spec.syncPolicy.concurrency = 1000)),
    "spec.syncPolicy.concurrency",
  ],
  [
    "offer with an unknown outcome",
    () => mut(offer(), (o) => (o.status = { outcome: "Maybe" })),
    "status.outcome",
  ],
  [
    "declined offer without reason (CEL)",
    () => mut(offer(), (o) => (o.status = { outcome: "Declined" })),
    "status.reason",
  ],
  ["offer deadline not a date", () => mut(offer(), (o) => (o.spec.deadline = "tomorrow")), "spec.deadline"],
  [
    "changing an offer's spec (immutable, CEL)",
    () => mut(offer(), (o) => (o.spec.competingQuote.pricePerHour = 1)),
    "spec",
    offer,
  ],
  [
    "rewriting an offer's answer (CEL)",
    () => mut(offer(), (o) => (o.status = { outcome: "Declined", reason: "NoCapacity" })),
    "status.outcome",
    () => mut(offer(), (o) => (o.status = { outcome: "Accepted" })),
  ],
  [
    "provisioned cluster without node pools",
    () => mut(cluster(), (o) => (o.spec.nodePools = [])),
    "spec.nodePools",
  ],
  [
    "provisioned cluster with duplicate pools",
    () => mut(cluster(), (o) => o.spec.nodePools.push({ ...o.spec.nodePools[0] })),
    "spec.nodePools[1].name",
  ],
  ["wrong apiVersion", () => mut(run(), (o) => (o.apiVersion = "spillway.dev/v2")), "apiVersion"],
  ["unknown kind", () => mut(run(), (o) => (o.kind = "TrainingJob")), "kind"],
];

function mut(o: Obj, f: (o: Obj) => unknown): Obj {
  f(o);
  return o;
}

describe("invalid objects are rejected with the offending field path", () => {
  test("there are at least 25 cases", () => expect(invalid.length).toBeGreaterThanOrEqual(25));

  test.each(invalid)("%s → %s", (_what, make, path, old) => {
    const errors = validateObject(make(), old ? { old: old() } : {});
    expect(errors.length).toBeGreaterThan(0);
    expect(errors.map((e) => e.path)).toContain(path);
    for (const e of errors) expect(e.message.length).toBeLessThan(2000);
  });

  test("assertValid throws one error that lists field paths", () => {
    const bad = mut(run(), (o) => {
      o.spec.resources.gpu.count = 99;
      o.spec.workloadClass = "batch";
    });
    expect(() => assertValid(bad)).toThrow(ValidationError);
    expect(() => assertValid(bad)).toThrow(
      /spec\.resources\.gpu\.count: .*spec\.workloadClass|spec\.workloadClass: .*spec\.resources\.gpu\.count/s,
    );
  });

  test("an unchanged offer and a first answer are accepted as updates", () => {
    const answered = mut(offer(), (o) => (o.status = { outcome: "Declined", reason: "NoCapacity" }));
    expect(validateObject(answered, { old: offer() })).toEqual([]);
  });

  test.each(["constructor", "toString", "hasOwnProperty"])(
    "an unknown field named like an Object method (%s) is refused (found by the fuzz suite)",
    (key) => {
      const bad = mut(run(), (o) => (o.spec[key] = "x"));
      expect(validateObject(bad).map((e) => e.path)).toContain(`spec.${key}`);
    },
  );

  test("non-objects are rejected without throwing", () => {
    for (const v of [null, 42, "x", [], undefined]) expect(validateObject(v).length).toBe(1);
  });
});

describe("at most one primary (a controller-side check)", () => {
  test("two primaries are both reported", () => {
    const a = azure() as unknown as CloudProvider;
    const b = mut(oci(), (o) => (o.spec.role = "primary")) as unknown as CloudProvider;
    expect(conflictingPrimaries([a, b])).toEqual(["azure-eastus", "oci-ashburn"]);
    expect(conflictingPrimaries([a, oci() as unknown as CloudProvider])).toEqual([]);
  });
});
