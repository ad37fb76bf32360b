/**
 * The operator as its own OS process for the kill tests: the same Manager and adapters as
 * `spillway operator`, except that clusters are provisioned by the sandbox provisioner (the
 * Pulumi CLI cannot be installed here) — which therefore lives in this process and dies with
 * it, so a SIGKILL mid-`up` leaves the stack's lock behind exactly as a killed Pulumi
 * operation does. Its state directory outlives the process: the next operator opens it again.
 * Usage: `node operator-main.(ts|mjs) CONFIG.json`; logs JSON lines on stdout.
 */
import { readFileSync } from "node:fs";
import { StoreCheckpointPlanner } from "../../operator/checkpoints/index.ts";
import { AzureResponder } from "../../operator/clouds/azure/index.ts";
import { storeResolver } from "../../operator/controllers/context.ts";
import { dataSetController } from "../../operator/controllers/dataset/controller.ts";
import { provisionedClusterController } from "../../operator/controllers/provisionedcluster/index.ts";
import { DatasetSyncs } from "../../operator/dataplane/stager.ts";
import { Manager, type ManagerOptions } from "../../operator/manager.ts";
import { createLogger } from "../../operator/runtime/logging.ts";
import { SandboxProvisioner } from "../../operator/sandbox/provisioner.ts";
import type { ScenarioOci } from "../../operator/sandbox/scenario.ts";

export interface ChaosOperatorConfig {
  kubeconfigPath: string;
  namespace: string;
  origin: string;
  arm: { ca: string; url: string };
  provisioner: {
    stateDir: string;
    cloud: ScenarioOci;
    podStartupMs: number;
    jobDurationMs: number;
    s3Endpoint?: string;
  };
  settings: ManagerOptions["settings"];
  collectIntervalMs: number;
  logLevel: string;
}

// Where a restart's seconds go (printed by the test with each kill point).
const loadedMs = Math.round(performance.now());
const cfg = JSON.parse(readFileSync(process.argv[2]!, "utf8")) as ChaosOperatorConfig;
const log = createLogger({ level: cfg.logLevel });
const provisioner = await SandboxProvisioner.open(cfg.provisioner);
const openedMs = Math.round(performance.now());
const responder = new AzureResponder({ ca: cfg.arm.ca, authorityHost: cfg.arm.url });
const datasets = new DatasetSyncs();
const manager = new Manager({
  kubeconfig: readFileSync(cfg.kubeconfigPath, "utf8"),
  namespace: cfg.namespace,
  origin: cfg.origin,
  identity: `chaos-${process.pid}`,
  logger: log,
  collectIntervalMs: cfg.collectIntervalMs,
  ...(cfg.settings ? { settings: cfg.settings } : {}),
  responderFor: (p) => (p.spec.type === "azure" && p.spec.role === "primary" ? responder : undefined),
  provisionerFor: (p) => (p.spec.cluster.provision ? provisioner : undefined),
  stager: datasets,
  checkpointsFor: (ctx) => new StoreCheckpointPlanner(storeResolver(ctx)),
  extraControllers: (ctx) => [
    provisionedClusterController(ctx, { progressIntervalMs: 200 }),
    dataSetController(ctx, datasets, { progressIntervalMs: 200 }),
  ],
});
process.on("SIGTERM", () => {
  void manager
    .stop(2_000)
    .then(() => provisioner.close())
    .then(() => process.exit(0));
});
await manager.start();
log.info("operator started", {
  pid: process.pid,
  loadedMs,
  provisionerOpenMs: openedMs - loadedMs,
  managerStartMs: Math.round(performance.now()) - openedMs,
});
