/** The management cluster a CLI command talks to: --kubeconfig, KUBECONFIG, the sandbox's, then the default. */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { KubeClient } from "../../runtime/client.ts";

export const SANDBOX_KUBECONFIG = join(".spillway", "sandbox", "kubeconfig");

export function cliClient(kubeconfig?: string): KubeClient {
  const path =
    kubeconfig ??
    process.env.KUBECONFIG?.split(":")[0] ??
    (existsSync(SANDBOX_KUBECONFIG) ? SANDBOX_KUBECONFIG : undefined);
  return path
    ? KubeClient.fromKubeconfig(readFileSync(path, "utf8"), { cluster: "management" })
    : KubeClient.fromDefault();
}
