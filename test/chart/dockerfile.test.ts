/**
 * Static checks of the Dockerfile and .dockerignore (no Docker engine here to build them):
 * pinned Node 24 slim base, multi-stage, non-root numeric USER, production dependencies only,
 * no secret or whole-context COPY, Pulumi versions equal to package.json's, entrypoint
 * `spillway operator`, and a build context that excludes dependencies, VCS, state and secrets.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "../helpers/examples.ts";

interface Instruction {
  op: string;
  args: string;
  stage: number;
}

/** Instructions with continuation lines joined and comments dropped; stage = index of its FROM. */
function parseDockerfile(text: string): Instruction[] {
  const logical: string[] = [];
  let current = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line.startsWith("#") || (line === "" && current === "")) continue;
    if (line.endsWith("\\")) {
      current += `${line.slice(0, -1)} `;
      continue;
    }
    logical.push(current + line);
    current = "";
  }
  let stage = -1;
  return logical
    .filter((l) => l !== "")
    .map((l) => {
      const [op, ...rest] = l.split(/\s+/);
      if (op!.toUpperCase() === "FROM") stage++;
      return { op: op!.toUpperCase(), args: rest.join(" "), stage };
    });
}

const dockerfile = parseDockerfile(readFileSync(join(ROOT, "Dockerfile"), "utf8"));
const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
const argDefault = (name: string) =>
  dockerfile.find((i) => i.op === "ARG" && i.args.startsWith(`${name}=`))?.args.slice(name.length + 1);
const froms = dockerfile.filter((i) => i.op === "FROM");
const finalStage = froms.length - 1;
const final = dockerfile.filter((i) => i.stage === finalStage);
/** Resolves `${NODE_IMAGE}` in a FROM to the ARG default. */
const baseImage = (from: Instruction) =>
  from.args.split(/\s+/)[0]!.replace(/\$\{(\w+)\}/g, (_, n: string) => argDefault(n) ?? "");

describe("Dockerfile", () => {
  test("every stage is Node 24 slim, pinned to package.json's exact Node version", () => {
    const nodeVersion = pkg.devDependencies.node as string;
    expect(nodeVersion).toMatch(/^24\.\d+\.\d+$/);
    expect(froms.length).toBeGreaterThanOrEqual(2);
    for (const f of froms) {
      expect(baseImage(f)).toBe(`node:${nodeVersion}-bookworm-slim`);
    }
  });

  test("multi-stage: compile in one stage, install production dependencies in another, copy only results", () => {
    const runs = dockerfile.filter((i) => i.op === "RUN").map((i) => i.args);
    expect(runs.some((r) => r.includes("npm run build"))).toBe(true);
    expect(runs.some((r) => /npm ci\b.*--omit=dev/.test(r))).toBe(true);
    const finalCopies = final.filter((i) => i.op === "COPY").map((i) => i.args);
    expect(finalCopies.filter((c) => c.startsWith("--from=")).length).toBeGreaterThanOrEqual(2);
    expect(finalCopies.some((c) => /--from=deps .*node_modules/.test(c))).toBe(true);
    // No build tools or dev dependencies in the final stage: it never runs npm ci or the compiler.
    expect(final.filter((i) => i.op === "RUN" && /npm (ci|install)|tsc/.test(i.args))).toEqual([]);
  });

  test("the final stage runs as the numeric non-root user 65532 (what the chart's runAsUser expects)", () => {
    const users = final.filter((i) => i.op === "USER").map((i) => i.args);
    expect(users.length).toBeGreaterThan(0);
    expect(users.at(-1)).toBe("65532:65532");
    // Nothing after USER runs as root again.
    const lastUser = final.findLastIndex((i) => i.op === "USER");
    expect(final.slice(lastUser + 1).filter((i) => i.op === "RUN")).toEqual([]);
  });

  test("the entrypoint is `spillway operator`", () => {
    const entry = final.filter((i) => i.op === "ENTRYPOINT").at(-1)!;
    const cmd = final.filter((i) => i.op === "CMD").at(-1)!;
    expect([...JSON.parse(entry.args), ...JSON.parse(cmd.args)]).toEqual(["spillway", "operator"]);
  });

  test("nothing is copied wholesale from the build context, and no secret-looking file is", () => {
    const sources = dockerfile
      .filter((i) => (i.op === "COPY" || i.op === "ADD") && !i.args.startsWith("--from="))
      .flatMap((i) =>
        i.args
          .split(/\s+/)
          .filter((a) => !a.startsWith("--"))
          .slice(0, -1),
      );
    expect(sources.length).toBeGreaterThan(0);
    for (const s of sources) {
      expect(s).not.toMatch(/^\.\/?$/);
      expect(s).not.toMatch(/\.env|\.npmrc|\.pem$|\.key$|kubeconfig|credential|secret|id_rsa|\.spillway/i);
      expect(existsSync(join(ROOT, s))).toBe(true);
    }
    expect(dockerfile.filter((i) => i.op === "ADD")).toEqual([]);
  });

  test("no secret is baked into an ARG or ENV", () => {
    for (const i of dockerfile.filter((x) => x.op === "ARG" || x.op === "ENV")) {
      expect(i.args).not.toMatch(/(password|secret|token|private|access_?key|client_?secret)\s*=/i);
    }
  });

  test("the Pulumi CLI and plugins are the versions package.json's Pulumi SDKs expect", () => {
    expect(argDefault("PULUMI_VERSION")).toBe(pkg.dependencies["@pulumi/pulumi"]);
    expect(argDefault("PULUMI_AZURE_NATIVE_VERSION")).toBe(pkg.dependencies["@pulumi/azure-native"]);
    expect(argDefault("PULUMI_OCI_VERSION")).toBe(pkg.dependencies["@pulumi/oci"]);
  });

  test("the image holds what the operator loads at run time: compiled code, the CRDs, the Pulumi programs", () => {
    const targets = final.filter((i) => i.op === "COPY").map((i) => i.args.split(/\s+/).at(-1));
    expect(targets).toEqual(
      expect.arrayContaining(["./dist", "./node_modules", "./crds", "./infra", "/opt/pulumi"]),
    );
  });

  test("the runtime writes nowhere but its volumes: HOME and PULUMI_HOME are under /tmp", () => {
    const env = final
      .filter((i) => i.op === "ENV")
      .map((i) => i.args)
      .join(" ");
    expect(env).toMatch(/\bHOME=\/tmp\b/);
    expect(env).toMatch(/\bPULUMI_HOME=\/tmp\//);
  });
});

describe(".dockerignore", () => {
  const patterns = readFileSync(join(ROOT, ".dockerignore"), "utf8")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));

  test.each([
    "node_modules",
    ".git",
    ".spillway",
    "dist",
    ".tools",
    ".env",
    ".npmrc",
    "**/*.pem",
    "**/*.key",
  ])("excludes %s", (p) => {
    expect(patterns).toContain(p);
  });

  test("keeps everything the Dockerfile copies from the context", () => {
    const sources = dockerfile
      .filter((i) => i.op === "COPY" && !i.args.startsWith("--from="))
      .flatMap((i) => i.args.split(/\s+/).slice(0, -1));
    const excluded = new Set(patterns.filter((p) => !p.startsWith("!")));
    for (const s of sources) expect(excluded.has(s.split("/")[0]!)).toBe(false);
  });
});
