/**
 * The registry of Spillway's kinds: names, scope, short names, printer columns and the
 * schema of each. `crd()` turns an entry into the CustomResourceDefinition that
 * `npm run gen:crds` writes to `crds/` (and the Helm chart templates).
 */
import type { TSchema } from "@sinclair/typebox";
import type { JSONSchemaProps } from "../schema/types.ts";
import { CapacityOfferSchema } from "./capacityoffer.ts";
import { CloudProviderSchema } from "./cloudprovider.ts";
import { GROUP, VERSION } from "./common.ts";
import { DataSetSchema } from "./dataset.ts";
import { ProvisionedClusterSchema } from "./provisionedcluster.ts";
import { TrainingRunSchema } from "./trainingrun.ts";

export const CATEGORY = "spillway";

export interface PrinterColumn {
  name: string;
  type: "string" | "integer" | "number" | "boolean" | "date";
  jsonPath: string;
  description?: string;
  priority?: number;
  format?: string;
}

export interface KindInfo {
  kind: "TrainingRun" | "CloudProvider" | "CapacityOffer" | "DataSet" | "ProvisionedCluster";
  plural: string;
  singular: string;
  shortNames: string[];
  scope: "Namespaced" | "Cluster";
  schema: TSchema;
  columns: PrinterColumn[];
}

const age: PrinterColumn = { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" };
const ready = (t = "Ready"): PrinterColumn => ({
  name: t,
  type: "string",
  jsonPath: `.status.conditions[?(@.type=="${t}")].status`,
});

export const KINDS: readonly KindInfo[] = [
  {
    kind: "TrainingRun",
    plural: "trainingruns",
    singular: "trainingrun",
    shortNames: ["tr"],
    scope: "Namespaced",
    schema: TrainingRunSchema,
    columns: [
      { name: "Class", type: "string", jsonPath: ".spec.workloadClass", priority: 1 },
      { name: "Phase", type: "string", jsonPath: ".status.phase" },
      { name: "Placement", type: "string", jsonPath: ".status.placement.provider" },
      { name: "GPUs", type: "integer", jsonPath: ".status.gpus" },
      { name: "GPU-Type", type: "string", jsonPath: ".spec.resources.gpu.type", priority: 1 },
      { name: "Nodes", type: "integer", jsonPath: ".spec.resources.nodes", priority: 1 },
      { name: "Cluster", type: "string", jsonPath: ".status.placement.cluster", priority: 1 },
      { name: "Step", type: "integer", jsonPath: ".status.checkpoint.step", priority: 1 },
      { name: "Attempt", type: "integer", jsonPath: ".status.attempt", priority: 1 },
      age,
    ],
  },
  {
    kind: "CloudProvider",
    plural: "cloudproviders",
    singular: "cloudprovider",
    shortNames: ["cp"],
    scope: "Cluster",
    schema: CloudProviderSchema,
    columns: [
      { name: "Type", type: "string", jsonPath: ".spec.type" },
      { name: "Role", type: "string", jsonPath: ".spec.role" },
      { name: "Region", type: "string", jsonPath: ".spec.region" },
      { name: "Jurisdiction", type: "string", jsonPath: ".spec.jurisdiction" },
      ready(),
      { name: "Free-GPUs", type: "integer", jsonPath: ".status.freeGpus", priority: 1 },
      age,
    ],
  },
  {
    kind: "CapacityOffer",
    plural: "capacityoffers",
    singular: "capacityoffer",
    shortNames: ["offer"],
    scope: "Namespaced",
    schema: CapacityOfferSchema,
    columns: [
      { name: "Run", type: "string", jsonPath: ".spec.run.name" },
      { name: "Attempt", type: "integer", jsonPath: ".spec.attempt", priority: 1 },
      { name: "Provider", type: "string", jsonPath: ".spec.provider" },
      { name: "Outcome", type: "string", jsonPath: ".status.outcome" },
      { name: "Reason", type: "string", jsonPath: ".status.reason" },
      { name: "Competing", type: "number", jsonPath: ".spec.competingQuote.pricePerHour", priority: 1 },
      { name: "Accepted-Price", type: "number", jsonPath: ".status.acceptedPricePerHour", priority: 1 },
      { name: "Deadline", type: "date", jsonPath: ".spec.deadline", priority: 1 },
      age,
    ],
  },
  {
    kind: "DataSet",
    plural: "datasets",
    singular: "dataset",
    shortNames: ["ds"],
    scope: "Namespaced",
    schema: DataSetSchema,
    columns: [
      { name: "Source", type: "string", jsonPath: ".spec.source.provider" },
      { name: "Version", type: "string", jsonPath: ".status.version.digest" },
      { name: "Objects", type: "integer", jsonPath: ".status.version.objects" },
      { name: "Bytes", type: "integer", jsonPath: ".status.version.bytes", priority: 1 },
      { name: "Synced", type: "integer", jsonPath: ".status.replicasSynced" },
      ready(),
      age,
    ],
  },
  {
    kind: "ProvisionedCluster",
    plural: "provisionedclusters",
    singular: "provisionedcluster",
    shortNames: ["pc"],
    scope: "Cluster",
    schema: ProvisionedClusterSchema,
    columns: [
      { name: "Provider", type: "string", jsonPath: ".spec.provider" },
      { name: "Phase", type: "string", jsonPath: ".status.phase" },
      { name: "GPUs", type: "integer", jsonPath: ".status.totalGpus" },
      { name: "Free", type: "integer", jsonPath: ".status.freeGpus" },
      { name: "Stack", type: "string", jsonPath: ".spec.stackName", priority: 1 },
      { name: "Idle-Since", type: "date", jsonPath: ".status.idleSince", priority: 1 },
      age,
    ],
  },
];

export type KindName = KindInfo["kind"];

export function kindInfo(kind: KindName): KindInfo {
  const k = KINDS.find((i) => i.kind === kind);
  if (!k) throw new Error(`unknown kind ${kind}`);
  return k;
}

/** The plain OpenAPI v3 schema of a kind: TypeBox's symbols dropped, metadata left to the server. */
export function openApiSchema(kind: KindName): JSONSchemaProps {
  const schema = JSON.parse(JSON.stringify(kindInfo(kind).schema)) as JSONSchemaProps;
  schema.properties!.metadata = { type: "object" };
  schema.required = ["spec"];
  return schema;
}

/** The CustomResourceDefinition of a kind, as applied to a cluster. */
export function crd(kind: KindName): Record<string, unknown> {
  const k = kindInfo(kind);
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: {
      name: `${k.plural}.${GROUP}`,
      labels: { "app.kubernetes.io/name": "spillway", "app.kubernetes.io/part-of": "spillway" },
    },
    spec: {
      group: GROUP,
      scope: k.scope,
      names: {
        kind: k.kind,
        listKind: `${k.kind}List`,
        plural: k.plural,
        singular: k.singular,
        shortNames: k.shortNames,
        categories: [CATEGORY],
      },
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: k.columns,
          schema: { openAPIV3Schema: openApiSchema(kind) },
        },
      ],
    },
  };
}
