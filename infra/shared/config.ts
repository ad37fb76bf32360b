/**
 * Stack configuration, read and validated before any resource is declared, so a bad value
 * fails fast with a message naming the program, the key, the rule and the value given:
 * `infra/oci: config gpuNodeCount must be an integer ≥ 1, got 'abc'`. Every problem is
 * reported at once.
 */
import * as pulumi from "@pulumi/pulumi";

/** Where configuration comes from: `pulumiConfigSource()` in a real run, a map in tests. */
export interface ConfigSource {
  /** `key` is unqualified (the project's namespace) or `namespace:key` (e.g. `oci:region`). */
  get(key: string): string | undefined;
}

/** Reads the running stack's configuration (project namespace, or `ns:key` for another). */
export function pulumiConfigSource(): ConfigSource {
  const byNamespace = new Map<string, pulumi.Config>();
  const configFor = (ns: string | undefined) => {
    const k = ns ?? "";
    let c = byNamespace.get(k);
    if (!c) {
      c = ns ? new pulumi.Config(ns) : new pulumi.Config();
      byNamespace.set(k, c);
    }
    return c;
  };
  return {
    get(key) {
      const i = key.indexOf(":");
      return i < 0 ? configFor(undefined).get(key) : configFor(key.slice(0, i)).get(key.slice(i + 1));
    },
  };
}

export function mapConfigSource(values: Record<string, string>): ConfigSource {
  return { get: (key) => values[key] };
}

export class InfraConfigError extends Error {
  constructor(
    readonly program: string,
    readonly problems: string[],
  ) {
    super(`infra/${program}: ${problems.join("; ")}`);
    this.name = "InfraConfigError";
  }
}

export interface GpuPoolConfig {
  name: string;
  shape: string;
  nodes: number;
  gpusPerNode?: number;
  gpuType?: string;
}

const quote = (v: string) => `'${v}'`;

/** Collects problems while reading; `done()` throws them all in one `InfraConfigError`. */
export class ConfigReader {
  private readonly problems: string[] = [];

  constructor(
    readonly program: string,
    private readonly source: ConfigSource,
  ) {}

  private raw(key: string): string | undefined {
    const v = this.source.get(key);
    return v === undefined || v.trim() === "" ? undefined : v.trim();
  }

  problem(text: string): void {
    this.problems.push(text);
  }

  /** A required string (or `def` when unset), optionally matching `pattern` (`rule` explains it). */
  string(
    key: string,
    opts: { default?: string; pattern?: RegExp; rule?: string; hint?: string } = {},
  ): string {
    const v = this.raw(key) ?? opts.default;
    if (v === undefined) {
      this.problem(`config ${key} is required${opts.hint ? ` (${opts.hint})` : ""}`);
      return "";
    }
    if (opts.pattern && !opts.pattern.test(v)) {
      this.problem(`config ${key} must be ${opts.rule ?? `like ${opts.pattern}`}, got ${quote(v)}`);
    }
    return v;
  }

  optionalString(key: string, opts: { pattern?: RegExp; rule?: string } = {}): string | undefined {
    const v = this.raw(key);
    if (v !== undefined && opts.pattern && !opts.pattern.test(v)) {
      this.problem(`config ${key} must be ${opts.rule ?? `like ${opts.pattern}`}, got ${quote(v)}`);
    }
    return v;
  }

  int(key: string, opts: { min: number; max?: number; default?: number }): number {
    const v = this.raw(key);
    if (v === undefined) {
      if (opts.default !== undefined) return opts.default;
      this.problem(`config ${key} is required (an integer ≥ ${opts.min})`);
      return opts.min;
    }
    return this.checkInt(`config ${key}`, v, opts.min, opts.max) ?? opts.min;
  }

