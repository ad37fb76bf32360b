/**
 * The operator Deployment and its companions as a platform team gets them: the flags and
 * environment of the operator contract, probes and ports, two replicas under leader election
 * with a disruption budget, and the optional ServiceMonitor and NetworkPolicy.
 */
import { CHART, type Doc, FULL_VALUES, helm, ofKind, render } from "./helm.ts";

const NS = "spillway-system";
const deploymentOf = (docs: Doc[]) => ofKind(docs, "Deployment")[0]!;
const containerOf = (docs: Doc[]) => deploymentOf(docs).spec.template.spec.containers[0]!;

/** `--flag=value` / `--flag` arguments after the `operator` subcommand, as a map. */
function flagsOf(args: string[]): Record<string, string | true> {
  expect(args[0]).toBe("operator");
  return Object.fromEntries(
    args.slice(1).map((a) => {
      const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
      if (!m) throw new Error(`not a --flag: ${a}`);
      return [m[1]!, m[2] ?? true];
    }),
  );
}

describe("with the default values", () => {
  const docs = render({ namespace: NS });
  const c = containerOf(docs);

  test("the operator gets exactly the flags of the `spillway operator` contract", () => {
    expect(flagsOf(c.args)).toEqual({
      namespace: "$(POD_NAMESPACE)",
      "leader-elect": true,
      "leader-election-id": "spillway-operator",
      "lease-duration": "15s",
      "metrics-bind-address": ":8080",
      "health-probe-bind-address": ":8081",
      "log-level": "info",
      "offer-retention": "9600h",
      "remote-qps": "50",
      "remote-burst": "100",
      "max-concurrent-reconciles": "8",
      "cluster-lost-timeout": "60s",
      "failback-interval": "15m",
      "failback-max-interval": "1h",
      "pulumi-state-dir": "/var/lib/spillway/pulumi",
    });
  });

  test("POD_NAMESPACE and POD_NAME come from the downward API", () => {
    const env = Object.fromEntries(c.env.map((e: Doc) => [e.name, e.valueFrom?.fieldRef?.fieldPath]));
    expect(env.POD_NAMESPACE).toBe("metadata.namespace");
    expect(env.POD_NAME).toBe("metadata.name");
  });

  test("the Pulumi passphrase comes from an optional Secret key, never from a value", () => {
    const v = c.env.find((e: Doc) => e.name === "PULUMI_CONFIG_PASSPHRASE");
    expect(v).toEqual({
      name: "PULUMI_CONFIG_PASSPHRASE",
      valueFrom: { secretKeyRef: { name: "spillway-pulumi-passphrase", key: "passphrase", optional: true } },
    });
  });

  test("metrics on :8080, liveness on :8081/healthz, readiness on :8081/readyz", () => {
    const ports = Object.fromEntries(c.ports.map((p: Doc) => [p.name, p.containerPort]));
    expect(ports).toEqual({ metrics: 8080, health: 8081 });
    expect(c.livenessProbe.httpGet).toEqual({ path: "/healthz", port: "health" });
    expect(c.readinessProbe.httpGet).toEqual({ path: "/readyz", port: "health" });
    const [svc] = ofKind(docs, "Service");
    expect(svc!.spec.ports).toEqual([
      { name: "metrics", port: 8080, targetPort: "metrics", protocol: "TCP" },
    ]);
    expect(svc!.spec.selector).toEqual(deploymentOf(docs).spec.selector.matchLabels);
  });

  test("two replicas, rolled one at a time, behind a PodDisruptionBudget that keeps one", () => {
    const d = deploymentOf(docs);
    expect(d.spec.replicas).toBe(2);
    expect(d.spec.strategy).toBeUndefined(); // RollingUpdate: leader election keeps one active
    const [pdb] = ofKind(docs, "PodDisruptionBudget");
    expect(pdb!.spec.minAvailable).toBe(1);
    expect(pdb!.spec.selector.matchLabels).toEqual(d.spec.selector.matchLabels);
  });

  test("the two replicas prefer different nodes", () => {
    const anti = deploymentOf(docs).spec.template.spec.affinity.podAntiAffinity;
    const term = anti.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm;
    expect(term.topologyKey).toBe("kubernetes.io/hostname");
    expect(term.labelSelector.matchLabels).toEqual(deploymentOf(docs).spec.selector.matchLabels);
  });

  test("requests and a memory limit are set", () => {
    expect(c.resources).toEqual({ requests: { cpu: "100m", memory: "256Mi" }, limits: { memory: "1Gi" } });
  });

  test("the image is the chart's appVersion tag", () => {
    expect(c.image).toBe("ghcr.io/spillway-dev/spillway:0.1.0");
  });

  test("no ServiceMonitor, no NetworkPolicy and no CloudProvider unless asked for", () => {
    expect(ofKind(docs, "ServiceMonitor")).toEqual([]);
    expect(ofKind(docs, "NetworkPolicy")).toEqual([]);
    expect(ofKind(docs, "CloudProvider")).toEqual([]);
  });
});

test("an empty passphrase Secret name leaves PULUMI_CONFIG_PASSPHRASE out", () => {
  const c = containerOf(
    render({ setJson: ['operator.pulumi.passphraseSecret={"name":"","key":"passphrase"}'] }),
  );
  expect(c.env.map((e: Doc) => e.name)).not.toContain("PULUMI_CONFIG_PASSPHRASE");
});

