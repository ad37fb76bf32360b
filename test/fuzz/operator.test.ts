/**
 * Runs the API server accepts but Spillway cannot honour, given to a running operator: pod
 * settings that would escape the run's sandboxing, contradictory paths, out-of-range
 * durations, references that name the wrong kind of object or nothing at all. Each gets a
 * clear condition naming the problem, none is offered or dispatched, the operator does not
 * loop on them (the run stops changing), and a valid run submitted after them still succeeds.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { SpillwayResources } from "../../operator/runtime/resources.ts";
import {
  AZURE_SKU,
  type E2E,
  eventually,
  getRun,
  offersOf,
  type Run,
  remoteJobs,
  startE2E,
  trainingRun,
} from "../e2e/harness.ts";

let e: E2E;

beforeAll(async () => {
  e = await startE2E();
  await e.startOperator();
}, 120_000);

afterAll(async () => {
  await e?.stop();
}, 60_000);

type Obj = Record<string, any>;

/** [name, mutation, the field the SpecInvalid condition must name] */
const SPEC_INVALID: Array<[string, (r: Obj) => void, string]> = [
  // Pod-level fields reach the operator: the pod spec preserves unknown fields, so the API
  // server keeps them (test/sandbox/apiserver/preserve-unknown.test.ts) and the operator
  // refuses them with SpecInvalid naming the field.
  ["fz-hostnetwork", (r) => (r.spec.template.spec.hostNetwork = true), "spec.template.spec.hostNetwork"],
  ["fz-hostpid", (r) => (r.spec.template.spec.hostPID = true), "spec.template.spec.hostPID"],
  ["fz-nodename", (r) => (r.spec.template.spec.nodeName = "n"), "spec.template.spec.nodeName"],
  [
    "fz-hostpath",
    (r) => (r.spec.template.spec.volumes = [{ name: "v", hostPath: { path: "/" } }]),
    "spec.template.spec.volumes[0].hostPath",
  ],
  [
    "fz-privileged",
    (r) => (r.spec.template.spec.containers[0].securityContext = { privileged: true }),
    "spec.template.spec.containers[0].securityContext.privileged",
  ],
  [
    "fz-dup-containers",
    (r) => r.spec.template.spec.containers.push({ ...r.spec.template.spec.containers[0] }),
    "spec.template.spec.containers[1].name",
  ],
  [
    "fz-ckpt-in-data",
    (r) => {
      r.spec.data = { dataset: "corpus", mountPath: "/data" };
      r.spec.checkpoints = { path: "/data/checkpoints" };
    },
    "spec.checkpoints.path",
  ],
  [
    "fz-timeout-3d",
    (r) => (r.spec.placement.rofr.decisionTimeout = "72h"),
    "spec.placement.rofr.decisionTimeout",
  ],
  [
    "fz-timeout-0s",
    (r) => (r.spec.placement.rofr.decisionTimeout = "0s"),
    "spec.placement.rofr.decisionTimeout",
  ],
];

async function create(run: Run): Promise<void> {
  await e.client.create(SpillwayResources.TrainingRun, run);
}

const cond = (r: Run, type: string) => r.status?.conditions?.find((c) => c.type === type);

describe("schema-accepted runs the operator must refuse", () => {
  test("each gets SpecValid=False naming its field, no offer, no Job, and stops changing", async () => {
    for (const [name, mutate] of SPEC_INVALID) {
      const run = trainingRun(name) as Obj;
      mutate(run);
      await create(run as Run);
    }
    for (const [name, , field] of SPEC_INVALID) {
      const r = await eventually(
        () => getRun(e, name),
        (x) => cond(x, "SpecValid")?.status === "False",
        `${name} refused`,
        60_000,
      );
      expect(cond(r, "SpecValid")?.reason).toBe("SpecInvalid");
      expect(cond(r, "SpecValid")?.message).toContain(field);
      expect(r.status?.placement).toBeUndefined();
    }
    // No loop: a second look later finds every run exactly as it was.
    const before = new Map<string, string>();
    for (const [name] of SPEC_INVALID) before.set(name, (await getRun(e, name)).metadata.resourceVersion!);
    await new Promise((r) => setTimeout(r, 3_000));
    for (const [name] of SPEC_INVALID) {
      expect([name, (await getRun(e, name)).metadata.resourceVersion]).toEqual([name, before.get(name)]);
      expect(await offersOf(e, name)).toEqual([]);
    }
    const jobs = await remoteJobs(e.sandbox.aks.kubeconfig());
    expect(jobs.filter((j) => j.metadata.name?.startsWith("fz-"))).toEqual([]);
  }, 120_000);

  test("references to the wrong kind of object or to nothing: the run waits and says what is missing", async () => {
    const cases: Array<[string, (r: Obj) => void, RegExp]> = [
      // A CloudProvider's name where a DataSet belongs.
      [
        "fz-ref-dataset",
        (r) => (r.spec.data = { dataset: "azure-eastus", mountPath: "/data" }),
        /DataSet azure-eastus does not exist in ml-team/,
      ],
      // A DataSet's name as the only alternative: there is no such CloudProvider.
      [
        "fz-ref-alternative",
        (r) => (r.spec.placement.alternatives = ["pretrain-corpus"]),
        /no eligible alternative/,
      ],
      ["fz-ref-gpu", (r) => (r.spec.resources.gpu.type = "Z999"), /GPU type Z999 not offered/],
    ];
    e.arm.setCapacity("eastus", AZURE_SKU, 0);
    for (const [name, mutate] of cases) {
      const run = trainingRun(name) as Obj;
      mutate(run);
      await create(run as Run);
    }
    for (const [name, , mentions] of cases) {
      const r = await eventually(
        () => getRun(e, name),
        (x) =>
          (x.status?.conditions ?? []).some((c) => c.status === "False" && mentions.test(c.message ?? "")),
        `${name} explains what is missing`,
        60_000,
      );
      expect(r.status?.phase).not.toBe("Running");
      expect(r.status?.phase).not.toBe("Succeeded");
    }
  }, 120_000);

  test("the operator is still healthy: a valid run after all of them succeeds", async () => {
    e.arm.setCapacity("eastus", AZURE_SKU, 1);
    await create(trainingRun("fz-valid"));
    const done = await eventually(
      () => getRun(e, "fz-valid"),
      (r) => r.status?.phase === "Succeeded" || r.status?.phase === "Failed",
      "the valid run to finish",
      90_000,
    );
    expect(done.status?.phase).toBe("Succeeded");
  }, 120_000);
});
