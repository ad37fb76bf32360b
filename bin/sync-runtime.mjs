// How `spillway sync` runs: the V8 flags its process starts with and the bundle it runs from.
// Shared by the launcher (bin/spillway.mjs), the image build (`npm run build`) and the sync
// benchmark, so the benchmark measures the process users and the sync worker Jobs get.
import { existsSync, readdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

/**
 * V8 flags of a `spillway sync` process (measurements of 2026-11-22 in docs/dataplane.md,
 * "The sync process"):
 * - `--max-semi-space-size=4`: V8 doubles the young generation whenever what survived its
 *   scavenges exceeds its size, and a sync's in-flight requests and listing page survive every
 *   one, so a long sync grew it to 64 MiB semi-spaces and the old generation's limit with it:
 *   peak RSS of a cold copy of 50,000 objects 312 MiB against 135 at 5,000. At 4 MiB: 184–188
 *   against 120–153, and the 5,000-object copy needs no more CPU.
 * - `--initial-old-space-size=32`: data streams through Node's sockets as fresh 64 KiB
 *   ArrayBuffers outside the heap; with a small old generation (a sync's live heap is ~10 MiB)
 *   V8 answered their churn with a full mark-compact every ~15 MiB — 38 during a cold copy of
 *   400 MiB. Room for 64 MiB before the first one: 14, and 0.5–0.9 CPU s less for that copy
 *   (2026-11-22). Since the sockets read into one buffer and a minor GC frees the parser's
 *   chunks every 16 MiB (2026-12-07), that copy runs 0 full GCs at 64 MiB and 2–4 at 32, at a
 *   CPU cost lost in the noise, while a long copy of small objects fills its old generation
 *   only to the floor: 32 MiB took a cold copy of 50,000 × 4 KiB from 142 to 113 MiB (bench,
 *   same day; 5,000: ~100), so the floor is 32. (128 lets a 50,000-object copy peak at 245 MiB.)
 * - `--heap-growing-percent=100`: after a full GC, V8 lets the old generation grow to its live
 *   size times a factor it derives from how fast it marks against how fast the program
 *   allocates — up to 4 (the maximum where the heap limit is 2 GiB or more). A sync's full GCs
 *   are rare and quick (mutator utilisation 0.998), so it always got 4: a long cold copy went
 *   from ~25 MiB live to ~97 MiB before each full GC, and its peak RSS grew with the object
 *   count though nothing it keeps does. A factor of 2 leaves the limit at the floor above
 *   (`--initial-old-space-size`: it never drops below it, so (a) keeps its fewer full GCs)
 *   whenever the live heap is under half of it, as a sync's is: a cold copy of 50,000 × 4 KiB
 *   peaked at 162–169 MiB against 185 with V8's factor (same build), flat from ~20,000 objects
 *   on; a 5,000-object copy ends before its old generation reaches the floor (121–125 MiB).
 *   That floor is what remains between the two: 32 MiB with a factor of 1.5 gave 137 MiB at
 *   50,000, but 29–31 full GCs in (a) instead of 11–13 (+20–35 % CPU) and +8 % in (b). It is not a
 *   cap: a heap that really grows (a resumed sync holding a long journal) is collected at twice
 *   its live size and is never refused memory because of it. A full GC costs ~10–30 ms here:
 *   this flag alone took that copy from 9 to 15 (~0.1 of 33 CPU s); with the Azure listing's
 *   pages no longer promoted (azure.ts, `PageBuffer`) it needs 9. (b) runs no full GC.
 *   The sync command sets the same at run time when started without these flags.
 * Not set: glibc's MALLOC_ARENA_MAX=2 / MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ (the
 * launcher could, through execve's environment). Measured on no-op resyncs of 5,000 and 50,000
 * objects they lowered peak RSS by 3–8 MiB at both sizes alike: not what grows with the count,
 * and not worth a process-wide allocator change whose CPU cost was not measured.
 * Only `sync`: the operator's allocation pattern (many live objects) is not this one.
 */
export const SYNC_NODE_FLAGS = [
  "--max-semi-space-size=4",
  "--initial-old-space-size=32",
  "--heap-growing-percent=100",
];

/**
 * glibc malloc tunables of a `spillway sync` process (measured 2026-12-07, docs/dataplane.md,
 * "The sync process"): `glibc.malloc.top_pad=16777216` — when malloc's heap grows it takes 16 MiB
 * more than asked, and when it shrinks it keeps 16 MiB (glibc's default is 128 KiB). The data a
 * sync reads arrives in chunks node:http allocates one by one (64 KiB each) and frees soon
 * after (a minor GC every 16 MiB read, `ReadBufferScavenger`): freed at the top of the heap,
 * they were trimmed back to the kernel at once, and the next chunks faulted fresh, zeroed
 * pages in again. A copy of 2 × 100 MiB Azurite → s3rver: 21,000–27,000 page faults and
 * 0.36–0.47 sys CPU s with glibc's default, 11,700–12,200 and 0.23–0.32 with this; peak RSS
 * 91–94 MiB either way (3 runs each). Set through the environment the launcher re-executes
 * with (a `GLIBC_TUNABLES` given already keeps its own `top_pad`); harmless where the C
 * library is not glibc.
 */
export const SYNC_MALLOC_TUNABLES = ["glibc.malloc.top_pad=16777216"];

/** `env` with `SYNC_MALLOC_TUNABLES` added to GLIBC_TUNABLES where it does not set them. */
export function syncEnvironment(env = process.env) {
  const given = (env.GLIBC_TUNABLES ?? "").split(":").filter(Boolean);
  const names = given.map((t) => t.split("=")[0]);
  const missing = SYNC_MALLOC_TUNABLES.filter((t) => !names.includes(t.split("=")[0]));
  if (missing.length === 0) return env;
  return { ...env, GLIBC_TUNABLES: [...given, ...missing].join(":") };
}

/** The bundle `spillway sync` runs from when it was built (`npm run build`; the image has it). */
export const SYNC_BUNDLE = join(root, "dist", "sync", "spillway-sync.js");

/**
 * The flags of `SYNC_NODE_FLAGS` a process started with `execArgv` lacks (a flag given
 * explicitly, with any value, is the caller's choice and kept).
 */
export function missingSyncFlags(execArgv, env = process.env) {
  const given = [...execArgv, ...(env.NODE_OPTIONS ?? "").split(/\s+/)].map((a) => a.split("=")[0]);
  return SYNC_NODE_FLAGS.filter((f) => !given.includes(f.split("=")[0]));
}

/**
 * Bundles `spillway sync` (operator/cli/sync-main.ts) with its packages into `outdir`, one
 * ESM file plus chunks for what loads lazily (the S3 SDK, the Azure adapter): a worker starts
 * without resolving hundreds of modules in node_modules — 0.2 CPU s less per start than the
 * compiled files. Needs esbuild (a dev dependency): the build stage has it, the image does not.
 */
export async function bundleSync(outdir = dirname(SYNC_BUNDLE)) {
  const { build } = await import("esbuild");
  // The chunks' names are content hashes: a rebuild writes new ones beside the old, which
  // nothing imports any more (the bench's bundle had 4 stale copies of each store adapter).
  if (existsSync(outdir))
    for (const f of readdirSync(outdir)) if (f.endsWith(".js")) rmSync(join(outdir, f), { force: true });
  await build({
    entryPoints: { "spillway-sync": join(root, "operator", "cli", "sync-main.ts") },
    bundle: true,
    splitting: true,
    format: "esm",
    platform: "node",
    target: "node22",
    // The packages' ESM builds: their named exports survive a lazy `await import()`.
    mainFields: ["module", "main"],
    // Some dependencies are CommonJS and call require(); an ESM bundle has none of its own.
    banner: {
      js: "import { createRequire as __spillwayRequire } from 'node:module'; const require = __spillwayRequire(import.meta.url);",
    },
    outdir,
    logLevel: "error",
    absWorkingDir: root,
  });
  return join(outdir, "spillway-sync.js");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const out = await bundleSync(process.argv[2] ?? dirname(SYNC_BUNDLE));
  console.log(`bundled spillway sync: ${out}${existsSync(out) ? "" : " (missing!)"}`);
}
