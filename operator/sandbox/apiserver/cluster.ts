/**
 * The verbs of the Kubernetes API on the stored objects: create, get, list, update, patch,
 * delete and deletecollection, with the admission steps the real server applies to every
 * write (system metadata, optimistic concurrency, status subresource, generation, CRD schema
 * validation, field ownership, finalizers). HTTP concerns live in http.ts; this module only
 * sees parsed requests and returns objects or throws `ApiError`s.
 */
import { randomUUID } from "node:crypto";
import { parse as parseYaml } from "yaml";
import {
  CRD_RESOURCE,
  establishedStatus,
  type FieldValidation,
  resourceFromCrd,
  validateCrd,
  validateCustomObject,
} from "./crds.ts";
import { ApiError, errors } from "./errors.ts";
import { GarbageCollector } from "./gc.ts";
import { recordUpdate, serverSideApply } from "./managed-fields.ts";
import { isPlainObject, jsonPatch, mergePatch, patchTypeOf, strategicMergePatch } from "./patch.ts";
import type { ResourceRegistry } from "./registry.ts";
import { both, parseFieldSelector, parseLabelSelector } from "./selectors.ts";
import type { ObjectStore } from "./store.ts";
import { apiVersionOf, type JsonObject, type KubeObject, type ResourceType, resourceKey } from "./types.ts";
import { validateMetadata } from "./validation.ts";

/** One request, parsed: which resource, where, and the options that change a write. */
export interface OpContext {
  rt: ResourceType;
  version: string;
  namespace?: string;
  name?: string;
  subresource?: string;
  query: URLSearchParams;
  /** Manager name derived from the user agent when `fieldManager` is not given. */
  userAgentManager: string;
  /** Warnings for the `Warning` response header. */
  warnings: string[];
}

export interface ListResult {
  apiVersion: string;
  kind: string;
  metadata: { resourceVersion: string; continue?: string; remainingItemCount?: number };
  items: KubeObject[];
}

const NAMESPACES = { group: "", plural: "namespaces" };

export function nowTimestamp(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, "Z");
}

function isDryRun(q: URLSearchParams): boolean {
  return q.getAll("dryRun").includes("All");
}

function fieldValidationOf(q: URLSearchParams): FieldValidation {
  const v = q.get("fieldValidation");
  return v === "Strict" || v === "Ignore" ? v : "Warn";
}

/** Everything but metadata and status: what `generation` tracks. */
function specPart(obj: KubeObject): string {
  const { metadata: _m, status: _s, apiVersion: _a, kind: _k, ...rest } = obj;
  return JSON.stringify(rest);
}

export class Cluster {
  readonly gc: GarbageCollector;

  constructor(
    readonly registry: ResourceRegistry,
    readonly store: ObjectStore,
  ) {
    this.gc = new GarbageCollector(this);
  }

  /** The object as served in `version` (objects are stored in the storage version). */
  present(rt: ResourceType, version: string, obj: KubeObject): KubeObject {
    const apiVersion = apiVersionOf(rt.group, version);
    return obj.apiVersion === apiVersion ? obj : { ...obj, apiVersion };
  }

  // ---- reads ---------------------------------------------------------------------------

  get(ctx: OpContext): KubeObject {
    const obj = this.store.get(resourceKey(ctx.rt), ctx.namespace, ctx.name!);
    if (!obj) throw errors.notFound(ctx.rt, ctx.name!);
    return this.present(ctx.rt, ctx.version, obj);
  }

  list(ctx: OpContext): ListResult {
    const matcher = both(
      parseLabelSelector(ctx.query.get("labelSelector")),
      parseFieldSelector(ctx.query.get("fieldSelector")),
    );
    let items = this.store.list(resourceKey(ctx.rt), ctx.namespace);
    if (matcher) items = items.filter(matcher);
    const rv = String(this.store.currentRv());
    const page = paginate(items, ctx.query);
    return {
      apiVersion: apiVersionOf(ctx.rt.group, ctx.version),
      kind: ctx.rt.listKind,
      metadata: { resourceVersion: rv, ...page.meta },
      items: page.items.map((o) => this.present(ctx.rt, ctx.version, o)),
    };
  }

