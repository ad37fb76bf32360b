/** values.schema.json covers every value: each one is declared, described and closed to typos. */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { VALUES_SCHEMA } from "./generated.ts";
import { CHART, FULL_VALUES } from "./helm.ts";

type Schema = Record<string, any>;
const schema: Schema = JSON.parse(readFileSync(VALUES_SCHEMA, "utf8"));

function resolve(s: Schema): Schema {
  if (typeof s.$ref === "string") return resolve(schema.definitions[s.$ref.replace("#/definitions/", "")]);
  return s;
}

/**
 * Paths of values with no schema, and of keys with no description (array items are described
 * by their array), walking into every object and array of the values.
 */
function undescribed(value: unknown, s: Schema | undefined, path: string, isKey: boolean): string[] {
  if (!s) return [`${path}: not in the schema`];
  const node = resolve(s);
  const described = typeof node.description === "string" && node.description.length > 0;
  const out = isKey && !described ? [`${path}: no description`] : [];
  if (Array.isArray(value)) {
    for (const [i, v] of value.entries()) out.push(...undescribed(v, node.items, `${path}[${i}]`, false));
  } else if (value !== null && typeof value === "object" && node.properties) {
    for (const [k, v] of Object.entries(value)) {
      out.push(...undescribed(v, node.properties[k], `${path}.${k}`, true));
    }
  }
  return out;
}

/** Every schema node that declares properties but admits others (where a typo would slip through). */
function openObjects(s: Schema, path: string): string[] {
  const out: string[] = [];
  if (s.properties && s.additionalProperties !== false) out.push(path);
  for (const [k, v] of Object.entries(s.properties ?? {}))
    out.push(...openObjects(v as Schema, `${path}.${k}`));
  if (s.items) out.push(...openObjects(s.items, `${path}[]`));
  for (const [k, v] of Object.entries(s.definitions ?? {})) out.push(...openObjects(v as Schema, `#${k}`));
  return out;
}

test.each([
  ["values.yaml", join(CHART, "values.yaml")],
  ["the full example values", FULL_VALUES],
])("every value in %s is declared and described in the schema", (_name, file) => {
  const values = parse(readFileSync(file, "utf8"));
  expect(undescribed(values, schema, "", false)).toEqual([]);
});

test("every object in the schema refuses unknown keys", () => {
  expect(openObjects(schema, "")).toEqual([]);
});

test("the full example values set every top-level value of values.yaml", () => {
  const defaults = Object.keys(parse(readFileSync(join(CHART, "values.yaml"), "utf8"))).sort();
  const full = Object.keys(parse(readFileSync(FULL_VALUES, "utf8"))).sort();
  expect(full).toEqual(defaults);
});
