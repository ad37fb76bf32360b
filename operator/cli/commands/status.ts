/** `spillway status`: runs with their placement, and the providers and provisioned clusters. */
import type { Command } from "commander";
import { withCluster } from "../lib/kube.ts";
import { statusReport } from "../lib/reports.ts";

export function register(program: Command): void {
  program
    .command("status")
    .description(
      "Print the TrainingRuns with their placement, and the CloudProviders and ProvisionedClusters.",
    )
    .option("-n, --namespace <ns>", "only runs of this namespace (default: all)")
    .option("--kubeconfig <path>", "kubeconfig of the management cluster")
    .action(async (o: { namespace?: string; kubeconfig?: string }) => {
      await withCluster(o.kubeconfig, async (client) => {
        console.log(await statusReport(client, o.namespace));
      });
    });
}
