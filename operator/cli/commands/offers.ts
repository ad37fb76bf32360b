/** `spillway offers`: the ledger — every offer made to the primary and its answer. */
import type { Command } from "commander";
import { withCluster } from "../lib/kube.ts";
import { listOffers, offersTable } from "../lib/reports.ts";

export function register(program: Command): void {
  program
    .command("offers")
    .description("Print the offer ledger: each CapacityOffer to the primary, its competing quote and answer.")
    .option("-n, --namespace <ns>", "only this namespace (default: all)")
    .option("--run <name>", "only the offers of this run")
    .option("-o, --output <format>", "table or json", "table")
    .option("--kubeconfig <path>", "kubeconfig of the management cluster")
    .action(async (o: { namespace?: string; run?: string; output: string; kubeconfig?: string }) => {
      if (o.output !== "table" && o.output !== "json") {
        console.error(`spillway offers: --output must be table or json, got ${o.output}`);
        process.exitCode = 2;
        return;
      }
      await withCluster(o.kubeconfig, async (client) => {
        const offers = (await listOffers(client, o.namespace)).filter(
          (x) => !o.run || x.spec.run.name === o.run,
        );
        if (o.output === "json") console.log(JSON.stringify(offers, null, 2));
        else console.log(offers.length ? offersTable(offers) : "No offers.");
      });
    });
}
