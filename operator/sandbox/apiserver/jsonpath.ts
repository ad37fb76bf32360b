/**
 * The JSONPath subset CRD printer columns use: `.a.b`, `['a.b']`, `[0]`, `[-1]`, `[*]`, and
 * filters `[?(@.type=="Ready")]` (`==`, `!=`, or a bare `@.field` for "exists").
 */

type Step =
  | { kind: "key"; key: string }
  | { kind: "index"; index: number }
  | { kind: "all" }
  | { kind: "filter"; path: string[]; op: "==" | "!=" | "exists"; value?: unknown };

const cache = new Map<string, Step[]>();

function parse(expr: string): Step[] {
  let p = expr.trim();
  if (p.startsWith("{") && p.endsWith("}")) p = p.slice(1, -1);
  if (p.startsWith("$")) p = p.slice(1);
  const steps: Step[] = [];
  let i = 0;
  while (i < p.length) {
    const ch = p[i]!;
    if (ch === ".") {
      let j = i + 1;
      while (j < p.length && p[j] !== "." && p[j] !== "[") j++;
      const key = p.slice(i + 1, j);
      if (key === "*") steps.push({ kind: "all" });
      else if (key !== "") steps.push({ kind: "key", key });
      i = j;
    } else if (ch === "[") {
      const end = closingBracket(p, i);
      steps.push(bracket(p.slice(i + 1, end).trim()));
      i = end + 1;
    } else {
      let j = i;
      while (j < p.length && p[j] !== "." && p[j] !== "[") j++;
      steps.push({ kind: "key", key: p.slice(i, j) });
      i = j;
    }
  }
  return steps;
}

function closingBracket(p: string, open: number): number {
  let depth = 0;
  let quote: string | undefined;
  for (let i = open; i < p.length; i++) {
    const ch = p[i]!;
    if (quote) {
      if (ch === quote) quote = undefined;
    } else if (ch === "'" || ch === '"') quote = ch;
    else if (ch === "[" || ch === "(") depth++;
    else if (ch === "]" || ch === ")") {
      depth--;
      if (depth === 0 && ch === "]") return i;
    }
  }
  throw new Error(`unterminated [ in JSONPath ${p}`);
}

function unquote(s: string): string {
  const t = s.trim();
  if ((t.startsWith("'") && t.endsWith("'")) || (t.startsWith('"') && t.endsWith('"'))) return t.slice(1, -1);
  return t;
}

function bracket(inner: string): Step {
  if (inner === "*") return { kind: "all" };
  if (/^-?\d+$/.test(inner)) return { kind: "index", index: Number(inner) };
  if (inner.startsWith("?(") && inner.endsWith(")")) {
    const cond = inner.slice(2, -1).trim();
    const m = /^@((?:\.[^.=!\s]+)+)\s*(==|!=)\s*(.+)$/.exec(cond);
    if (m) {
      const raw = m[3]!.trim();
      const value = /^['"]/.test(raw)
        ? unquote(raw)
        : raw === "true" || raw === "false"
          ? raw === "true"
          : Number(raw);
      return { kind: "filter", path: m[1]!.slice(1).split("."), op: m[2] as "==" | "!=", value };
    }
    const exists = /^@((?:\.[^.=!\s]+)+)$/.exec(cond);
    if (exists) return { kind: "filter", path: exists[1]!.slice(1).split("."), op: "exists" };
    throw new Error(`unsupported JSONPath filter ${cond}`);
  }
  return { kind: "key", key: unquote(inner) };
}

function child(v: unknown, key: string): unknown {
  return typeof v === "object" && v !== null && !Array.isArray(v)
    ? (v as Record<string, unknown>)[key]
    : undefined;
}

/** Every value the expression selects in `root` (none when a step finds nothing). */
export function jsonPath(expr: string, root: unknown): unknown[] {
  let steps = cache.get(expr);
  if (!steps) {
    steps = parse(expr);
    cache.set(expr, steps);
  }
  let cur: unknown[] = [root];
  for (const step of steps) {
    const next: unknown[] = [];
    for (const v of cur) {
      if (step.kind === "key") {
        const c = child(v, step.key);
        if (c !== undefined) next.push(c);
      } else if (step.kind === "index") {
        if (Array.isArray(v)) {
          const c = v[step.index < 0 ? v.length + step.index : step.index];
          if (c !== undefined) next.push(c);
        }
      } else if (step.kind === "all") {
        if (Array.isArray(v)) next.push(...v);
        else if (typeof v === "object" && v !== null) next.push(...Object.values(v));
      } else if (Array.isArray(v)) {
        for (const item of v) {
          let field: unknown = item;
          for (const k of step.path) field = child(field, k);
          const keep =
            step.op === "exists"
              ? field !== undefined
              : step.op === "=="
                ? field === step.value || String(field) === String(step.value)
                : field !== step.value && String(field) !== String(step.value);
          if (keep) next.push(item);
        }
      }
    }
    cur = next;
  }
  return cur;
}
