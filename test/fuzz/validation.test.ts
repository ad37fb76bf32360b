/**
 * Hostile input against the API's validation (`validateObject`, what the operator and
 * `spillway validate` run): random mutations of a valid object of every kind — wrong types,
 * unknown fields, giant arrays and strings, unicode, deep nesting, deleted fields — and every
 * path trick at every path-like field. Nothing may throw; every refusal names the field.
 * Seeded: a failure message carries the seed and the case, so it reproduces exactly.
 */
import { describe, expect, test } from "@jest/globals";
import { type FieldError, validateObject } from "../../operator/api/v1alpha1/index.ts";
import { BASES, deepNest, Gen, hostileCase, pathTrickCases } from "./gen.ts";

const SEED = Number(process.env.FUZZ_SEED ?? 20261121);
const CASES_PER_KIND = 150;

function shapeProblems(errors: FieldError[]): string[] {
  return errors
    .filter(
      (e) =>
        typeof e.path !== "string" ||
        typeof e.message !== "string" ||
        e.message.length === 0 ||
        typeof e.type !== "string",
    )
    .map((e) => JSON.stringify(e).slice(0, 200));
}

/** Whether an error is about `path`: at it, under it, or at a parent that owns a rule over it. */
function about(e: FieldError, path: string): boolean {
  return (
    e.path === path ||
    e.path.startsWith(`${path}.`) ||
    e.path.startsWith(`${path}[`) ||
    path.startsWith(e.path)
  );
}

describe("validateObject under random hostile objects", () => {
  test.each(Object.keys(BASES))(
    "%s: never throws, every error is well-formed and names the mutated field",
    (base) => {
      expect(validateObject(BASES[base]!())).toEqual([]);
      const g = new Gen(SEED + base.length * 7919);
      const failures: string[] = [];
      let refused = 0;
      for (let i = 0; i < CASES_PER_KIND; i++) {
        const c = hostileCase(g, base);
        let errors: FieldError[];
        try {
          errors = validateObject(c.obj);
        } catch (err) {
          failures.push(`#${i} ${c.label}: threw ${(err as Error).message.slice(0, 200)}`);
          continue;
        }
        failures.push(...shapeProblems(errors).map((p) => `#${i} ${c.label}: malformed error ${p}`));
        if (errors.length > 0) refused++;
        if (c.mustFail && errors.length === 0) failures.push(`#${i} ${c.label}: accepted`);
        if (c.mustFail && errors.length > 0 && !errors.some((e) => about(e, c.path))) {
          failures.push(
            `#${i} ${c.label}: errors name other fields: ${errors.map((e) => e.path).join(", ")}`,
          );
        }
      }
      expect({ seed: SEED, failures }).toEqual({ seed: SEED, failures: [] });
      // The generator is hostile enough that most cases are refused.
      expect(refused).toBeGreaterThan(CASES_PER_KIND / 3);
    },
  );

  test.each(pathTrickCases().map((c) => [c.label, c] as const))("path trick refused: %s", (_label, c) => {
    const errors = validateObject(c.obj);
    expect(errors.length).toBeGreaterThan(0);
    expect(errors.map((e) => e.path)).toContain(c.path);
  });

  test("not-an-object inputs give one top-level error, never a throw", () => {
    for (const v of [null, undefined, 0, "TrainingRun", [], [BASES.TrainingRun!()], true]) {
      const errors = validateObject(v);
      expect(errors.length).toBe(1);
      expect(errors[0]!.path).toBe("");
    }
  });

  test("wrong apiVersion or kind is named at its field", () => {
    const wrongVersion = { ...BASES.TrainingRun!(), apiVersion: "spillway.dev/v1" };
    expect(validateObject(wrongVersion).map((e) => e.path)).toEqual(["apiVersion"]);
    for (const kind of ["Pod", "trainingrun", "", "TrainingRuns", "🚀"]) {
      expect(validateObject({ ...BASES.TrainingRun!(), kind }).map((e) => e.path)).toEqual(["kind"]);
    }
  });

  test("a 2,000-deep object where a string belongs is refused at that field", () => {
    const run = BASES.TrainingRun!();
    run.spec.workloadClass = deepNest(2_000);
    const errors = validateObject(run);
    expect(errors.map((e) => e.path)).toContain("spec.workloadClass");
  });

  test("a deeply nested unknown field under spec is refused as unknown, not a crash", () => {
    const run = BASES.TrainingRun!();
    run.spec.extra = deepNest(2_000);
    const errors = validateObject(run);
    expect(errors.some((e) => e.path.startsWith("spec.extra"))).toBe(true);
  });
});