test("an image digest replaces the tag", () => {
  const digest = `sha256:${"ab".repeat(32)}`;
  const c = containerOf(render({ setJson: [`image.digest="${digest}"`, 'image.tag="9.9.9"'] }));
  expect(c.image).toBe(`ghcr.io/spillway-dev/spillway@${digest}`);
});

test("one replica without leader election rolls out with Recreate (never two operators) and has no disruption budget", () => {
  const docs = render({ setJson: ["replicas=1", "operator.leaderElection.enabled=false"] });
  const flags = flagsOf(containerOf(docs).args);
  expect(flags["leader-elect"]).toBeUndefined();
  expect(flags["leader-election-id"]).toBeUndefined();
  expect(deploymentOf(docs).spec.strategy).toEqual({ type: "Recreate" });
  expect(deploymentOf(docs).spec.template.spec.affinity).toBeUndefined();
  expect(ofKind(docs, "PodDisruptionBudget")).toEqual([]);
});

test("leader election cannot be switched off with two replicas", () => {
  const docs = render({ setJson: ["replicas=2", "operator.leaderElection.enabled=false"] });
  expect(flagsOf(containerOf(docs).args)["leader-elect"]).toBe(true);
});

test("a disruption budget that would keep every pod is refused with a message", () => {
  const r = helm(["template", "spillway", CHART, "--set-json", "podDisruptionBudget.minAvailable=2"]);
  expect(r.code).not.toBe(0);
  expect(r.stderr).toContain("podDisruptionBudget.minAvailable (2) must be below replicas (2)");
});

describe("with the full example values", () => {
  const docs = render({ namespace: NS, files: [FULL_VALUES] });

  test("a ServiceMonitor scrapes the metrics Service's port with the release label Prometheus selects", () => {
    const [sm] = ofKind(docs, "ServiceMonitor");
    expect(sm!.metadata.labels.release).toBe("kube-prometheus-stack");
    expect(sm!.spec.endpoints).toEqual([
      { port: "metrics", path: "/metrics", interval: "30s", scrapeTimeout: "10s" },
    ]);
    expect(sm!.spec.namespaceSelector).toEqual({ matchNames: [NS] });
    const [svc] = ofKind(docs, "Service");
    expect(sm!.spec.selector.matchLabels).toEqual(
      Object.fromEntries(
        Object.entries(svc!.metadata.labels).filter(([k]) => k in sm!.spec.selector.matchLabels),
      ),
    );
  });

  test("the NetworkPolicy admits metrics from monitoring and probes, and egress to DNS and 443/6443 only", () => {
    const [np] = ofKind(docs, "NetworkPolicy");
    expect(np!.spec.policyTypes).toEqual(["Ingress", "Egress"]);
    expect(np!.spec.podSelector.matchLabels).toEqual(deploymentOf(docs).spec.selector.matchLabels);
    expect(np!.spec.ingress[0].from).toEqual([
      { namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "monitoring" } } },
    ]);
    expect(np!.spec.ingress.map((r: Doc) => r.ports[0].port)).toEqual(["metrics", "health"]);
    const egressPorts = np!.spec.egress.flatMap((r: Doc) =>
      r.ports.map((p: Doc) => `${p.protocol}/${p.port}`),
    );
    expect(egressPorts.sort()).toEqual(["TCP/443", "TCP/53", "TCP/6443", "UDP/53"]);
  });

  test("the providers become CloudProviders, the primary first, credentials by Secret name only", () => {
    const cps = ofKind(docs, "CloudProvider");
    expect(cps.map((p) => [p.metadata.name, p.spec.role])).toEqual([
      ["azure-eastus", "primary"],
      ["oci-ashburn", "alternative"],
    ]);
    expect(cps[0]!.spec.azure.credentialsSecretRef).toEqual({ name: "azure-credentials" });
    expect(cps[0]!.metadata.namespace).toBeUndefined(); // cluster-scoped
  });
});

describe("NOTES.txt", () => {
  const notes = (setJson: string[]) => {
    const args = ["install", "spillway", CHART, "--dry-run=client", "--namespace", NS];
    for (const s of setJson) args.push("--set-json", s);
    const r = helm(args);
    expect(r.code).toBe(0);
    return r.stdout.slice(r.stdout.indexOf("NOTES:"));
  };
  const ociProvisioned = (provision: Record<string, unknown>) =>
    `providers=${JSON.stringify([
      {
        name: "oci-ashburn",
        spec: {
          type: "oci",
          region: "us-ashburn-1",
          jurisdiction: "US",
          capacity: { gpus: [{ type: "H100", sku: "BM.GPU.H100.8", gpusPerNode: 8 }] },
          cluster: { provision: { program: "oci", ...provision } },
        },
      },
    ])}`;

  test("tells the next steps: rollout status, the providers, and how CRDs are upgraded", () => {
    const text = notes([]);
    expect(text).toContain(`kubectl -n ${NS} rollout status deployment/spillway`);
    expect(text).toContain("No provider was declared with the release");
    expect(text).toContain("kubectl apply --server-side -f -");
  });

  test("warns when a provider would keep Pulumi state in the pod's emptyDir", () => {
    expect(notes([ociProvisioned({})])).toContain(
      "WARNING: oci-ashburn provision clusters with Pulumi state",
    );
    expect(notes([ociProvisioned({ backendUrl: "azblob://state" })])).not.toContain("WARNING");
    expect(notes([ociProvisioned({}), 'operator.pulumi.existingClaim="pulumi"'])).not.toContain("WARNING");
  });
});