  // ---- writes --------------------------------------------------------------------------

  create(ctx: OpContext, body: unknown): KubeObject {
    const obj = this.decode(ctx, body);
    if (!obj.metadata.name && obj.metadata.generateName)
      obj.metadata.name = this.generateName(ctx, obj.metadata.generateName);
    this.checkNamespace(ctx, obj);
    validateMetadata(ctx.rt, obj, ctx.namespace);
    if (this.store.get(resourceKey(ctx.rt), obj.metadata.namespace, obj.metadata.name!)) {
      throw errors.alreadyExists(ctx.rt, obj.metadata.name!);
    }
    Object.assign(obj.metadata, {
      uid: randomUUID(),
      creationTimestamp: nowTimestamp(),
      generation: 1,
    });
    delete obj.metadata.deletionTimestamp;
    delete obj.metadata.resourceVersion;
    if (ctx.rt.custom && ctx.rt.statusSubresource) delete obj.status;
    this.admitKindSpecific(ctx, undefined, obj);
    this.validateCustom(ctx, undefined, obj);
    recordUpdate(undefined, obj, this.managerOf(ctx));
    return this.commit(ctx, undefined, obj);
  }

  update(ctx: OpContext, body: unknown): KubeObject {
    const obj = this.decode(ctx, body);
    const prev = this.mustGet(ctx);
    const want = obj.metadata.resourceVersion;
    if (want && want !== prev.metadata.resourceVersion) {
      throw errors.conflict(
        ctx.rt,
        ctx.name!,
        "the object has been modified; please apply your changes to the latest version and try again",
      );
    }
    return this.write(ctx, prev, obj);
  }

  patch(ctx: OpContext, body: string, contentType: string): KubeObject {
    const type = patchTypeOf(contentType);
    const key = resourceKey(ctx.rt);
    const prev = this.store.get(key, ctx.namespace, ctx.name!);
    if (type === "apply") return this.apply(ctx, prev, body);
    if (!prev) throw errors.notFound(ctx.rt, ctx.name!);
    const patch = parseJson(body);
    const current = this.present(ctx.rt, ctx.version, prev);
    let next: unknown;
    if (type === "json") next = jsonPatch(current, patch);
    else if (type === "merge") next = mergePatch(current, patch);
    else {
      if (ctx.rt.custom)
        throw errors.unsupportedMediaType(
          "application/strategic-merge-patch+json (not supported for custom resources)",
        );
      next = strategicMergePatch(current, patch);
    }
    if (!isPlainObject(next)) throw errors.badRequest("the patch did not produce an object");
    const want = isPlainObject(next.metadata) ? next.metadata.resourceVersion : undefined;
    if (want && want !== prev.metadata.resourceVersion) {
      throw errors.conflict(
        ctx.rt,
        ctx.name!,
        "the object has been modified; please apply your changes to the latest version and try again",
      );
    }
    return this.write(ctx, prev, this.decode(ctx, next));
  }

