/**
 * Acceptance: the real kubectl against the sandbox API server, the way a user drives a real
 * cluster: apply the CRDs and the examples, get (with the CRDs' printer columns, also
 * `-o wide`), explain, describe, wait for a condition, server-side dry run, delete; an
 * invalid TrainingRun is refused with the schema's field path.
 */
import { join } from "node:path";
import { type ApiServer, startApiServer } from "../../../operator/sandbox/apiserver/index.ts";
import { ROOT } from "../../helpers/examples.ts";
import { Kubectl } from "./kubectl.ts";

let server: ApiServer;
let kubectl: Kubectl;

beforeAll(async () => {
  server = await startApiServer({ name: "kubectl-test" });
  kubectl = await Kubectl.for(server);
  // Every test below works on the objects of crds/ and examples/.
  await kubectl.ok(["apply", "-f", join(ROOT, "crds")]);
  await kubectl.ok(["apply", "-f", join(ROOT, "examples")]);
});
afterAll(async () => {
  await server.close();
  kubectl.cleanup();
});

/** The rows of a `kubectl get` table, split on runs of spaces. */
function rows(table: string): string[][] {
  return table
    .trim()
    .split("\n")
    .map((l) => l.trim().split(/\s{2,}/));
}

describe("kubectl against the sandbox API server", () => {
  it("re-applies crds/ and examples/ as unchanged; metadata changes keep the generation", async () => {
    const crds = await kubectl.ok(["apply", "-f", join(ROOT, "crds")]);
    expect(crds).toContain(
      "customresourcedefinition.apiextensions.k8s.io/trainingruns.spillway.dev unchanged",
    );
    const examples = await kubectl.ok(["apply", "-f", join(ROOT, "examples")]);
    expect(examples).toContain("trainingrun.spillway.dev/llama-pretrain unchanged");
    expect(examples).toContain("namespace/ml-team unchanged");

    const manifest = await kubectl.ok(["get", "dataset", "pretrain-corpus", "-n", "ml-team", "-o", "json"]);
    const ds = JSON.parse(manifest);
    const annotated = await kubectl.ok(["annotate", "dataset", "pretrain-corpus", "-n", "ml-team", "note=x"]);
    expect(annotated).toContain("annotated");
    const after = JSON.parse(
      await kubectl.ok(["get", "dataset", "pretrain-corpus", "-n", "ml-team", "-o", "json"]),
    );
    expect(after.metadata.annotations.note).toBe("x");
    // Metadata changes do not bump the generation; the resourceVersion moves on.
    expect(after.metadata.generation).toBe(ds.metadata.generation);
    expect(Number(after.metadata.resourceVersion)).toBeGreaterThan(Number(ds.metadata.resourceVersion));
  });

  it("applies a changed built-in object as configured (strategic merge patch)", async () => {
    const cm = (v: string) =>
      JSON.stringify({
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: "settings", namespace: "ml-team", labels: { tier: "a" } },
        data: { level: v, keep: "yes" },
      });
    expect(await kubectl.ok(["apply", "-f", "-"], cm("1"))).toContain("configmap/settings created");
    expect(await kubectl.ok(["apply", "-f", "-"], cm("2"))).toContain("configmap/settings configured");
    const got = JSON.parse(await kubectl.ok(["get", "cm", "settings", "-n", "ml-team", "-o", "json"]));
    expect(got.data).toEqual({ level: "2", keep: "yes" });
    const listed = rows(await kubectl.ok(["get", "cm", "-n", "ml-team", "-l", "tier=a"]));
    expect(listed[0]).toEqual(["NAME", "DATA", "AGE"]);
    expect(listed[1]!.slice(0, 2)).toEqual(["settings", "2"]);
  });

  it("accepts the protobuf bodies of `kubectl create` for secrets, configmaps, namespaces and service accounts", async () => {
    expect(await kubectl.ok(["create", "namespace", "imperative"])).toContain("namespace/imperative created");
    const ns = ["-n", "imperative"];
    await kubectl.ok(["create", "secret", "generic", "creds", "--from-literal=token=s3cr3t", ...ns]);
    await kubectl.ok(["create", "configmap", "conf", "--from-literal=mode=fast", ...ns]);
    await kubectl.ok(["create", "serviceaccount", "runner", ...ns]);
    const secret = JSON.parse(await kubectl.ok(["get", "secret", "creds", "-o", "json", ...ns]));
    expect(Buffer.from(secret.data.token, "base64").toString()).toBe("s3cr3t");
    expect(secret.type).toBe("Opaque");
    const cm = JSON.parse(await kubectl.ok(["get", "configmap", "conf", "-o", "json", ...ns]));
    expect(cm.data).toEqual({ mode: "fast" });
    expect(await kubectl.ok(["get", "serviceaccount", "runner", "-o", "name", ...ns])).toBe(
      "serviceaccount/runner\n",
    );
    expect(await kubectl.ok(["delete", "namespace", "imperative"])).toContain(
      'namespace "imperative" deleted',
    );
    expect((await kubectl.run(["get", "secret", "creds", ...ns])).code).not.toBe(0);
  });

  it("prints the TrainingRun printer columns with `get`, and the priority ones with `-o wide`", async () => {
    const table = rows(await kubectl.ok(["get", "trainingruns", "-n", "ml-team"]));
    expect(table[0]).toEqual(["NAME", "PHASE", "PLACEMENT", "GPUS", "AGE"]);
    expect(table.map((r) => r[0])).toEqual(["NAME", "api-serving", "llama-pretrain"]);

    const wide = await kubectl.ok(["get", "tr", "llama-pretrain", "-n", "ml-team", "-o", "wide"]);
    const [header, line] = wide.split("\n") as [string, string];
    expect(rows(header)[0]).toEqual(
      expect.arrayContaining(["NAME", "CLASS", "PHASE", "GPU-TYPE", "NODES", "AGE"]),
    );
    // A cell starts where its column header starts.
    const column = (name: string) => line.slice(header.indexOf(name)).split(/\s+/)[0];
    expect(column("CLASS")).toBe("training");
    expect(column("GPU-TYPE")).toBe("H100");
    expect(column("NODES")).toBe("2");

    const all = await kubectl.ok(["get", "spillway", "-A"]);
    expect(all).toContain("cloudprovider.spillway.dev/azure-eastus");
    expect(all).toContain("trainingrun.spillway.dev/llama-pretrain");
  });

  it("explains trainingrun.spec from the CRD schema", async () => {
    const out = await kubectl.ok(["explain", "trainingrun.spec"]);
    expect(out).toContain("KIND:       TrainingRun");
    expect(out).toContain("FIELD: spec <Object>");
    for (const field of ["placement", "resources", "template", "workloadClass"]) expect(out).toContain(field);
    const nested = await kubectl.ok(["explain", "trainingrun.spec.resources.gpu.count"]);
    expect(nested).toContain("<integer>");
  });

  it("describes a TrainingRun with its spec and the Events about it", async () => {
    const uid = (
      await kubectl.ok(["get", "tr", "llama-pretrain", "-n", "ml-team", "-o", "jsonpath={.metadata.uid}"])
    ).trim();
    await kubectl.ok(
      ["apply", "-f", "-"],
      JSON.stringify({
        apiVersion: "v1",
        kind: "Event",
        metadata: { name: "llama-pretrain.offered", namespace: "ml-team" },
        involvedObject: {
          apiVersion: "spillway.dev/v1alpha1",
          kind: "TrainingRun",
          name: "llama-pretrain",
          namespace: "ml-team",
          uid,
        },
        reason: "OfferedToPrimary",
        message: "offered 16 H100 to azure-eastus",
        type: "Normal",
        source: { component: "spillway-controller" },
        firstTimestamp: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
        lastTimestamp: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
        count: 1,
      }),
    );
    const out = await kubectl.ok(["describe", "trainingrun", "llama-pretrain", "-n", "ml-team"]);
    expect(out).toMatch(/^Name:\s+llama-pretrain$/m);
    expect(out).toMatch(/^Namespace:\s+ml-team$/m);
    expect(out).toContain("Workload Class:  training");
    expect(out).toMatch(
      /Normal\s+OfferedToPrimary\s+\S+\s+spillway-controller\s+offered 16 H100 to azure-eastus/,
    );
    const events = rows(await kubectl.ok(["get", "events", "-n", "ml-team"]));
    expect(events[0]).toEqual(["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]);
    expect(events[1]!.slice(1)).toEqual([
      "Normal",
      "OfferedToPrimary",
      "trainingrun/llama-pretrain",
      "offered 16 H100 to azure-eastus",
    ]);
  });

  it("waits for a condition that a status write sets", async () => {
    const waiting = kubectl.run([
      "wait",
      "--for=condition=Ready",
      "trainingrun/api-serving",
      "-n",
      "ml-team",
      "--timeout=30s",
    ]);
    const status = {
      status: {
        phase: "Running",
        conditions: [
          {
            type: "Ready",
            status: "True",
            reason: "Running",
            message: "serving on azure-eastus",
            lastTransitionTime: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
          },
        ],
      },
    };
    await kubectl.ok([
      "patch",
      "trainingrun",
      "api-serving",
      "-n",
      "ml-team",
      "--subresource=status",
      "--type=merge",
      "-p",
      JSON.stringify(status),
    ]);
    const r = await waiting;
    expect(r.stderr).toBe("");
    expect(r.stdout).toContain("trainingrun.spillway.dev/api-serving condition met");
    expect(r.code).toBe(0);
    const table = rows(await kubectl.ok(["get", "tr", "api-serving", "-n", "ml-team"]));
    expect(table[1]![1]).toBe("Running");
  });

  it("refuses an invalid TrainingRun with the schema's field path", async () => {
    const bad = {
      apiVersion: "spillway.dev/v1alpha1",
      kind: "TrainingRun",
      metadata: { name: "bad-run", namespace: "ml-team" },
      spec: {
        workloadClass: "training",
        template: { spec: { containers: [{ name: "t", image: "trainer:1" }] } },
        resources: { gpu: { type: "H100", count: -3 }, nodes: 2 },
      },
    };
    const r = await kubectl.run(["apply", "-f", "-"], JSON.stringify(bad));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('The TrainingRun "bad-run" is invalid');
    expect(r.stderr).toContain("spec.resources.gpu.count");
    const get = await kubectl.run(["get", "tr", "bad-run", "-n", "ml-team"]);
    expect(get.stderr).toContain('trainingruns.spillway.dev "bad-run" not found');
  });

  it("enforces the CRD's CEL rules (transition rules with oldSelf included) and refuses unknown fields", async () => {
    const run = JSON.parse(await kubectl.ok(["get", "tr", "llama-pretrain", "-n", "ml-team", "-o", "json"]));
    const patch = await kubectl.run([
      "patch",
      "tr",
      "llama-pretrain",
      "-n",
      "ml-team",
      "--type=merge",
      "-p",
      JSON.stringify({ spec: { workloadClass: "research" } }),
    ]);
    expect(patch.code).not.toBe(0);
    expect(patch.stderr).toContain("spec.workloadClass");
    expect(patch.stderr).toContain("workloadClass is immutable");

    const serving = {
      apiVersion: "spillway.dev/v1alpha1",
      kind: "TrainingRun",
      metadata: { name: "serving-with-alternatives", namespace: "ml-team" },
      spec: { ...run.spec, workloadClass: "serving", placement: { alternatives: ["oci-ashburn"] } },
    };
    const cel = await kubectl.run(["apply", "-f", "-"], JSON.stringify(serving));
    expect(cel.code).not.toBe(0);
    expect(cel.stderr).toContain("spec.placement.alternatives");
    expect(cel.stderr).toContain("serving runs are primary-exclusive");

    const unknown = {
      ...serving,
      metadata: { name: "with-unknown-field", namespace: "ml-team" },
      spec: { ...run.spec, colour: "blue" },
    };
    const strict = await kubectl.run(["apply", "-f", "-"], JSON.stringify(unknown));
    expect(strict.code).not.toBe(0);
    expect(strict.stderr).toContain('unknown field "spec.colour"');
  });

  it("validates but does not store with --dry-run=server", async () => {
    const manifest = JSON.parse(
      await kubectl.ok(["get", "tr", "llama-pretrain", "-n", "ml-team", "-o", "json"]),
    );
    const copy = {
      apiVersion: manifest.apiVersion,
      kind: manifest.kind,
      metadata: { name: "dry-run-copy", namespace: "ml-team" },
      spec: manifest.spec,
    };
    const out = await kubectl.ok(["apply", "--dry-run=server", "-f", "-"], JSON.stringify(copy));
    expect(out).toContain("trainingrun.spillway.dev/dry-run-copy created (server dry run)");
    const get = await kubectl.run(["get", "tr", "dry-run-copy", "-n", "ml-team"]);
    expect(get.code).not.toBe(0);
  });

  it("deletes, waiting until the object is gone", async () => {
    const out = await kubectl.ok(["delete", "-f", join(ROOT, "examples", "30-dataset.yaml")]);
    expect(out).toContain('dataset.spillway.dev "pretrain-corpus" deleted');
    const get = await kubectl.run(["get", "dataset", "pretrain-corpus", "-n", "ml-team"]);
    expect(get.stderr).toContain('datasets.spillway.dev "pretrain-corpus" not found');
  });
});