  private checkInt(what: string, v: string, min: number, max?: number): number | undefined {
    const n = /^-?[0-9]+$/.test(v) ? Number(v) : Number.NaN;
    const range = max === undefined ? `≥ ${min}` : `between ${min} and ${max}`;
    if (!Number.isSafeInteger(n) || n < min || (max !== undefined && n > max)) {
      this.problem(`${what} must be an integer ${range}, got ${quote(v)}`);
      return undefined;
    }
    return n;
  }

  bool(key: string, def: boolean): boolean {
    const v = this.raw(key);
    if (v === undefined) return def;
    if (v === "true" || v === "false") return v === "true";
    this.problem(`config ${key} must be true or false, got ${quote(v)}`);
    return def;
  }

  /** Comma-separated list (empty when unset). */
  list(key: string): string[] {
    return (this.raw(key) ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
  }

  cidr(key: string, def: string): string {
    return this.string(key, {
      default: def,
      pattern: /^([0-9]{1,3}\.){3}[0-9]{1,3}\/[0-9]{1,2}$/,
      rule: "an IPv4 CIDR block such as 10.0.0.0/16",
    });
  }

  /**
   * GPU node pools: `nodePools` (a JSON list of {name, shape, nodes, gpusPerNode?, gpuType?}, what
   * the operator sets) or, for one pool, `gpuShape` + `gpuNodeCount` (+ `gpuPoolName`).
   */
  gpuPools(opts: { defaultShape?: string; namePattern: RegExp; nameRule: string }): GpuPoolConfig[] {
    const json = this.raw("nodePools");
    let pools: GpuPoolConfig[] = [];
    if (json !== undefined) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(json);
      } catch {
        this.problem(`config nodePools must be a JSON list of node pools, got ${quote(json)}`);
        return [];
      }
      if (!Array.isArray(parsed) || parsed.length === 0) {
        this.problem(`config nodePools must be a non-empty JSON list, got ${quote(json)}`);
        return [];
      }
      pools = parsed.map((p: unknown, i) => this.poolFromJson(p, i));
    } else {
      pools = [
        {
          name: this.string("gpuPoolName", { default: "gpu" }),
          shape: this.string("gpuShape", {
            ...(opts.defaultShape ? { default: opts.defaultShape } : {}),
            hint: "the GPU machine shape or VM size",
          }),
          nodes: this.int("gpuNodeCount", { min: 1, max: 1000 }),
        },
      ];
    }
    const seen = new Set<string>();
    for (const p of pools) {
      if (!opts.namePattern.test(p.name)) {
        this.problem(`node pool name must be ${opts.nameRule}, got ${quote(p.name)}`);
      }
      if (seen.has(p.name)) this.problem(`node pool name ${quote(p.name)} is used twice`);
      seen.add(p.name);
    }
    return pools;
  }

  private poolFromJson(p: unknown, i: number): GpuPoolConfig {
    const at = `config nodePools[${i}]`;
    if (typeof p !== "object" || p === null) {
      this.problem(`${at} must be an object`);
      return { name: `pool${i}`, shape: "", nodes: 1 };
    }
    const o = p as Record<string, unknown>;
    const str = (k: string) => (typeof o[k] === "string" && o[k] !== "" ? (o[k] as string) : undefined);
    const name = str("name");
    const shape = str("shape");
    if (!name) this.problem(`${at}.name is required`);
    if (!shape) this.problem(`${at}.shape is required`);
    const nodes = this.checkInt(`${at}.nodes`, String(o.nodes ?? ""), 1, 1000) ?? 1;
    const gpusPerNode =
      o.gpusPerNode === undefined
        ? undefined
        : this.checkInt(`${at}.gpusPerNode`, String(o.gpusPerNode), 1, 16);
    return {
      name: name ?? `pool${i}`,
      shape: shape ?? "",
      nodes,
      ...(gpusPerNode !== undefined ? { gpusPerNode } : {}),
      ...(str("gpuType") ? { gpuType: str("gpuType")! } : {}),
    };
  }

  /** Throws every problem found so far. */
  done(): void {
    if (this.problems.length > 0) throw new InfraConfigError(this.program, this.problems);
  }
}