  private apply(ctx: OpContext, prev: KubeObject | undefined, body: string): KubeObject {
    const manager = ctx.query.get("fieldManager");
    if (!manager)
      throw errors.badRequest(
        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
      );
    let config: unknown;
    try {
      config = parseYaml(body);
    } catch (e) {
      throw errors.badRequest(`error decoding YAML: ${(e as Error).message.split("\n")[0]}`);
    }
    const applied = this.decode(ctx, config);
    if (applied.metadata.name && applied.metadata.name !== ctx.name) {
      throw errors.badRequest(
        `the name of the object (${applied.metadata.name}) does not match the name on the URL (${ctx.name})`,
      );
    }
    applied.metadata.name = ctx.name;
    const force = ctx.query.get("force") === "true";
    const current = prev ? this.present(ctx.rt, ctx.version, prev) : undefined;
    const merged = serverSideApply(current, applied, manager, force, ctx.subresource);
    if (!prev) {
      // An apply that creates: the create path, keeping the apply's ownership record.
      const managed = merged.metadata.managedFields;
      const created = { ...merged, metadata: { ...merged.metadata } };
      this.checkNamespace(ctx, created);
      validateMetadata(ctx.rt, created, ctx.namespace);
      Object.assign(created.metadata, {
        uid: randomUUID(),
        creationTimestamp: nowTimestamp(),
        generation: 1,
      });
      if (ctx.rt.custom && ctx.rt.statusSubresource && ctx.subresource !== "status")
        delete (created as Record<string, unknown>).status;
      this.admitKindSpecific(ctx, undefined, created);
      this.validateCustom(ctx, undefined, created);
      created.metadata.managedFields = managed;
      return this.commit(ctx, undefined, created);
    }
    return this.write(ctx, prev, merged, { skipOwnership: true });
  }

  /** The shared path of update, patch and apply: admission, then store (or finish deletion). */
  private write(
    ctx: OpContext,
    prev: KubeObject,
    next: KubeObject,
    opts: { skipOwnership?: boolean } = {},
  ): KubeObject {
    if (next.metadata.name !== undefined && next.metadata.name !== prev.metadata.name) {
      throw errors.badRequest(
        `the name of the object (${next.metadata.name}) does not match the name on the URL (${prev.metadata.name})`,
      );
    }
    if (next.metadata.uid && next.metadata.uid !== prev.metadata.uid) {
      throw errors.conflict(
        ctx.rt,
        prev.metadata.name!,
        `Precondition failed: UID in precondition: ${next.metadata.uid}, UID in object meta: ${prev.metadata.uid}`,
      );
    }
    const obj = this.scopeToSubresource(ctx, prev, next);
    keepSystemMetadata(prev, obj);
    validateMetadata(ctx.rt, obj, ctx.namespace);
    this.admitKindSpecific(ctx, prev, obj);
    this.validateCustom(ctx, prev, obj);
    obj.metadata.generation = (prev.metadata.generation ?? 1) + (specPart(obj) !== specPart(prev) ? 1 : 0);
    if (!opts.skipOwnership) {
      if (
        obj.metadata.managedFields === undefined ||
        sameJson(obj.metadata.managedFields, prev.metadata.managedFields)
      ) {
        obj.metadata.managedFields = prev.metadata.managedFields;
      }
      recordUpdate(prev, obj, this.managerOf(ctx), ctx.subresource);
    }
    if (
      sameJson(
        { ...obj, metadata: { ...obj.metadata, resourceVersion: undefined } },
        { ...prev, metadata: { ...prev.metadata, resourceVersion: undefined } },
      )
    ) {
      // A no-op write keeps the resourceVersion and emits no event, as on the real server.
      return this.present(ctx.rt, ctx.version, prev);
    }
    if (obj.metadata.deletionTimestamp && (obj.metadata.finalizers ?? []).length === 0) {
      if (isDryRun(ctx.query)) return this.present(ctx.rt, ctx.version, obj);
      return this.present(ctx.rt, ctx.version, this.removeNow(ctx.rt, prev, "Background"));
    }
    return this.commit(ctx, prev, obj);
  }

  /** Main-resource writes keep the stored status; status writes change only the status. */
  private scopeToSubresource(ctx: OpContext, prev: KubeObject, next: KubeObject): KubeObject {
    if (ctx.subresource === "status") {
      const obj = structuredClone(prev);
      if (next.status === undefined) delete obj.status;
      else obj.status = next.status;
      obj.metadata.managedFields = next.metadata.managedFields ?? prev.metadata.managedFields;
      return obj;
    }
    if (ctx.rt.statusSubresource) {
      if (prev.status === undefined) delete next.status;
      else next.status = structuredClone(prev.status);
    }
    return next;
  }

