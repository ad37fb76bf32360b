/**
 * The `providers[].spec` part of the chart's values.schema.json, derived from the
 * CloudProvider CRD schema (operator/api/v1alpha1) so the chart never drifts from the API:
 * - every object with properties is closed (`additionalProperties: false`), so no inline
 *   credential (a `clientSecret:` or `privateKey:` field) can be written anywhere;
 * - Secret references lose `namespace`: the operator reads Secrets only in its own namespace;
 * - Kubernetes-only keywords go, and each CEL rule becomes its JSON Schema equivalent. A CEL
 *   rule without an equivalent here throws, so a new API rule makes the chart author decide.
 *
 * `npm exec -- node bin/run-ts.mjs test/chart/write-values-schema.ts` rewrites the file.
 */
import { openApiSchema } from "../../operator/api/v1alpha1/index.ts";

type Schema = Record<string, any>;

/** CEL rules of the CloudProvider API and their JSON Schema (draft-07) equivalents. */
const CEL_EQUIVALENTS: Record<string, Schema> = {
  "has(self.existing) != has(self.provision)": {
    oneOf: [{ required: ["existing"] }, { required: ["provision"] }],
  },
  "has(self.azureBlob) != has(self.s3)": {
    oneOf: [{ required: ["azureBlob"] }, { required: ["s3"] }],
  },
  "self.type == 'azure' || !has(self.azure)": {
    if: { not: { properties: { type: { const: "azure" } } } },
    // biome-ignore lint/suspicious/noThenProperty: JSON Schema if/then keyword
    then: { not: { required: ["azure"] } },
  },
  "!has(self.role) || self.role != 'primary' || self.type != 'azure' || has(self.azure)": {
    if: { required: ["role"], properties: { role: { const: "primary" }, type: { const: "azure" } } },
    // biome-ignore lint/suspicious/noThenProperty: JSON Schema if/then keyword
    then: { required: ["azure"] },
  },
};

const DROPPED_FORMATS = new Set(["int32", "int64"]);

function isSecretRef(s: Schema): boolean {
  const keys = Object.keys(s.properties ?? {}).sort();
  return keys.join(",") === "key,name,namespace";
}

function convert(s: Schema): Schema {
  const out: Schema = {};
  const rules: Array<{ rule: string }> = s["x-kubernetes-validations"] ?? [];
  for (const [k, v] of Object.entries(s)) {
    if (k.startsWith("x-kubernetes-")) continue;
    if (k === "format" && DROPPED_FORMATS.has(v as string)) continue;
    if (k === "properties") {
      const props: Schema = {};
      for (const [name, sub] of Object.entries(v as Schema)) {
        if (name === "namespace" && isSecretRef(s)) continue;
        props[name] = convert(sub as Schema);
      }
      out.properties = props;
      out.additionalProperties = false;
    } else if (k === "items" || (k === "additionalProperties" && typeof v === "object")) {
      out[k] = convert(v as Schema);
    } else {
      out[k] = v;
    }
  }
  if (isSecretRef(s)) {
    out.description = `${s.description} The Secret is in the release namespace.`;
  }
  const all: Schema[] = [];
  for (const { rule } of rules) {
    const eq = CEL_EQUIVALENTS[rule];
    if (!eq) throw new Error(`no JSON Schema equivalent for CEL rule ${JSON.stringify(rule)}`);
    all.push(eq);
  }
  if (all.length === 1) Object.assign(out, all[0]);
  else if (all.length > 1) out.allOf = all;
  return out;
}

/**
 * Key names of `cluster.provision.config` (a free string map, "non-secret" by the API) that
 * look like credentials are refused: secret stack configuration goes in `secretConfigRef`.
 */
export const SECRET_LOOKING_KEY =
  "(?i)(secret|password|passphrase|token|private|credential|api_?key|access_?key)";

/** The JSON Schema of `providers[].spec` in values.schema.json. */
export function providerSpecSchema(): Schema {
  const spec = convert(openApiSchema("CloudProvider").properties!.spec as Schema);
  const config = spec.properties.cluster.properties.provision.properties.config;
  config.propertyNames = { not: { pattern: SECRET_LOOKING_KEY } };
  config.description = `${config.description} Keys that look like credentials are refused: use secretConfigRef.`;
  return spec;
}
