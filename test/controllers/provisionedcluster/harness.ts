// A management cluster for the ProvisionedCluster controller: the sandbox API server with the
// Spillway CRDs, the operator's caches over it, an OperatorContext, and an in-memory cloud
// behind the Provisioner port (the real provisioner is tested in test/clouds/pulumi).
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import type { CloudProvider, ProvisionedCluster, TrainingRun } from "../../../operator/api/v1alpha1/index.ts";
import {
  type Caches,
  DEFAULT_SETTINGS,
  type EventType,
  type OperatorContext,
} from "../../../operator/controllers/context.ts";
import type { RemoteClusters } from "../../../operator/controllers/remote/clusters.ts";
import {
  ProvisionError,
  type Provisioner,
  type ProvisionOutputs,
  type ProvisionProgress,
  type ProvisionRequest,
} from "../../../operator/ports/provisioner.ts";
import { KubeClient } from "../../../operator/runtime/client.ts";
import { Informer } from "../../../operator/runtime/informer.ts";
import { silentLogger } from "../../../operator/runtime/logging.ts";
import { RuntimeMetrics } from "../../../operator/runtime/metrics.ts";
import { type KubeObject, Resources, SpillwayResources } from "../../../operator/runtime/resources.ts";
import { type ApiServer, startApiServer } from "../../../operator/sandbox/apiserver/index.ts";
import { ROOT } from "../../helpers/examples.ts";

export const NAMESPACE = "spillway-system";

const CRD = {
  group: "apiextensions.k8s.io",
  version: "v1",
  kind: "CustomResourceDefinition",
  plural: "customresourcedefinitions",
  namespaced: false,
};

export interface RecordedEvent {
  name: string;
  type: EventType;
  reason: string;
  message: string;
}

export interface Harness {
  server: ApiServer;
  client: KubeClient;
  ctx: OperatorContext;
  events: RecordedEvent[];
  close(): Promise<void>;
}

export async function startHarness(): Promise<Harness> {
  const server = await startApiServer({ name: "mgmt" });
  const client = KubeClient.fromKubeconfig(server.kubeconfig(), { rateLimit: { qps: 1000, burst: 1000 } });
  for (const file of readdirSync(join(ROOT, "crds")).filter((f) => f.endsWith(".yaml"))) {
    for (const doc of parseAllDocuments(readFileSync(join(ROOT, "crds", file), "utf8"))) {
      const obj = doc.toJS() as KubeObject | null;
      if (obj) await client.create(CRD, obj);
    }
  }
  await client.create(Resources.Namespace, { metadata: { name: NAMESPACE } });
  await client.create(Resources.Namespace, { metadata: { name: "ml-team" } });
  const inf = <T extends KubeObject>(r: typeof Resources.Secret, namespace?: string) =>
    new Informer<T>(client, r, namespace ? { namespace } : {});
  const caches: Caches = {
    runs: inf<TrainingRun & KubeObject>(SpillwayResources.TrainingRun),
    offers: inf(SpillwayResources.CapacityOffer),
    providers: inf<CloudProvider & KubeObject>(SpillwayResources.CloudProvider),
    datasets: inf(SpillwayResources.DataSet),
    clusters: inf<ProvisionedCluster & KubeObject>(SpillwayResources.ProvisionedCluster),
    secrets: inf(Resources.Secret, NAMESPACE),
  } as Caches;
  const informers = Object.values(caches) as Informer<KubeObject>[];
  for (const i of informers) i.start();
  await Promise.all(informers.map((i) => i.waitForSync()));
  const events: RecordedEvent[] = [];
  const ctx: OperatorContext = {
    mgmt: client,
    caches,
    remote: {} as RemoteClusters,
    responderFor: () => undefined,
    provisionerFor: () => undefined,
    events: {
      record: (obj, type, reason, message) =>
        events.push({ name: obj.metadata.name ?? "", type, reason, message }),
    },
    metrics: new RuntimeMetrics(),
    log: silentLogger(),
    now: () => new Date(),
    settings: { ...DEFAULT_SETTINGS, namespace: NAMESPACE, origin: "test" },
    enqueue: () => undefined,
  };
  return {
    server,
    client,
    ctx,
    events,
    async close() {
      await Promise.all(informers.map((i) => i.stop()));
      await server.close();
    },
  };
}

