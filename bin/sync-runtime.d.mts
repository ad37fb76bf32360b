// Types of bin/sync-runtime.mjs (plain JavaScript: the launcher runs it before any compile step).
export declare const SYNC_NODE_FLAGS: string[];
export declare const SYNC_BUNDLE: string;
export declare function missingSyncFlags(execArgv: string[], env?: NodeJS.ProcessEnv): string[];
export declare function bundleSync(outdir?: string): Promise<string>;
export declare const SYNC_MALLOC_TUNABLES: string[];
export declare function syncEnvironment(env?: NodeJS.ProcessEnv): NodeJS.ProcessEnv;
