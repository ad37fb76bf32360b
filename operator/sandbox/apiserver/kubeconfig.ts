/**
 * The kubeconfig of a sandbox API server: one cluster, user and context, all named after the
 * server, pointing at its plain-HTTP URL. The user carries the server's bearer token when it
 * has one; otherwise it is empty (the server does not authenticate). The server speaks plain
 * HTTP on the loopback interface: it is a local sandbox, not a network service.
 */
import { stringify } from "yaml";

export function renderKubeconfig(name: string, url: string, token?: string): string {
  return stringify({
    apiVersion: "v1",
    kind: "Config",
    // client-node refuses a plain-HTTP server unless TLS verification is off; kubectl accepts both.
    clusters: [{ name, cluster: { server: url, "insecure-skip-tls-verify": true } }],
    users: [{ name, user: token ? { token } : {} }],
    contexts: [{ name, context: { cluster: name, user: name, namespace: "default" } }],
    "current-context": name,
    preferences: {},
  });
}
