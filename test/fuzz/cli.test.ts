/**
 * `spillway validate` (the real CLI, its own process) on hostile manifests: seeded hostile
 * objects of every kind as YAML, a 5,000-deep flow sequence, unicode, path tricks, broken
 * YAML. It exits 1, names file, object and field for each problem, and never prints a stack
 * trace.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, test } from "@jest/globals";
import { stringify } from "yaml";
import { ROOT } from "../helpers/examples.ts";
import { BASES, Gen, hostileCase, pathTrickCases } from "./gen.ts";

const dir = mkdtempSync(join(tmpdir(), "spillway-fuzz-cli-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function validate(files: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(ROOT, "bin", "spillway.mjs"), "validate", ...files],
      { cwd: ROOT, timeout: 120_000, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) =>
        resolve({ code: error ? (typeof error.code === "number" ? error.code : -1) : 0, stdout, stderr }),
    );
  });
}

describe("spillway validate on hostile manifests", () => {
  test("exits 1, names every refused object's field, never a stack trace", async () => {
    const g = new Gen(20261121);
    const docs: string[] = [];
    for (const base of Object.keys(BASES)) {
      for (let i = 0; i < 5; i++) docs.push(stringify(hostileCase(g, base).obj, { lineWidth: 0 }));
    }
    for (const c of pathTrickCases().slice(0, 10)) docs.push(stringify(c.obj));
    const hostile = join(dir, "hostile.yaml");
    writeFileSync(hostile, docs.join("---\n"));
    const deep = join(dir, "deep.yaml");
    writeFileSync(
      deep,
      `apiVersion: spillway.dev/v1alpha1\nkind: TrainingRun\nmetadata: {name: deep}\nspec: ${"[".repeat(5_000)}${"]".repeat(5_000)}\n`,
    );
    const broken = join(dir, "broken.yaml");
    writeFileSync(
      broken,
      "apiVersion: spillway.dev/v1alpha1\nkind: TrainingRun\nmetadata: {name: ../../etc}\nspec: {workloadClass: 🚀}\n---\n: : :\n",
    );
    const r = await validate([hostile, deep, broken]);
    expect(r.code).toBe(1);
    expect(r.stderr).not.toMatch(/^\s+at /m);
    expect(r.stderr).toContain(`${broken}: TrainingRun/../../etc: metadata.name: Invalid value`);
    expect(r.stderr).toContain(
      `${broken}: TrainingRun/../../etc: spec.workloadClass: Unsupported value: "🚀"`,
    );
    expect(r.stderr).toContain(`${deep}:`);
    // Every path trick document is refused at its field.
    for (const c of pathTrickCases().slice(0, 10)) expect(r.stderr).toContain(`: ${c.path}: `);
  }, 150_000);

  test("a YAML alias bomb is one clear line and exit 1, not a stack trace", async () => {
    const bomb = join(dir, "bomb.yaml");
    const levels = ["a: &a [x, x, x, x, x, x, x, x, x]"];
    for (let i = 1; i < 9; i++) {
      const prev = String.fromCharCode(96 + i);
      const cur = String.fromCharCode(97 + i);
      levels.push(
        `${cur}: &${cur} [*${prev}, *${prev}, *${prev}, *${prev}, *${prev}, *${prev}, *${prev}, *${prev}, *${prev}]`,
      );
    }
    writeFileSync(bomb, `apiVersion: spillway.dev/v1alpha1\nkind: TrainingRun\n${levels.join("\n")}\n`);
    const r = await validate([bomb]);
    expect(r.code).toBe(1);
    expect(r.stderr).not.toMatch(/^\s+at /m);
    expect(r.stderr).toMatch(new RegExp(`${bomb}: .*alias`, "i"));
  }, 60_000);
});
