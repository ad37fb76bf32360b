/**
 * A bench-only child process hosting one part of the world the operator is measured against,
 * so that neither the load generator nor the operator shares a JavaScript thread with it:
 *
 * - `cluster SPEC.json`: a simulated remote cluster (its API server and kubelet), e.g. OCI's.
 * - `sandbox SPEC.json`: the sandbox (management API server, simulated AKS cluster, ARM
 *   emulator, storage emulators), with the clouds installed as a platform team would, the
 *   alternative provider pointed at the `cluster` host's kubeconfig.
 *
 * Prints one JSON line starting with `{"ready":` once serving; stops on SIGTERM/SIGINT.
 * Started by `startHost` (bench/lib/world.ts), never by users (`spillway sandbox` is theirs).
 */
import { writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { CloudProvider } from "../../operator/api/v1alpha1/index.ts";
import { KubeClient } from "../../operator/runtime/client.ts";
import { type KubeObject, Resources, SpillwayResources } from "../../operator/runtime/resources.ts";
import { SimulatedCluster } from "../../operator/sandbox/cluster/index.ts";
import { startSandbox } from "../../operator/sandbox/sandbox.ts";
import type { Scenario } from "../../operator/sandbox/scenario.ts";
import {
  armEmulator,
  installSandboxClouds,
  OPERATOR_NAMESPACE,
  startSandboxArm,
} from "../../operator/sandbox/wiring.ts";

export interface ClusterHostSpec {
  name: string;
  nodes: number;
  podStartupMs: number;
  jobDurationMs: number;
}

export interface SandboxHostSpec {
  dir: string;
  scenario: Scenario;
  /** Namespaces to create for the runs. */
  namespaces: string[];
  /** Kubeconfig of the alternative's cluster (the `cluster` host's). */
  alternativeKubeconfig: string;
  /** Moves the alternative to another jurisdiction (the no-offer peer). */
  alternativeJurisdiction?: string;
}

const [role, specFile] = process.argv.slice(2);
if (!role || !specFile) {
  console.error("usage: host.ts cluster|sandbox SPEC.json");
  process.exit(2);
}
const spec: unknown = JSON.parse(await readFile(specFile, "utf8"));
let stop: () => Promise<void>;

if (role === "cluster") {
  const s = spec as ClusterHostSpec;
  const cluster = await SimulatedCluster.start({
    name: s.name,
    pools: [{ name: "gpu", nodes: s.nodes, gpusPerNode: 8, gpuType: "H100" }],
    podStartupMs: s.podStartupMs,
    jobDurationMs: s.jobDurationMs,
  });
  stop = () => cluster.stop();
  console.log(JSON.stringify({ ready: true, kubeconfig: cluster.kubeconfig() }));
} else if (role === "sandbox") {
  const s = spec as SandboxHostSpec;
  const sandbox = await startSandbox({ stateDir: s.dir, scenario: s.scenario, startArm: startSandboxArm });
  const client = KubeClient.fromKubeconfig(sandbox.management.kubeconfig());
  await installSandboxClouds(sandbox, client, s.namespaces);
  const secretName = "alternative-bench-kubeconfig";
  await client.create(Resources.Secret, {
    metadata: { name: secretName, namespace: OPERATOR_NAMESPACE },
    stringData: { kubeconfig: s.alternativeKubeconfig },
  } as KubeObject);
  const alt = s.scenario.clouds.oci.name;
  const p = await client.get<CloudProvider & KubeObject>(SpillwayResources.CloudProvider, alt);
  p.spec.cluster = { existing: { kubeconfigSecretRef: { name: secretName, namespace: OPERATOR_NAMESPACE } } };
  if (s.alternativeJurisdiction) p.spec.jurisdiction = s.alternativeJurisdiction;
  await client.update(SpillwayResources.CloudProvider, p);
  const caFile = join(s.dir, "arm-ca.pem");
  writeFileSync(caFile, armEmulator(sandbox)!.ca);
  stop = () => sandbox.stop();
  console.log(
    JSON.stringify({
      ready: true,
      kubeconfigPath: sandbox.management.kubeconfigPath,
      kubeconfig: sandbox.management.kubeconfig(),
      caFile,
    }),
  );
} else {
  console.error(`unknown role ${role}`);
  process.exit(2);
}

let stopping = false;
const onSignal = () => {
  if (stopping) return;
  stopping = true;
  stop()
    .catch((e: unknown) => console.error(`host ${role}: stop: ${String(e)}`))
    .finally(() => process.exit(0));
};
process.on("SIGTERM", onSignal);
process.on("SIGINT", onSignal);
// A bench killed outright (SIGKILL) cannot stop its hosts: a host re-parented away from the
// bench that started it stops itself.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) onSignal();
}, 1_000).unref();
