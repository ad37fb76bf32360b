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

/**
 * Runs a command's body against the management cluster; a missing or unreadable kubeconfig,
 * an unreachable server or a refused request is one line on stderr and exit code 2, not a
 * stack trace.
 */
export async function withCluster(
  kubeconfig: string | undefined,
  body: (c: KubeClient) => Promise<void>,
): Promise<void> {
  let client: KubeClient;
  try {
    client = cliClient(kubeconfig);
  } catch (e) {
    console.error(`spillway: cannot load the kubeconfig: ${(e as Error).message}`);
    process.exitCode = 2;
    return;
  }
  try {
    await body(client);
  } catch (e) {
    const cause = (e as { cause?: { message?: string } }).cause?.message;
    console.error(`spillway: ${(e as Error).message}${cause ? ` (${cause})` : ""}`);
    process.exitCode = 2;
  }
}
