/**
 * Kubeconfigs of the sandbox's plain-HTTP API servers, as every client accepts them.
 * @kubernetes/client-node 2.x refuses an `http://` server unless the cluster entry says
 * `insecure-skip-tls-verify: true` ("HTTP protocol is not allowed when skipTLSVerify is not
 * set"); kubectl accepts the flag too. Adding it when missing is idempotent, so this holds
 * whether or not the API server's own kubeconfig already carries it.
 */
import type { KubeConfig } from "@kubernetes/client-node";
import { parse, stringify } from "yaml";
import { PooledKubeConfig } from "../../runtime/kubeconfig.ts";

interface KubeconfigDoc {
  clusters?: Array<{ cluster?: { server?: string; "insecure-skip-tls-verify"?: boolean } }>;
}

export function clientKubeconfig(yaml: string): string {
  const doc = parse(yaml) as KubeconfigDoc;
  let changed = false;
  for (const entry of doc.clusters ?? []) {
    const c = entry.cluster;
    if (c?.server?.startsWith("http://") && c["insecure-skip-tls-verify"] !== true) {
      c["insecure-skip-tls-verify"] = true;
      changed = true;
    }
  }
  return changed ? stringify(doc) : yaml;
}

export function kubeConfigFromYaml(yaml: string): KubeConfig {
  // Pooled: the simulated kubelets make many requests (see operator/runtime/kubeconfig.ts).
  const kc = new PooledKubeConfig();
  kc.loadFromString(clientKubeconfig(yaml));
  return kc;
}
