/**
 * The remote Job of a checkpointed run carries Spillway's own containers, because a user's
 * trainer image does not contain Spillway: a `spillway-restore` init container and a
 * `spillway-checkpoint-agent` native sidecar, restricted, holding the store credentials that
 * the trainer no longer gets. A run without checkpoints gets neither.
 */
import type { TrainingRun } from "../../../operator/api/v1alpha1/index.ts";
import {
  AGENT_CONTAINER,
  CHECKPOINT_VOLUME,
  DEFAULT_AGENT_IMAGE,
  type DispatchInputs,
  RESTORE_CONTAINER,
  renderRemoteObjects,
  spillwayImage,
} from "../../../operator/controllers/remote/manifests.ts";
import { allInOneStandInContainer, standInContainer } from "../../../operator/sandbox/trainer/standin.ts";

type C = {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: Array<{ name: string; value?: string }>;
  envFrom?: Array<{ secretRef?: { name: string } }>;
  restartPolicy?: string;
  securityContext?: Record<string, unknown>;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  volumeMounts?: Array<{ name: string; mountPath: string; subPath?: string }>;
};
type PodSpec = { containers: C[]; initContainers?: C[]; volumes?: Array<{ name: string }> };

function run(containers: C[], checkpoints = true): TrainingRun {
  return {
    apiVersion: "spillway.dev/v1alpha1",
    kind: "TrainingRun",
    metadata: { name: "llm", namespace: "ml-team", uid: "uid-1" },
    spec: {
      resources: { nodes: 1, gpu: { type: "H100", count: 8 } },
      template: { spec: { containers } },
      ...(checkpoints ? { checkpoints: { keep: 4 } } : {}),
    },
  } as unknown as TrainingRun;
}

const userTrainer: C = {
  name: "trainer",
  image: "nvcr.io/nvidia/pytorch:24.08-py3",
  command: ["torchrun", "train.py"],
};

function podSpec(r: TrainingRun, extra: Partial<DispatchInputs> = {}): PodSpec {
  const job = renderRemoteObjects({
    run: r,
    attempt: 2,
    origin: "mgmt",
    provider: "oci-ashburn",
    ...(r.spec.checkpoints ? { checkpoints: { uri: "s3://b/spillway/runs/uid-1", resumeStep: 40 } } : {}),
    storeSecretName: "llm-store",
    ...extra,
  }).job as { spec: { template: { spec: PodSpec } } };
  return job.spec.template.spec;
}

const env = (c: C) => Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value]));