  /** Schema validation of custom objects: defaults, pruning, types, CEL (with oldSelf). */
  private validateCustom(ctx: OpContext, prev: KubeObject | undefined, obj: KubeObject): void {
    if (!ctx.rt.custom) return;
    const old = prev ? this.present(ctx.rt, ctx.version, prev) : undefined;
    ctx.warnings.push(...validateCustomObject(ctx.rt, ctx.version, obj, old, fieldValidationOf(ctx.query)));
  }

  private commit(ctx: OpContext, prev: KubeObject | undefined, obj: KubeObject): KubeObject {
    const stored = { ...obj, apiVersion: apiVersionOf(ctx.rt.group, ctx.rt.versions[0]!) };
    if (isDryRun(ctx.query)) return this.present(ctx.rt, ctx.version, stored);
    const saved = this.store.put(resourceKey(ctx.rt), stored, prev ? "MODIFIED" : "ADDED");
    this.afterWrite(ctx.rt, saved);
    return this.present(ctx.rt, ctx.version, saved);
  }

  /** CRDs become served resources as soon as they are stored. */
  private afterWrite(rt: ResourceType, saved: KubeObject): void {
    if (resourceKey(rt) !== resourceKey(CRD_RESOURCE)) return;
    if (!saved.metadata.deletionTimestamp) this.registry.add(resourceFromCrd(saved));
  }

  // ---- deletes -------------------------------------------------------------------------

  delete(ctx: OpContext, body: unknown): KubeObject {
    const prev = this.mustGet(ctx);
    const opts = deleteOptions(ctx.query, body);
    if (opts.preconditions?.uid && opts.preconditions.uid !== prev.metadata.uid) {
      throw errors.conflict(
        ctx.rt,
        ctx.name!,
        `Precondition failed: UID in precondition: ${opts.preconditions.uid}, UID in object meta: ${prev.metadata.uid}`,
      );
    }
    if (
      opts.preconditions?.resourceVersion &&
      opts.preconditions.resourceVersion !== prev.metadata.resourceVersion
    ) {
      throw errors.conflict(
        ctx.rt,
        ctx.name!,
        `Precondition failed: ResourceVersion in precondition: ${opts.preconditions.resourceVersion}, ResourceVersion in object meta: ${prev.metadata.resourceVersion}`,
      );
    }
    if (opts.dryRun) return this.present(ctx.rt, ctx.version, prev);
    return this.present(
      ctx.rt,
      ctx.version,
      this.deleteObject(ctx.rt, prev, opts.propagationPolicy, opts.gracePeriodSeconds),
    );
  }

  deleteCollection(ctx: OpContext, body: unknown): ListResult {
    const listed = this.list({ ...ctx, query: withoutPaging(ctx.query) });
    const opts = deleteOptions(ctx.query, body);
    const items = opts.dryRun
      ? listed.items
      : listed.items.map((o) => {
          const stored = this.store.get(resourceKey(ctx.rt), o.metadata.namespace, o.metadata.name!);
          return stored
            ? this.deleteObject(ctx.rt, stored, opts.propagationPolicy, opts.gracePeriodSeconds)
            : o;
        });
    return { ...listed, items: items.map((o) => this.present(ctx.rt, ctx.version, o)) };
  }

