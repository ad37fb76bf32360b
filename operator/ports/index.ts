/**
 * Ports: the interfaces between the controllers and the outside world. Controllers depend
 * on these; adapters (`operator/clouds/*`, `operator/dataplane`, `operator/checkpoints`,
 * `operator/sandbox`) implement them. Dependencies point inward, never the other way.
 */
export * from "./errors.ts";
export * from "./provisioner.ts";
export * from "./responder.ts";
export * from "./staging.ts";
export * from "./types.ts";
