/**
 * The Kubernetes Pod Security Standards, "restricted" profile (and "baseline", which it
 * includes), written out as explicit checks on every pod template the chart renders.
 */
import { type Doc, FULL_VALUES, render } from "./helm.ts";

const WORKLOAD_KINDS = new Set([
  "Pod",
  "Deployment",
  "StatefulSet",
  "DaemonSet",
  "Job",
  "CronJob",
  "ReplicaSet",
]);
const ALLOWED_VOLUME_TYPES = new Set([
  "configMap",
  "csi",
  "downwardAPI",
  "emptyDir",
  "ephemeral",
  "persistentVolumeClaim",
  "projected",
  "secret",
]);
const SAFE_SYSCTLS = new Set([
  "kernel.shm_rmid_forced",
  "net.ipv4.ip_local_port_range",
  "net.ipv4.ip_unprivileged_port_start",
  "net.ipv4.tcp_syncookies",
  "net.ipv4.ping_group_range",
  "net.ipv4.ip_local_reserved_ports",
  "net.ipv4.tcp_keepalive_time",
  "net.ipv4.tcp_fin_timeout",
  "net.ipv4.tcp_keepalive_intvl",
  "net.ipv4.tcp_keepalive_probes",
]);

function podSpecOf(doc: Doc): Doc {
  if (doc.kind === "Pod") return doc.spec;
  if (doc.kind === "CronJob") return doc.spec.jobTemplate.spec.template.spec;
  return doc.spec.template.spec;
}

/** Every violation of the restricted profile in one pod spec, as readable strings. */
function restrictedViolations(pod: Doc): string[] {
  const v: string[] = [];
  const psc = pod.securityContext ?? {};
  for (const ns of ["hostNetwork", "hostPID", "hostIPC"]) if (pod[ns] === true) v.push(`pod: ${ns}`);
  if (pod.hostUsers === true) v.push("pod: hostUsers");
  for (const vol of pod.volumes ?? []) {
    const types = Object.keys(vol).filter((k) => k !== "name");
    for (const t of types) if (!ALLOWED_VOLUME_TYPES.has(t)) v.push(`volume ${vol.name}: type ${t}`);
  }
  for (const s of psc.sysctls ?? []) if (!SAFE_SYSCTLS.has(s.name)) v.push(`pod: sysctl ${s.name}`);
  if (psc.runAsUser === 0) v.push("pod: runAsUser 0");
  const seLinuxOk = (t?: string) =>
    !t || ["container_t", "container_init_t", "container_kvm_t", "container_engine_t"].includes(t);
  if (!seLinuxOk(psc.seLinuxOptions?.type)) v.push("pod: seLinux type");
  if (psc.seLinuxOptions?.user || psc.seLinuxOptions?.role) v.push("pod: seLinux user/role");
  if (psc.appArmorProfile?.type === "Unconfined") v.push("pod: appArmor Unconfined");
  for (const [key, value] of Object.entries((pod.metadata?.annotations ?? {}) as Record<string, string>)) {
    if (key.startsWith("container.apparmor.security.beta.kubernetes.io/") && value === "unconfined")
      v.push(`pod: ${key}`);
  }

  const containers = [
    ...(pod.initContainers ?? []),
    ...(pod.containers ?? []),
    ...(pod.ephemeralContainers ?? []),
  ];
  if (containers.length === 0) v.push("pod: no containers");
  for (const c of containers) {
    const sc = c.securityContext ?? {};
    const at = `container ${c.name}`;
    if (sc.privileged === true) v.push(`${at}: privileged`);
    if (sc.allowPrivilegeEscalation !== false) v.push(`${at}: allowPrivilegeEscalation is not false`);
    const drop: string[] = sc.capabilities?.drop ?? [];
    if (!drop.includes("ALL")) v.push(`${at}: capabilities do not drop ALL`);
    for (const cap of sc.capabilities?.add ?? [])
      if (cap !== "NET_BIND_SERVICE") v.push(`${at}: adds ${cap}`);
    const runAsNonRoot = sc.runAsNonRoot ?? psc.runAsNonRoot;
    if (runAsNonRoot !== true) v.push(`${at}: runAsNonRoot is not true`);
    if (sc.runAsUser === 0) v.push(`${at}: runAsUser 0`);
    const seccomp = sc.seccompProfile?.type ?? psc.seccompProfile?.type;
    if (seccomp !== "RuntimeDefault" && seccomp !== "Localhost") v.push(`${at}: seccomp profile ${seccomp}`);
    for (const p of c.ports ?? []) if (p.hostPort) v.push(`${at}: hostPort ${p.hostPort}`);
    if (sc.procMount && sc.procMount !== "Default") v.push(`${at}: procMount ${sc.procMount}`);
    if (!seLinuxOk(sc.seLinuxOptions?.type)) v.push(`${at}: seLinux type`);
    if (sc.seLinuxOptions?.user || sc.seLinuxOptions?.role) v.push(`${at}: seLinux user/role`);
    if (sc.appArmorProfile?.type === "Unconfined") v.push(`${at}: appArmor Unconfined`);
    if (sc.windowsOptions?.hostProcess === true) v.push(`${at}: hostProcess`);
  }
  return v;
}

