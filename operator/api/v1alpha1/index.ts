/** spillway.dev/v1alpha1: the API's types, schemas, CRDs and validation. */
export * from "./capacityoffer.ts";
export * from "./cloudprovider.ts";
export * from "./common.ts";
export * from "./dataset.ts";
export * from "./kinds.ts";
export * from "./provisionedcluster.ts";
export * from "./trainingrun.ts";
export * from "./validation.ts";
