import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { renderCrdFiles } from "../../operator/api/render.ts";
import { checkRuleSyntax } from "../../operator/api/schema/cel.ts";
import type { JSONSchemaProps } from "../../operator/api/schema/types.ts";
import { KINDS } from "../../operator/api/v1alpha1/index.ts";
import { ROOT } from "../helpers/examples.ts";

describe("generated CRDs", () => {
  test("crds/ holds exactly one generated CRD per kind, identical to the source (no drift)", () => {
    const files = renderCrdFiles();
    const onDisk = readdirSync(join(ROOT, "crds")).filter((f) => f.endsWith(".yaml"));
    expect(onDisk.sort()).toEqual(
      Object.keys(files)
        .map((f) => f.replace("crds/", ""))
        .sort(),
    );
    expect(onDisk).toHaveLength(KINDS.length);
    for (const [rel, text] of Object.entries(files)) {
      expect({ file: rel, text: readFileSync(join(ROOT, rel), "utf8") }).toEqual({ file: rel, text });
    }
  });

  const crds = KINDS.map((k) => ({
    kind: k.kind,
    crd: parse(readFileSync(join(ROOT, "crds", `spillway.dev_${k.plural}.yaml`), "utf8")),
  }));

  test.each(crds)("$kind has status subresource, short name, category and printer columns", ({ crd }) => {
    const v = crd.spec.versions[0];
    expect(v.subresources).toEqual({ status: {} });
    expect(crd.spec.names.shortNames.length).toBeGreaterThan(0);
    expect(crd.spec.names.categories).toEqual(["spillway"]);
    expect(v.additionalPrinterColumns.map((c: { name: string }) => c.name)).toContain("Age");
  });

  test("short names are the ones users type", () => {
    const short = Object.fromEntries(crds.map(({ kind, crd }) => [kind, crd.spec.names.shortNames]));
    expect(short).toEqual({
      TrainingRun: ["tr"],
      CloudProvider: ["cp"],
      CapacityOffer: ["offer"],
      DataSet: ["ds"],
      ProvisionedCluster: ["pc"],
    });
  });

  test("printer columns: runs show phase, placement and GPUs; offers show run, provider, outcome and reason", () => {
    const cols = (kind: string) =>
      crds
        .find((c) => c.kind === kind)!
        .crd.spec.versions[0].additionalPrinterColumns.filter((c: { priority?: number }) => !c.priority)
        .map((c: { name: string }) => c.name);
    expect(cols("TrainingRun")).toEqual(["Phase", "Placement", "GPUs", "Age"]);
    expect(cols("CapacityOffer")).toEqual(["Run", "Provider", "Outcome", "Reason", "Age"]);
  });

  /**
   * Kubernetes' structural-schema rules (apiextensions "Specifying a structural schema"):
   * every node has a type (or int-or-string / preserve-unknown-fields); no
   * additionalProperties beside properties; anyOf/allOf/oneOf/not carry no type,
   * description or default; metadata is constrained only by name/generateName. We also
   * require a description on every field (for kubectl explain) and a bound on every string.
   */
  function structuralProblems(s: JSONSchemaProps, path: string, out: string[]): void {
    if (!s.type && !s["x-kubernetes-int-or-string"] && !s["x-kubernetes-preserve-unknown-fields"]) {
      out.push(`${path}: no type`);
    }
    if (s.properties && s.additionalProperties !== undefined) {
      out.push(`${path}: additionalProperties beside properties`);
    }
    for (const key of ["anyOf", "allOf", "oneOf"] as const) {
      for (const branch of s[key] ?? []) {
        if (branch.type || branch.description || branch.default !== undefined) {
          out.push(`${path}: ${key} branch carries type/description/default`);
        }
      }
    }
    if (!s.description && path !== "metadata" && !/\[\]$/.test(path)) out.push(`${path}: no description`);
    if (s.type === "string" && s.maxLength === undefined && !s.enum && !s.format) {
      out.push(`${path}: unbounded string`);
    }
    if (s.type === "array" && s.maxItems === undefined) out.push(`${path}: unbounded array`);
    for (const [k, sub] of Object.entries(s.properties ?? {}))
      structuralProblems(sub, path ? `${path}.${k}` : k, out);
    if (s.items) structuralProblems(s.items, `${path}[]`, out);
    if (typeof s.additionalProperties === "object")
      structuralProblems(s.additionalProperties, `${path}{}`, out);
  }

  test.each(crds)("$kind's schema is structural, described and bounded", ({ crd }) => {
    const schema = crd.spec.versions[0].schema.openAPIV3Schema as JSONSchemaProps;
    const problems: string[] = [];
    structuralProblems(schema, "", problems);
    expect(problems).toEqual([]);
    expect(schema.properties!.metadata).toEqual({ type: "object" });
  });

  test.each(crds)("$kind's CEL rules all parse", ({ crd }) => {
    const rules: string[] = [];
    const walk = (s: JSONSchemaProps) => {
      for (const r of s["x-kubernetes-validations"] ?? []) rules.push(r.rule);
      Object.values(s.properties ?? {}).forEach(walk);
      if (s.items) walk(s.items);
    };
    walk(crd.spec.versions[0].schema.openAPIV3Schema);
    expect(rules.map((r) => [r, checkRuleSyntax(r)]).filter(([, e]) => e)).toEqual([]);
  });

  test("TrainingRun declares the serving and immutability rules", () => {
    const json = JSON.stringify(crds.find((c) => c.kind === "TrainingRun")!.crd);
    expect(json).toContain("serving runs are primary-exclusive");
    const offer = JSON.stringify(crds.find((c) => c.kind === "CapacityOffer")!.crd);
    expect(offer).toContain("spec is immutable");
  });
});