describe("the remote Job of a checkpointed run", () => {
  it("restores in an init container and runs the agent as a native sidecar, both of the Spillway image", () => {
    const spec = podSpec(run([userTrainer]), { agentImage: "registry.example/spillway:1.2.3" });
    const [restore, agent] = spec.initContainers!;
    expect(restore).toMatchObject({
      name: RESTORE_CONTAINER,
      image: "registry.example/spillway:1.2.3",
      command: ["spillway", "checkpoint", "restore"],
    });
    expect(restore!.restartPolicy).toBeUndefined();
    expect(agent).toMatchObject({
      name: AGENT_CONTAINER,
      image: "registry.example/spillway:1.2.3",
      command: ["spillway", "checkpoint", "agent"],
      restartPolicy: "Always",
    });
    // Their flags come from the environment contract.
    for (const c of [restore!, agent!]) {
      expect(env(c)).toMatchObject({
        SPILLWAY_CHECKPOINT_DIR: "/checkpoints",
        SPILLWAY_CHECKPOINT_STORE: "s3://b/spillway/runs/uid-1",
        SPILLWAY_RESUME_STEP: "40",
        SPILLWAY_RUN_UID: "uid-1",
        SPILLWAY_NNODES: "1",
        SPILLWAY_CHECKPOINT_KEEP: "4",
      });
      expect(c.volumeMounts).toContainEqual({ name: CHECKPOINT_VOLUME, mountPath: "/checkpoints" });
    }
    expect(podSpec(run([userTrainer])).initContainers![0]!.image).toBe(DEFAULT_AGENT_IMAGE);
  });

  it("gives the store credentials to Spillway's containers only; the trainer keeps the path and the volume", () => {
    const spec = podSpec(run([userTrainer]));
    for (const c of spec.initContainers!) expect(c.envFrom).toEqual([{ secretRef: { name: "llm-store" } }]);
    const trainer = spec.containers[0]!;
    expect(trainer.envFrom).toBeUndefined();
    expect(env(trainer).SPILLWAY_CHECKPOINT_DIR).toBe("/checkpoints");
    expect(trainer.volumeMounts).toContainEqual({ name: CHECKPOINT_VOLUME, mountPath: "/checkpoints" });
    expect(spec.volumes?.map((v) => v.name)).toEqual([CHECKPOINT_VOLUME, "spillway-tmp"]);
  });

  it("keeps the store credentials on a trainer that reads its dataset from that store", () => {
    const spec = podSpec(run([userTrainer]), { dataset: { uri: "s3://b/data", version: "v1" } });
    expect(spec.containers[0]!.envFrom).toEqual([{ secretRef: { name: "llm-store" } }]);
  });

  it("runs Spillway's containers restricted, with small requests", () => {
    for (const c of podSpec(run([userTrainer])).initContainers!) {
      expect(c.securityContext).toEqual({
        runAsNonRoot: true,
        allowPrivilegeEscalation: false,
        readOnlyRootFilesystem: true,
        capabilities: { drop: ["ALL"] },
        seccompProfile: { type: "RuntimeDefault" },
      });
      expect(c.resources?.requests).toEqual({ cpu: "100m", memory: "256Mi" });
      expect(c.resources?.limits?.["nvidia.com/gpu"]).toBeUndefined();
      expect(c.volumeMounts).toContainEqual({ name: "spillway-tmp", mountPath: "/tmp" });
    }
  });

  it("mounts the user's own volume where the trainer writes checkpoints, and keeps the user's init containers after Spillway's", () => {
    const trainer: C = {
      ...userTrainer,
      volumeMounts: [{ name: "scratch", mountPath: "/scratch" }],
    };
    const r = run([trainer]);
    r.spec.checkpoints = { path: "/scratch/ckpt" };
    (r.spec.template.spec as unknown as PodSpec).initContainers = [{ name: "fetch", image: "busybox" }];
    (r.spec.template.spec as unknown as PodSpec).volumes = [{ name: "scratch" }];
    const spec = podSpec(r);
    expect(spec.initContainers!.map((c) => c.name)).toEqual([RESTORE_CONTAINER, AGENT_CONTAINER, "fetch"]);
    expect(spec.initContainers![0]!.volumeMounts).toContainEqual({ name: "scratch", mountPath: "/scratch" });
    expect(env(spec.initContainers![1]!).SPILLWAY_CHECKPOINT_DIR).toBe("/scratch/ckpt");
    expect(spec.volumes?.map((v) => v.name)).toEqual(["scratch", "spillway-tmp"]);
  });

  it("adds no Spillway container to a run without checkpoints, nor beside the all-in-one stand-in", () => {
    expect(podSpec(run([userTrainer], false)).initContainers).toBeUndefined();
    const allInOne = podSpec(run([allInOneStandInContainer({ steps: 10, every: 5, stepDelay: "0ms" })]));
    expect(allInOne.initContainers).toBeUndefined();
    // It is its own agent: it keeps the store credentials.
    expect(allInOne.containers[0]!.envFrom).toEqual([{ secretRef: { name: "llm-store" } }]);
  });

  it("runs the sandbox's trainer stand-in as the trainer alone, beside Spillway's containers", () => {
    const spec = podSpec(run([standInContainer({ steps: 10, every: 5, stepDelay: "0ms" })]));
    expect(spec.containers[0]!.command).toEqual(["spillway", "checkpoint", "trainer"]);
    expect(spec.initContainers!.map((c) => c.name)).toEqual([RESTORE_CONTAINER, AGENT_CONTAINER]);
    expect(spec.containers[0]!.envFrom).toBeUndefined();
  });

  test("Spillway's containers use the operator's own image: $SPILLWAY_IMAGE (set by the chart), else the chart's default", () => {
    expect(spillwayImage({ SPILLWAY_IMAGE: "registry.example/spillway@sha256:abc" })).toBe(
      "registry.example/spillway@sha256:abc",
    );
    expect(spillwayImage({ SPILLWAY_IMAGE: "  " })).toBe(DEFAULT_AGENT_IMAGE);
    expect(spillwayImage({})).toBe(DEFAULT_AGENT_IMAGE);
  });
});