/** A gate an in-memory operation waits on until the test opens it. */
export class Gate {
  private open?: () => void;
  readonly opened = new Promise<void>((r) => {
    this.open = r;
  });
  release(): void {
    this.open?.();
  }
}

interface Stack {
  outputs?: ProvisionOutputs;
  /** Held by an operation that was cut short (the operator died). */
  locked: boolean;
  req: ProvisionRequest;
}

/**
 * An in-memory cloud behind the Provisioner port: stacks with outputs and locks, scripted
 * failures per operation, and gates that hold an operation until the test releases it.
 */
export class MemoryCloud implements Provisioner {
  readonly stacks = new Map<string, Stack>();
  readonly calls: Array<{ op: string; stack: string }> = [];
  upFailures: ProvisionError[] = [];
  destroyFailures: ProvisionError[] = [];
  upGate?: Gate;
  /** Every up fails with a copy of this (after the scripted ones). */
  alwaysFailUp?: ProvisionError;

  async up(req: ProvisionRequest, onProgress?: (p: ProvisionProgress) => void): Promise<ProvisionOutputs> {
    this.calls.push({ op: "up", stack: req.stackName });
    const stack = this.stacks.get(req.stackName) ?? { locked: false, req };
    this.stacks.set(req.stackName, stack);
    if (stack.locked)
      throw new ProvisionError(
        "StackLocked",
        `up ${req.stackName}: the stack is currently locked by 1 lock(s)`,
        true,
      );
    onProgress?.({ message: "creating oci:core/vcn:Vcn vcn", resourcesDone: 0, resourcesTotal: 1 });
    if (this.upGate) await this.upGate.opened;
    const failure = this.upFailures.shift() ?? this.alwaysFailUp;
    if (failure) throw new ProvisionError(failure.reason, failure.message, failure.retryable);
    onProgress?.({ message: "created oci:core/vcn:Vcn vcn", resourcesDone: 1, resourcesTotal: 1 });
    stack.req = req;
    stack.outputs = {
      clusterId: `ocid1.cluster.oc1.${req.region}.${req.stackName}`,
      kubeconfig: `apiVersion: v1\nkind: Config\n# token for ${req.stackName}: kc-secret-${req.stackName}\n`,
      bucket: `${req.stackName}-data`,
      s3Endpoint: "https://ns.compat.objectstorage.us-ashburn-1.oraclecloud.com",
      region: req.region,
    };
    return stack.outputs;
  }

  async destroy(req: ProvisionRequest): Promise<void> {
    this.calls.push({ op: "destroy", stack: req.stackName });
    const stack = this.stacks.get(req.stackName);
    if (!stack) return;
    if (stack.locked) throw new ProvisionError("StackLocked", `destroy ${req.stackName}: locked`, true);
    const failure = this.destroyFailures.shift();
    if (failure) throw failure;
    this.stacks.delete(req.stackName);
  }

  async cancel(req: ProvisionRequest): Promise<void> {
    this.calls.push({ op: "cancel", stack: req.stackName });
    const stack = this.stacks.get(req.stackName);
    if (stack) stack.locked = false;
  }

  async outputs(req: ProvisionRequest): Promise<ProvisionOutputs | undefined> {
    this.calls.push({ op: "outputs", stack: req.stackName });
    return this.stacks.get(req.stackName)?.outputs;
  }

  count(op: string, stack?: string): number {
    return this.calls.filter((c) => c.op === op && (!stack || c.stack === stack)).length;
  }
}

/** Polls `cond` until it holds; fails (with `what`) after `timeoutMs`. Not a timing assertion. */
export async function waitFor<T>(
  cond: () => T | undefined | false | Promise<T | undefined | false>,
  what: string,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
