/**
 * CEL for `x-kubernetes-validations`, on @bufbuild/cel. Values are converted into CEL's
 * types guided by the schema (integers become `int`, objects become maps), so that rules
 * written for the real API server (`self.count >= 1`, `has(self.x)`, `self == oldSelf`)
 * behave the same here. Programs are parsed once and cached.
 */
import { type CelEnv, celEnv, isCelError, parse, plan } from "@bufbuild/cel";
import { strings } from "@bufbuild/cel/ext";
import type { JSONSchemaProps } from "./types.ts";

type Program = ReturnType<typeof plan>;

const env: CelEnv = celEnv({ funcs: strings });
const programs = new Map<string, Program | Error>();

function compile(rule: string): Program | Error {
  const cached = programs.get(rule);
  if (cached) return cached;
  let p: Program | Error;
  try {
    p = plan(env, parse(rule));
  } catch (e) {
    p = e instanceof Error ? e : new Error(String(e));
  }
  programs.set(rule, p);
  return p;
}

/** Converts a JSON value into CEL input, using the schema for int-vs-double. */
export function toCel(schema: JSONSchemaProps | undefined, value: unknown): unknown {
  if (value === null || value === undefined) return null;
  if (Array.isArray(value)) return value.map((v) => toCel(schema?.items, v));
  if (typeof value === "object") {
    const m = new Map<string, unknown>();
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      const sub =
        schema?.properties?.[k] ??
        (typeof schema?.additionalProperties === "object" ? schema.additionalProperties : undefined);
      m.set(k, toCel(sub, v));
    }
    return m;
  }
  if (typeof value === "number") {
    if (schema?.type === "integer" || (schema?.type === undefined && Number.isInteger(value))) {
      return BigInt(Math.trunc(value));
    }
    return value;
  }
  return value;
}

/** `true` when the rule holds, `false` when it does not, `{error}` when it cannot run. */
export function evaluateRule(
  rule: string,
  schema: JSONSchemaProps,
  self: unknown,
  oldSelf?: unknown,
): boolean | { error: string } {
  const program = compile(rule);
  if (program instanceof Error) return { error: program.message };
  const vars: Record<string, unknown> = { self: toCel(schema, self) };
  if (oldSelf !== undefined) vars.oldSelf = toCel(schema, oldSelf);
  try {
    // biome-ignore lint/suspicious/noExplicitAny: CEL's input type is a wide union
    const out = program(vars as any);
    if (isCelError(out)) return { error: out.message };
    if (typeof out !== "boolean") return { error: `rule returned ${typeof out}, not bool` };
    return out;
  } catch (e) {
    return { error: e instanceof Error ? e.message : String(e) };
  }
}

/** Parses a rule, returning the parse error message or undefined (for CRD generation checks). */
export function checkRuleSyntax(rule: string): string | undefined {
  const p = compile(rule);
  return p instanceof Error ? p.message : undefined;
}
