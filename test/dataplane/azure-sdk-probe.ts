/**
 * Child process of azure-sdk-free.test.ts (run as `node --import tsx azure-sdk-probe.ts`):
 * records every module the process resolves (a `module.registerHooks` resolve hook, installed
 * before the data plane is imported: ESM imports and require() alike), then works an Azure
 * store — check, puts, list, reads, a head, a delete — and syncs it into a second prefix of the same
 * container (cold copy with journal segments written and dropped, manifest written; a no-op
 * resync; a resync with one object changed and `--delete`), and prints on stdout one JSON line:
 * the resolved URLs under `@azure/`, and what the work returned (so the test also sees it was
 * done). Credentials and the endpoint come from the environment (PROBE_*), as a sync's do.
 */
import { registerHooks } from "node:module";

const resolved: string[] = [];
registerHooks({
  resolve(specifier, context, next) {
    const result = next(specifier, context);
    resolved.push(result.url);
    return result;
  },
});

const { openStore, syncStores } = await import("../../operator/dataplane/index.ts");
const { readAll } = await import("../../operator/dataplane/manifest.ts");

const env = process.env;
const endpoint = encodeURIComponent(env.PROBE_ENDPOINT ?? "");
const sas = env.PROBE_SAS ? `&sas=${encodeURIComponent(env.PROBE_SAS)}` : "";
const uri = (prefix: string) =>
  `azblob://${env.PROBE_ACCOUNT}/${env.PROBE_CONTAINER}/${prefix}/?endpoint=${endpoint}${sas}`;
const credentials = env.PROBE_KEY ? { azure: { accountKey: env.PROBE_KEY } } : {};

const src = await openStore(uri("src"), credentials);
await src.check();
await src.put("a.txt", Buffer.from("alpha"));
await src.put("b/c.bin", Buffer.alloc(70_000, 7));
await src.put("gone.txt", Buffer.from("to be deleted"));
await src.delete("gone.txt");
await src.delete("never-there.txt");
const listed: string[] = [];
for await (const o of src.list()) listed.push(o.key);
const read = (await readAll(await src.read("a.txt"))).toString();
const headed = [(await src.head("b/c.bin"))?.size, await src.head("gone.txt")];

const dst = await openStore(uri("dst"), credentials);
// A checkpoint per millisecond: the cold copy writes journal segments and drops them at its end.
const cold = await syncStores(src, dst, { checkpointIntervalMs: 1 });
const noop = await syncStores(src, dst);
await src.put("a.txt", Buffer.from("alpha two"));
const changed = await syncStores(src, dst, { delete: true });
const copied = (await readAll(await dst.read("a.txt"))).toString();

const tally = (s: typeof cold) => ({
  complete: s.complete,
  copied: s.copied.objects,
  skipped: s.skipped.objects,
});
process.stdout.write(
  `${JSON.stringify({
    azureModules: resolved.filter((u) => u.includes("/@azure/")),
    modules: resolved.length,
    listed,
    read,
    headed,
    syncs: [tally(cold), tally(noop), tally(changed)],
    copied,
  })}\n`,
);
