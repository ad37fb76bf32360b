// `pulumi preview`-readiness without the CLI: each infra/* project is a valid nodejs project
// whose entry point exists, and its example stack config documents every key the program reads
// (and is itself accepted by the program's validation).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "@jest/globals";
import { parse } from "yaml";
import type { ConfigSource } from "../../infra/shared/config.ts";
import { ROOT } from "../helpers/examples.ts";

const programs = [
  {
    dir: "oci",
    project: "spillway-oci",
    read: async () => (await import("../../infra/oci/program.ts")).readOciSettings,
  },
  {
    dir: "azure",
    project: "spillway-azure",
    read: async () => (await import("../../infra/azure/program.ts")).readAzureSettings,
  },
] as const;

function recording(values: Record<string, string>): ConfigSource & { keys: Set<string> } {
  const keys = new Set<string>();
  return {
    keys,
    get: (k) => {
      keys.add(k);
      return values[k];
    },
  };
}

describe.each(programs)("infra/$dir project", ({ dir, project, read }) => {
  const projectFile = parse(readFileSync(join(ROOT, "infra", dir, "Pulumi.yaml"), "utf8"));
  const exampleText = readFileSync(join(ROOT, "infra", dir, "Pulumi.example.yaml"), "utf8");
  const example: Record<string, string> = Object.fromEntries(
    Object.entries(parse(exampleText).config as Record<string, unknown>).map(([k, v]) => [
      k.startsWith(`${project}:`) ? k.slice(project.length + 1) : k,
      String(v),
    ]),
  );

  it("is a nodejs project named after the program whose entry point exists", () => {
    expect(projectFile.name).toBe(project);
    expect(projectFile.runtime.name).toBe("nodejs");
    expect(existsSync(join(ROOT, "infra", dir, projectFile.main))).toBe(true);
    expect(readFileSync(join(ROOT, "infra", dir, projectFile.main), "utf8")).toMatch(/export default/);
  });

  it("has an example stack config the program accepts", async () => {
    const readSettings = await read();
    expect(() => readSettings(recording(example))).not.toThrow();
  });

  it("documents every key the program reads in the example stack config", async () => {
    const readSettings = await read();
    const source = recording(example);
    readSettings(source);
    expect(source.keys.size).toBeGreaterThan(5);
    for (const key of source.keys) {
      const qualified = key.includes(":") ? key : `${project}:${key}`;
      // A key is documented when it appears (set or commented out) in the example.
      expect({ key, documented: exampleText.includes(`${qualified}:`) || key === "location" }).toEqual({
        key,
        documented: true,
      });
    }
  });

  it("declares in Pulumi.yaml or sets in the example every key the program requires", async () => {
    const readSettings = await read();
    let message = "";
    try {
      readSettings(recording({}));
    } catch (e) {
      message = (e as Error).message;
    }
    const required = [...message.matchAll(/config ([\w:-]+) is required/g)].map((m) => m[1]!);
    expect(required.length).toBeGreaterThan(0);
    const declared = Object.keys(projectFile.config ?? {});
    for (const key of required) {
      expect({
        key,
        present:
          declared.includes(key) ||
          key in example ||
          (key === "location" && "azure-native:location" in example),
      }).toEqual({
        key,
        present: true,
      });
    }
  });
});
