/**
 * The chart and `spillway operator` agree: the arguments the chart renders (with the
 * namespace the kubelet substitutes for $(POD_NAMESPACE)) are parsed by the real command
 * definition, flag by flag, into the values the platform team set. A flag renamed or removed
 * in the operator, or a value the operator's parser refuses, fails here rather than in a
 * CrashLoopBackOff.
 */
import { Command } from "commander";
import { register } from "../../operator/cli/commands/operator.ts";
import { type Doc, FULL_VALUES, ofKind, render } from "./helm.ts";

const NS = "spillway-system";

/** Parses `args` with the real command, its action replaced so nothing starts. */
async function parseAsOperator(args: string[]): Promise<Record<string, unknown>> {
  const program = new Command().exitOverride();
  register(program);
  const operator = program.commands.find((c) => c.name() === "operator")!;
  operator.exitOverride();
  let parsed: Record<string, unknown> | undefined;
  operator.action((flags: Record<string, unknown>) => {
    parsed = flags;
  });
  await program.parseAsync(args, { from: "user" });
  return parsed!;
}

/** Container args as the kubelet hands them to the process: $(POD_NAMESPACE) expanded. */
function renderedArgs(docs: Doc[]): string[] {
  const c = ofKind(docs, "Deployment")[0]!.spec.template.spec.containers[0]!;
  return (c.args as string[]).map((a) => a.replace("$(POD_NAMESPACE)", NS));
}

test("the default values parse into the operator's documented defaults", async () => {
  const flags = await parseAsOperator(renderedArgs(render({ namespace: NS })));
  expect(flags).toMatchObject({
    namespace: NS,
    leaderElect: true,
    leaderElectionId: "spillway-operator",
    leaseDuration: 15_000,
    metricsBindAddress: ":8080",
    healthProbeBindAddress: ":8081",
    logLevel: "info",
    offerRetention: 9600 * 3_600_000,
    remoteQps: 50,
    remoteBurst: 100,
    maxConcurrentReconciles: 8,
    clusterLostTimeout: 60_000,
    failbackInterval: 15 * 60_000,
    failbackMaxInterval: 60 * 60_000,
    pulumiStateDir: "/var/lib/spillway/pulumi",
  });
});

test("every value a platform team sets reaches the operator", async () => {
  const docs = render({
    namespace: NS,
    files: [FULL_VALUES],
    setJson: [
      'operator.logLevel="debug"',
      'operator.leaderElection.id="spillway-prod"',
      'operator.leaderElection.leaseDuration="30s"',
      'operator.offerRetention="8760h"',
      "operator.remote.qps=20",
      "operator.remote.burst=40",
      "operator.maxConcurrentReconciles=4",
      'operator.clusterLostTimeout="2m30s"',
      'operator.failback.interval="5m"',
      'operator.failback.maxInterval="2h"',
      "metrics.port=9090",
      "health.port=9091",
      'operator.pulumi.stateDir="/state"',
    ],
  });
  const flags = await parseAsOperator(renderedArgs(docs));
  expect(flags).toMatchObject({
    namespace: NS,
    origin: "mgmt-eastus",
    leaderElect: true,
    leaderElectionId: "spillway-prod",
    leaseDuration: 30_000,
    metricsBindAddress: ":9090",
    healthProbeBindAddress: ":9091",
    logLevel: "debug",
    offerRetention: 8760 * 3_600_000,
    remoteQps: 20,
    remoteBurst: 40,
    maxConcurrentReconciles: 4,
    clusterLostTimeout: 150_000,
    failbackInterval: 5 * 60_000,
    failbackMaxInterval: 2 * 3_600_000,
    pulumiStateDir: "/state",
  });
});

test("with one replica and leader election off, the operator runs unelected", async () => {
  const docs = render({ setJson: ["replicas=1", "operator.leaderElection.enabled=false"] });
  expect((await parseAsOperator(renderedArgs(docs))).leaderElect).toBe(false);
});
