/**
 * Path confinement. The agent reads and writes only under its checkpoint path, which itself
 * must lie under the allowed root; names that come from a manifest (untrusted: it was read
 * back from an object store) must be plain relative paths.
 */
import { realpathSync } from "node:fs";
import { isAbsolute, relative, resolve, sep } from "node:path";

export class PathRefusedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PathRefusedError";
  }
}

/** Why a manifest file name is unsafe, or undefined when it is a plain relative path. */
export function unsafeRelativePath(name: string): string | undefined {
  if (typeof name !== "string" || name.length === 0) return "empty name";
  if (name.length > 1024) return "name longer than 1024 characters";
  if (name.includes("\0")) return "contains a NUL byte";
  if (name.includes("\\")) return "contains a backslash";
  if (name.startsWith("/") || isAbsolute(name) || /^[A-Za-z]:/.test(name)) return "is an absolute path";
  for (const seg of name.split("/")) {
    if (seg === "..") return "contains a '..' segment";
    if (seg === "" || seg === ".") return "contains an empty or '.' segment";
  }
  return undefined;
}

export function assertSafeRelativePath(name: string, what: string): void {
  const why = unsafeRelativePath(name);
  if (why) throw new PathRefusedError(`${what} ${JSON.stringify(name)} refused: ${why}`);
}

/** True when `child` is `parent` or below it (both absolute, already resolved). */
export function isWithin(parent: string, child: string): boolean {
  const rel = relative(parent, child);
  return rel === "" || (!rel.startsWith(`..${sep}`) && rel !== ".." && !isAbsolute(rel));
}

/** Resolves symlinks of the longest existing prefix of `p`, so a not-yet-created path is judged too. */
export function realpathLoose(p: string): string {
  const abs = resolve(p);
  let head = abs;
  const tail: string[] = [];
  for (;;) {
    try {
      return resolve(realpathSync(head), ...tail.reverse());
    } catch {
      const parent = resolve(head, "..");
      if (parent === head) return abs;
      tail.push(head.slice(parent.length).replace(/^[/\\]/, ""));
      head = parent;
    }
  }
}

/**
 * Resolves the agent's checkpoint path and checks it lies under `root` (default: the path
 * itself, i.e. the agent is confined to the directory it was given). Symlinks are resolved
 * before comparing, so a link out of the root is caught. The filesystem root is refused.
 */
export function confineCheckpointPath(path: string, root?: string): { path: string; root: string } {
  const real = realpathLoose(path);
  const realRoot = realpathLoose(root ?? path);
  if (resolve(real, "..") === real) {
    throw new PathRefusedError(`checkpoint path ${JSON.stringify(path)} refused: it is the filesystem root`);
  }
  if (!isWithin(realRoot, real)) {
    throw new PathRefusedError(
      `checkpoint path ${JSON.stringify(path)} (resolved ${real}) refused: outside the allowed root ${realRoot}`,
    );
  }
  return { path: real, root: realRoot };
}

/** Joins a manifest-supplied relative name under `base`, refusing anything that escapes it. */
export function joinConfined(base: string, name: string, what: string): string {
  assertSafeRelativePath(name, what);
  const full = resolve(base, name);
  if (!isWithin(base, full))
    throw new PathRefusedError(`${what} ${JSON.stringify(name)} refused: escapes ${base}`);
  return full;
}
