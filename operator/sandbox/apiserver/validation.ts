/** Metadata validation every object gets, with the real server's messages and field paths. */
import type { FieldError } from "../../api/schema/types.ts";
import { errors } from "./errors.ts";
import type { KubeObject, ResourceType } from "./types.ts";

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const QUALIFIED_NAME =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

function nameErrors(rt: ResourceType, name: string | undefined): FieldError[] {
  if (!name)
    return [
      {
        path: "metadata.name",
        type: "FieldValueRequired",
        message: "Required value: name or generateName is required",
      },
    ];
  const isNamespace = rt.group === "" && rt.kind === "Namespace";
  const ok = isNamespace
    ? DNS1123_LABEL.test(name) && name.length <= 63
    : DNS1123_SUBDOMAIN.test(name) && name.length <= 253;
  if (ok) return [];
  const what = isNamespace ? "RFC 1123 label" : "lowercase RFC 1123 subdomain";
  return [
    {
      path: "metadata.name",
      type: "FieldValueInvalid",
      message: `Invalid value: "${name}": a ${what} must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character`,
    },
  ];
}

function labelErrors(labels: Record<string, string> | undefined): FieldError[] {
  const out: FieldError[] = [];
  for (const [k, v] of Object.entries(labels ?? {})) {
    if (!QUALIFIED_NAME.test(k) || k.split("/").pop()!.length > 63) {
      out.push({
        path: "metadata.labels",
        type: "FieldValueInvalid",
        message: `Invalid value: "${k}": name part must consist of alphanumeric characters, '-', '_' or '.'`,
      });
    }
    if (typeof v !== "string" || v.length > 63 || !LABEL_VALUE.test(v)) {
      out.push({
        path: `metadata.labels`,
        type: "FieldValueInvalid",
        message: `Invalid value: ${JSON.stringify(v)}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character`,
      });
    }
  }
  return out;
}

export function validateMetadata(rt: ResourceType, obj: KubeObject, namespace: string | undefined): void {
  const problems = [...nameErrors(rt, obj.metadata.name), ...labelErrors(obj.metadata.labels)];
  if (rt.namespaced && !namespace)
    problems.push({ path: "metadata.namespace", type: "FieldValueRequired", message: "Required value" });
  if (problems.length > 0) throw errors.invalid(rt, obj.metadata.name ?? "", problems);
}