  /**
   * Deletes one object the way the real server does: objects with finalizers (or a
   * foreground deletion, or a namespace, or a pod on a node with a grace period) only get
   * a deletionTimestamp; the rest are removed and their dependents collected.
   */
  deleteObject(rt: ResourceType, prev: KubeObject, policy: string | undefined, grace?: number): KubeObject {
    const effective = policy ?? this.gc.defaultPolicy(rt);
    if (effective === "Orphan") this.gc.orphanDependents(prev);
    const finalizers = [...(prev.metadata.finalizers ?? [])];
    if (
      effective === "Foreground" &&
      this.gc.hasDependents(prev) &&
      !finalizers.includes("foregroundDeletion")
    ) {
      finalizers.push("foregroundDeletion");
    }
    const isNamespace = resourceKey(rt) === resourceKey(NAMESPACES);
    const graceful = rt.kind === "Pod" && rt.group === "" && gracefulPod(prev, grace);
    if (finalizers.length === 0 && !isNamespace && !graceful) return this.removeNow(rt, prev, effective);
    if (prev.metadata.deletionTimestamp && sameJson(finalizers, prev.metadata.finalizers ?? [])) {
      if (graceful || grace !== 0 || finalizers.length > 0 || isNamespace) return prev;
    }
    const obj = structuredClone(prev);
    obj.metadata.deletionTimestamp ??= nowTimestamp();
    obj.metadata.finalizers = finalizers.length > 0 ? finalizers : undefined;
    if (obj.metadata.finalizers === undefined) delete obj.metadata.finalizers;
    if (graceful) obj.metadata.deletionGracePeriodSeconds = grace ?? podGrace(prev);
    else obj.metadata.deletionGracePeriodSeconds = 0;
    if (isNamespace) obj.status = { ...(isPlainObject(obj.status) ? obj.status : {}), phase: "Terminating" };
    const saved = this.store.put(resourceKey(rt), obj, "MODIFIED");
    if (isNamespace) this.gc.emptyNamespace(saved);
    if (effective === "Foreground") this.gc.deleteDependents(saved, "Foreground");
    return saved;
  }

  /** Removes an object from storage and lets the collector follow its owner references. */
  removeNow(rt: ResourceType, prev: KubeObject, policy: string): KubeObject {
    const gone = this.store.remove(resourceKey(rt), prev);
    if (resourceKey(rt) === resourceKey(CRD_RESOURCE)) this.gc.removeCrd(prev);
    this.gc.afterRemoval(rt, gone, policy);
    return gone;
  }

  // ---- helpers -------------------------------------------------------------------------

  private mustGet(ctx: OpContext): KubeObject {
    const obj = this.store.get(resourceKey(ctx.rt), ctx.namespace, ctx.name!);
    if (!obj) throw errors.notFound(ctx.rt, ctx.name!);
    return obj;
  }

  private managerOf(ctx: OpContext): string {
    return ctx.query.get("fieldManager") ?? ctx.userAgentManager;
  }

  /** The body as an object of this resource, with apiVersion, kind and namespace checked. */
  private decode(ctx: OpContext, body: unknown): KubeObject {
    if (!isPlainObject(body))
      throw errors.badRequest("the body of the request must be a JSON or YAML object");
    const obj = structuredClone(body) as JsonObject;
    const apiVersion = apiVersionOf(ctx.rt.group, ctx.version);
    if (obj.apiVersion !== undefined && obj.apiVersion !== apiVersion) {
      throw errors.badRequest(
        `the API version in the data (${String(obj.apiVersion)}) does not match the expected API version (${apiVersion})`,
      );
    }
    if (obj.kind !== undefined && obj.kind !== ctx.rt.kind) {
      throw errors.badRequest(
        `the kind in the data (${String(obj.kind)}) does not match the expected kind (${ctx.rt.kind})`,
      );
    }
    obj.apiVersion = apiVersion;
    obj.kind = ctx.rt.kind;
    const meta = isPlainObject(obj.metadata) ? obj.metadata : {};
    if (ctx.rt.namespaced) {
      if (meta.namespace !== undefined && meta.namespace !== "" && meta.namespace !== ctx.namespace) {
        throw errors.badRequest(
          "the namespace of the provided object does not match the namespace sent on the request",
        );
      }
      meta.namespace = ctx.namespace;
    } else delete meta.namespace;
    obj.metadata = meta;
    return obj as KubeObject;
  }

  private generateName(ctx: OpContext, prefix: string): string {
    const alphabet = "bcdfghjklmnpqrstvwxz2456789";
    for (;;) {
      let suffix = "";
      for (let i = 0; i < 5; i++) suffix += alphabet[Math.floor(Math.random() * alphabet.length)];
      const name = `${prefix}${suffix}`;
      if (!this.store.get(resourceKey(ctx.rt), ctx.namespace, name)) return name;
    }
  }

