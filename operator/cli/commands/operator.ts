/**
 * `spillway operator`: runs the controllers against the management cluster (in a pod, or
 * locally with a kubeconfig). The flags are the contract the Helm chart relies on.
 */
import { readFileSync } from "node:fs";
import { type Command, InvalidArgumentError } from "commander";
import { buildAdapters } from "../../adapters.ts";
import { Manager } from "../../manager.ts";
import { createLogger } from "../../runtime/logging.ts";
import { IdleMemoryReducer } from "../../runtime/memory.ts";
import { parseDuration } from "../../util/duration.ts";

const duration = (v: string): number => {
  try {
    return parseDuration(v);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
};
const positiveInt = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`expected a positive integer, got ${v}`);
  return n;
};

interface OperatorFlags {
  kubeconfig?: string;
  namespace: string;
  origin: string;
  leaderElect: boolean;
  leaderElectionId: string;
  leaseDuration: number;
  metricsBindAddress: string;
  healthProbeBindAddress: string;
  logLevel: string;
  offerRetention: number;
  remoteQps: number;
  remoteBurst: number;
  maxConcurrentReconciles: number;
  clusterLostTimeout: number;
  failbackInterval: number;
  failbackMaxInterval: number;
  pulumiStateDir: string;
  azureCaFile?: string;
  kubeApiQps: number;
  collectInterval: number;
  kubeApiBurst: number;
}

export function register(program: Command): void {
  program
    .command("operator")
    .description("Run the Spillway operator against the management cluster.")
    .option(
      "--kubeconfig <path>",
      "kubeconfig of the management cluster (default: KUBECONFIG, then in-cluster)",
    )
    .option(
      "--namespace <ns>",
      "the operator's namespace (Secrets, Leases)",
      process.env.POD_NAMESPACE ?? "spillway-system",
    )
    .option("--origin <name>", "name of this management cluster, stamped on remote objects", "spillway")
    .option("--leader-elect", "elect a leader among replicas through a Lease", false)
    .option("--leader-election-id <name>", "name of the Lease", "spillway-operator")
    .option("--lease-duration <duration>", "how long a lease lasts without renewal", duration, 15_000)
    .option("--metrics-bind-address <addr>", "Prometheus metrics address ('0' disables)", ":8080")
    .option("--health-probe-bind-address <addr>", "/healthz and /readyz address", ":8081")
    .option("--log-level <level>", "error, warn, info or debug", "info")
    .option(
      "--offer-retention <duration>",
      "how long CapacityOffers are kept (the ledger)",
      duration,
      9600 * 3_600_000,
    )
    .option("--remote-qps <n>", "requests per second to each remote cluster", positiveInt, 50)
    .option("--remote-burst <n>", "request burst to each remote cluster", positiveInt, 100)
    .option("--max-concurrent-reconciles <n>", "parallel reconciles per controller", positiveInt, 8)
    .option(
      "--cluster-lost-timeout <duration>",
      "how long a cluster may not answer before its runs move",
      duration,
      60_000,
    )
    .option(
      "--failback-interval <duration>",
      "with failback WhenPrimaryAccepts: how long after the primary's last answer a run on an alternative is offered to it again",
      duration,
      15 * 60_000,
    )
    .option(
      "--failback-max-interval <duration>",
      "the longest failback interval after the primary declined several times in a row",
      duration,
      60 * 60_000,
    )
    .option(
      "--pulumi-state-dir <dir>",
      "Pulumi file backend for provisioned clusters",
      "/var/lib/spillway/pulumi",
    )
    .option(
      "--azure-ca-file <path>",
      "PEM CAs trusted for Azure Resource Manager and Entra ID (private endpoints)",
    )
    .option("--kube-api-qps <n>", "requests per second to the management cluster", positiveInt, 200)
    .option("--kube-api-burst <n>", "request burst to the management cluster", positiveInt, 400)
    .option(
      "--collect-interval <duration>",
      "how often orphaned remote Jobs and cloud reservations are looked for",
      duration,
      60_000,
    )
    .action(async (flags: OperatorFlags) => {
      const log = createLogger({ level: flags.logLevel });
      const adapters = await buildAdapters({
        pulumiStateDir: flags.pulumiStateDir,
        log,
        ...(flags.azureCaFile ? { azureCaFile: flags.azureCaFile } : {}),
      });
      const manager = new Manager({
        ...(flags.kubeconfig ? { kubeconfig: readFileSync(flags.kubeconfig, "utf8") } : {}),
        namespace: flags.namespace,
        origin: flags.origin,
        identity: process.env.POD_NAME ?? "spillway-operator",
        leaderElect: flags.leaderElect,
        leaderElectionId: flags.leaderElectionId,
        leaseDurationMs: flags.leaseDuration,
        renewDeadlineMs: Math.round(flags.leaseDuration * (2 / 3)),
        retryPeriodMs: Math.max(200, Math.round(flags.leaseDuration / 7.5)),
        metricsAddress: flags.metricsBindAddress,
        healthAddress: flags.healthProbeBindAddress,
        logger: log,
        maxConcurrentReconciles: flags.maxConcurrentReconciles,
        kubeApiQps: flags.kubeApiQps,
        collectIntervalMs: flags.collectInterval,
        kubeApiBurst: flags.kubeApiBurst,
        settings: {
          offerRetentionMs: flags.offerRetention,
          remoteQps: flags.remoteQps,
          remoteBurst: flags.remoteBurst,
          clusterLostTimeoutMs: flags.clusterLostTimeout,
          failbackIntervalMs: flags.failbackInterval,
          failbackMaxIntervalMs: Math.max(flags.failbackInterval, flags.failbackMaxInterval),
        },
        ...adapters,
      });
      // Gives back the memory a burst grew the process to once it is idle again (V8 keeps
      // freed pages pooled otherwise; see operator/runtime/memory.ts for the measurements).
      const memory = new IdleMemoryReducer({ log });
      let stopping = false;
      const shutdown = (signal: string) => {
        if (stopping) return;
        stopping = true;
        memory.stop();
        log.info("shutting down", { signal });
        void manager.stop().then(() => process.exit(0));
      };
      process.on("SIGTERM", () => shutdown("SIGTERM"));
      process.on("SIGINT", () => shutdown("SIGINT"));
      await manager.start();
      memory.start();
      log.info("operator started", { identity: manager.identity, ...manager.addresses });
    });
}