const setups = [
  { name: "default values", docs: render() },
  { name: "the full example values", docs: render({ files: [FULL_VALUES] }) },
  {
    name: "two replicas with a PVC for Pulumi state",
    docs: render({ setJson: ["replicas=2", 'operator.pulumi.existingClaim="pulumi"'] }),
  },
];

describe.each(setups)("pods rendered with $name", ({ docs }) => {
  const workloads = docs.filter((d) => WORKLOAD_KINDS.has(d.kind));

  test("there is a workload to check", () => {
    expect(workloads.map((w) => w.kind)).toEqual(["Deployment"]);
  });

  test("every pod and container passes the restricted Pod Security Standard", () => {
    const violations = workloads.flatMap((w) =>
      restrictedViolations({ ...podSpecOf(w), metadata: w.spec.template?.metadata }).map(
        (x) => `${w.kind}/${w.metadata.name}: ${x}`,
      ),
    );
    expect(violations).toEqual([]);
  });

  test("the operator runs with a read-only root filesystem, as uid 65532, writing only to its volumes", () => {
    for (const w of workloads) {
      const pod = podSpecOf(w);
      expect(pod.securityContext.runAsUser).toBe(65532);
      for (const c of pod.containers) {
        expect(c.securityContext.readOnlyRootFilesystem).toBe(true);
        const mounts = c.volumeMounts.map((m: Doc) => m.mountPath).sort();
        expect(mounts).toEqual(["/tmp", "/var/lib/spillway/pulumi"]);
      }
    }
  });
});

describe("the checks catch what they are meant to catch", () => {
  const good = podSpecOf(render().find((d) => d.kind === "Deployment")!);
  const mutated = (f: (p: Doc) => void) => {
    const p = structuredClone(good);
    f(p);
    return restrictedViolations(p);
  };

  test("the rendered pod has no violations", () => {
    expect(restrictedViolations(good)).toEqual([]);
  });

  test.each([
    [
      "hostNetwork",
      (p: Doc) => {
        p.hostNetwork = true;
      },
      "pod: hostNetwork",
    ],
    [
      "hostPID",
      (p: Doc) => {
        p.hostPID = true;
      },
      "pod: hostPID",
    ],
    [
      "a hostPath volume",
      (p: Doc) => {
        p.volumes.push({ name: "h", hostPath: { path: "/" } });
      },
      "volume h: type hostPath",
    ],
    [
      "a hostPort",
      (p: Doc) => {
        p.containers[0].ports[0].hostPort = 8080;
      },
      "hostPort 8080",
    ],
    [
      "privileged",
      (p: Doc) => {
        p.containers[0].securityContext.privileged = true;
      },
      "privileged",
    ],
    [
      "privilege escalation",
      (p: Doc) => {
        delete p.containers[0].securityContext.allowPrivilegeEscalation;
      },
      "allowPrivilegeEscalation is not false",
    ],
    [
      "an added capability",
      (p: Doc) => {
        p.containers[0].securityContext.capabilities.add = ["NET_ADMIN"];
      },
      "adds NET_ADMIN",
    ],
    [
      "capabilities not dropped",
      (p: Doc) => {
        p.containers[0].securityContext.capabilities.drop = [];
      },
      "do not drop ALL",
    ],
    [
      "root allowed",
      (p: Doc) => {
        p.securityContext.runAsNonRoot = false;
        p.containers[0].securityContext.runAsNonRoot = false;
      },
      "runAsNonRoot is not true",
    ],
    [
      "seccomp Unconfined",
      (p: Doc) => {
        p.securityContext.seccompProfile.type = "Unconfined";
        p.containers[0].securityContext.seccompProfile.type = "Unconfined";
      },
      "seccomp profile Unconfined",
    ],
  ])("%s is reported", (_name, f, expected) => {
    expect(mutated(f as (p: Doc) => void).join("\n")).toContain(expected);
  });

  test("adding only NET_BIND_SERVICE is allowed", () => {
    expect(
      mutated((p) => {
        p.containers[0].securityContext.capabilities.add = ["NET_BIND_SERVICE"];
      }),
    ).toEqual([]);
  });
});