  private checkNamespace(ctx: OpContext, obj: KubeObject): void {
    if (!ctx.rt.namespaced) return;
    const ns = this.store.get(resourceKey(NAMESPACES), undefined, ctx.namespace!);
    if (!ns) throw errors.notFound(NAMESPACES, ctx.namespace!);
    if (ns.metadata.deletionTimestamp) {
      throw new ApiError(
        403,
        "Forbidden",
        `${ctx.rt.plural} "${obj.metadata.name ?? ""}" is forbidden: unable to create new content in namespace ${ctx.namespace} because it is being terminated`,
        {
          name: obj.metadata.name,
          kind: ctx.rt.plural,
          causes: [
            {
              reason: "NamespaceTerminating",
              message: `namespace ${ctx.namespace} is being terminated`,
              field: "metadata.namespace",
            },
          ],
        },
      );
    }
  }

  /** What the real server's registry strategies do for a few kinds. */
  private admitKindSpecific(ctx: OpContext, prev: KubeObject | undefined, obj: KubeObject): void {
    const { group, kind } = ctx.rt;
    if (group === "" && kind === "Secret") {
      foldStringData(obj);
      if (!obj.type) obj.type = "Opaque";
    }
    if (group === "" && kind === "Namespace") {
      obj.spec = { finalizers: ["kubernetes"] };
      obj.status = { phase: obj.metadata.deletionTimestamp ? "Terminating" : "Active" };
    }
    if (group === "" && kind === "Pod" && !prev)
      obj.status = isPlainObject(obj.status) && obj.status.phase ? obj.status : { phase: "Pending" };
    if (group === "" && kind === "Service" && !prev) assignClusterIP(obj);
    if (resourceKey(ctx.rt) === resourceKey(CRD_RESOURCE)) {
      const problems = validateCrd(obj);
      if (problems.length > 0) throw errors.invalid(CRD_RESOURCE, obj.metadata.name ?? "", problems);
      obj.status = establishedStatus({ ...obj, status: prev?.status });
    }
  }
}

// ---- free helpers ------------------------------------------------------------------------

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

export function parseJson(body: string): unknown {
  try {
    return JSON.parse(body);
  } catch (e) {
    throw errors.badRequest(`couldn't get version/kind; json parse error: ${(e as Error).message}`);
  }
}

/** Fields clients cannot change: identity, creation and deletion bookkeeping. */
function keepSystemMetadata(prev: KubeObject, obj: KubeObject): void {
  const m = obj.metadata;
  const p = prev.metadata;
  m.uid = p.uid;
  m.creationTimestamp = p.creationTimestamp;
  m.namespace = p.namespace;
  m.generateName = m.generateName ?? p.generateName;
  if (m.generateName === undefined) delete m.generateName;
  m.deletionTimestamp = p.deletionTimestamp;
  m.deletionGracePeriodSeconds = p.deletionGracePeriodSeconds;
  if (m.deletionTimestamp === undefined) delete m.deletionTimestamp;
  if (m.deletionGracePeriodSeconds === undefined) delete m.deletionGracePeriodSeconds;
  if (p.deletionTimestamp) {
    // Once deleting, finalizers may only be removed, never added (as the real server enforces).
    const before = new Set(p.finalizers ?? []);
    const added = (m.finalizers ?? []).filter((f) => !before.has(f));
    if (added.length > 0) {
      throw errors.forbidden(
        `no new finalizers can be added if the object is being deleted, found new finalizers ${JSON.stringify(added)}`,
      );
    }
  }
  m.resourceVersion = p.resourceVersion;
}

interface DeleteOptions {
  propagationPolicy?: string;
  gracePeriodSeconds?: number;
  dryRun: boolean;
  preconditions?: { uid?: string; resourceVersion?: string };
}

