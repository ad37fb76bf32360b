/**
 * The sandbox API server: a local Kubernetes control plane that kubectl and
 * @kubernetes/client-node talk to over HTTP. `startApiServer` is the entry point.
 */
export type { ListResult, OpContext } from "./cluster.ts";
export { Cluster } from "./cluster.ts";
export { ApiError } from "./errors.ts";
export { SERVER_VERSION } from "./http.ts";
export { renderKubeconfig } from "./kubeconfig.ts";
export { ResourceRegistry } from "./registry.ts";
export type { ApiServer, ApiServerOptions } from "./server.ts";
export { startApiServer } from "./server.ts";
export { ObjectStore } from "./store.ts";
export type { KubeObject, ResourceType } from "./types.ts";