function deleteOptions(q: URLSearchParams, body: unknown): DeleteOptions {
  const b = isPlainObject(body) ? body : {};
  const grace = q.get("gracePeriodSeconds") ?? (b.gracePeriodSeconds as number | undefined);
  const policy =
    q.get("propagationPolicy") ?? (b.propagationPolicy as string | undefined) ?? orphanFlag(q, b);
  if (policy && !["Orphan", "Background", "Foreground"].includes(policy)) {
    throw errors.badRequest(
      `propagationPolicy: Unsupported value: "${policy}": supported values: "Foreground", "Background", "Orphan"`,
    );
  }
  return {
    propagationPolicy: policy,
    gracePeriodSeconds: grace === undefined || grace === null ? undefined : Number(grace),
    dryRun: isDryRun(q) || (Array.isArray(b.dryRun) && b.dryRun.includes("All")),
    preconditions: isPlainObject(b.preconditions)
      ? (b.preconditions as DeleteOptions["preconditions"])
      : undefined,
  };
}

function orphanFlag(q: URLSearchParams, b: JsonObject): string | undefined {
  const v = q.get("orphanDependents") ?? b.orphanDependents;
  if (v === undefined || v === null) return undefined;
  return v === true || v === "true" ? "Orphan" : "Background";
}

function podGrace(pod: KubeObject): number {
  const spec = isPlainObject(pod.spec) ? pod.spec : {};
  return typeof spec.terminationGracePeriodSeconds === "number" ? spec.terminationGracePeriodSeconds : 30;
}

/** A pod bound to a node is deleted gracefully: its kubelet confirms with a zero grace period. */
function gracefulPod(pod: KubeObject, grace: number | undefined): boolean {
  const spec = isPlainObject(pod.spec) ? pod.spec : {};
  const phase = isPlainObject(pod.status) ? pod.status.phase : undefined;
  if (!spec.nodeName || phase === "Succeeded" || phase === "Failed") return false;
  return (grace ?? podGrace(pod)) > 0;
}

function foldStringData(secret: KubeObject): void {
  if (!isPlainObject(secret.stringData)) return;
  const data = isPlainObject(secret.data) ? { ...secret.data } : {};
  for (const [k, v] of Object.entries(secret.stringData)) data[k] = Buffer.from(String(v)).toString("base64");
  secret.data = data;
  delete secret.stringData;
}

let nextServiceIp = 1;
function assignClusterIP(svc: KubeObject): void {
  const spec = isPlainObject(svc.spec) ? svc.spec : {};
  svc.spec = spec;
  spec.type ??= "ClusterIP";
  if (spec.clusterIP === "None" || spec.type === "ExternalName") return;
  if (!spec.clusterIP) {
    const n = nextServiceIp++;
    spec.clusterIP = `10.96.${(n >> 8) & 255}.${n & 255}`;
    spec.clusterIPs = [spec.clusterIP];
  }
}

interface ContinueToken {
  after: string;
}

function keyOf(o: KubeObject): string {
  return o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name!;
}

/** `limit`/`continue`: the token names the last key returned; the next page starts after it. */
function paginate(
  items: KubeObject[],
  q: URLSearchParams,
): { items: KubeObject[]; meta: { continue?: string; remainingItemCount?: number } } {
  let start = 0;
  const token = q.get("continue");
  if (token) {
    let parsed: ContinueToken;
    try {
      parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as ContinueToken;
    } catch {
      throw errors.badRequest("continue key is not valid: illegal base64 data");
    }
    start = items.findIndex((o) => keyOf(o) > parsed.after);
    if (start < 0) start = items.length;
  }
  const limit = Number(q.get("limit") ?? 0);
  if (!(limit > 0) || start + limit >= items.length) return { items: items.slice(start), meta: {} };
  const page = items.slice(start, start + limit);
  const last = page[page.length - 1]!;
  const next = Buffer.from(JSON.stringify({ after: keyOf(last) } satisfies ContinueToken)).toString(
    "base64url",
  );
  return { items: page, meta: { continue: next, remainingItemCount: items.length - start - limit } };
}

function withoutPaging(q: URLSearchParams): URLSearchParams {
  const out = new URLSearchParams(q);
  out.delete("limit");
  out.delete("continue");
  return out;
}
