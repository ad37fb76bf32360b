/**
 * The work of kube-controller-manager's garbage collector and namespace controller, done
 * in-line: dependents of a removed owner are deleted (background), or deleted before it
 * (foreground), or released (orphan); a terminating namespace is emptied and then removed;
 * a deleted CRD takes its custom objects with it.
 */
import type { Cluster } from "./cluster.ts";
import { CRD_RESOURCE } from "./crds.ts";
import { isPlainObject } from "./patch.ts";
import type { ChangeEvent } from "./store.ts";
import { type KubeObject, type ResourceType, resourceKey } from "./types.ts";

interface Located {
  resource: string;
  namespace?: string;
  name: string;
}

export class GarbageCollector {
  /** uid → where the object lives. */
  private readonly byUid = new Map<string, Located>();
  /** owner uid → uids of objects naming it in ownerReferences. */
  private readonly dependents = new Map<string, Set<string>>();
  /** uid → the owner uids it references (to unlink when its references change). */
  private readonly ownersOf = new Map<string, string[]>();

  constructor(private readonly cluster: Cluster) {
    cluster.store.subscribe((ev) => this.index(ev));
  }

  /** Rebuilds the indexes from stored objects (after loading persisted state). */
  reindex(): void {
    for (const resource of this.cluster.store.resources()) {
      for (const obj of this.cluster.store.list(resource))
        this.index({ rv: 0, type: "ADDED", resource, object: obj });
    }
  }

  defaultPolicy(_rt: ResourceType): string {
    return "Background";
  }

  hasDependents(owner: KubeObject): boolean {
    return (this.dependents.get(owner.metadata.uid!)?.size ?? 0) > 0;
  }

  /** Orphan: dependents lose their reference to the owner and stay. */
  orphanDependents(owner: KubeObject): void {
    for (const dep of this.liveDependents(owner)) {
      const obj = structuredClone(dep.obj);
      obj.metadata.ownerReferences = (obj.metadata.ownerReferences ?? []).filter(
        (r) => r.uid !== owner.metadata.uid,
      );
      if (obj.metadata.ownerReferences.length === 0) delete obj.metadata.ownerReferences;
      this.cluster.store.put(dep.resource, obj, "MODIFIED");
    }
  }

  deleteDependents(owner: KubeObject, policy: string): void {
    for (const dep of this.liveDependents(owner)) {
      if (dep.obj.metadata.deletionTimestamp) continue;
      if (this.otherOwnersRemain(dep.obj, owner.metadata.uid!)) continue;
      this.cluster.deleteObject(dep.rt, dep.obj, policy);
    }
    this.finishForeground(owner);
  }

  /** Called once an object left storage. */
  afterRemoval(rt: ResourceType, gone: KubeObject, policy: string): void {
    if (policy !== "Orphan") this.deleteDependents(gone, "Background");
    for (const ref of gone.metadata.ownerReferences ?? []) {
      const owner = this.lookup(ref.uid);
      if (owner?.obj.metadata.deletionTimestamp) this.finishForeground(owner.obj);
    }
    const ns = gone.metadata.namespace;
    if (rt.namespaced && ns) {
      const nsObj = this.cluster.store.get("/namespaces", undefined, ns);
      if (nsObj?.metadata.deletionTimestamp) this.finishNamespace(nsObj);
    }
  }

  /** Deletes everything in a terminating namespace; the namespace goes once it is empty. */
  emptyNamespace(ns: KubeObject): void {
    const name = ns.metadata.name!;
    for (const rt of this.cluster.registry.all()) {
      if (!rt.namespaced) continue;
      for (const obj of this.cluster.store.list(resourceKey(rt), name)) {
        const current = this.cluster.store.get(resourceKey(rt), name, obj.metadata.name!);
        if (current && !current.metadata.deletionTimestamp)
          this.cluster.deleteObject(rt, current, "Background", 0);
      }
    }
    this.finishNamespace(ns);
  }

  /** A deleted CRD stops being served and its objects are removed. */
  removeCrd(crd: KubeObject): void {
    const spec = isPlainObject(crd.spec) ? crd.spec : {};
    const names = isPlainObject(spec.names) ? spec.names : {};
    const group = String(spec.group ?? "");
    const plural = String(names.plural ?? "");
    const rt = this.cluster.registry.inGroup(group).find((r) => r.plural === plural);
    if (!rt || rt.custom?.crdName !== crd.metadata.name) return;
    for (const obj of this.cluster.store.list(resourceKey(rt))) this.cluster.removeNow(rt, obj, "Background");
    this.cluster.registry.remove(group, plural);
  }

  private finishNamespace(ns: KubeObject): void {
    const name = ns.metadata.name!;
    // A count, not a listing: this runs after every removal in a terminating namespace.
    const remaining = this.cluster.store.objectsInNamespace(name) > 0;
    const current = this.cluster.store.get("/namespaces", undefined, name);
    if (remaining || !current) return;
    const nsType = this.cluster.registry.lookup("", "v1", "namespaces")!;
    if ((current.metadata.finalizers ?? []).length > 0) return;
    this.cluster.removeNow(nsType, current, "Background");
  }

  /** Foreground deletion completes when the owner has no dependents left. */
  private finishForeground(owner: KubeObject): void {
    const current = this.lookup(owner.metadata.uid!);
    if (!current?.obj.metadata.deletionTimestamp) return;
    const finalizers = current.obj.metadata.finalizers ?? [];
    if (!finalizers.includes("foregroundDeletion") || this.hasDependents(current.obj)) return;
    const rest = finalizers.filter((f) => f !== "foregroundDeletion");
    if (rest.length === 0) {
      this.cluster.removeNow(current.rt, current.obj, "Background");
      return;
    }
    const obj = structuredClone(current.obj);
    obj.metadata.finalizers = rest;
    this.cluster.store.put(current.resource, obj, "MODIFIED");
  }

  private otherOwnersRemain(dep: KubeObject, goneUid: string): boolean {
    return (dep.metadata.ownerReferences ?? []).some(
      (r) => r.uid !== goneUid && this.lookup(r.uid) !== undefined,
    );
  }

  private liveDependents(owner: KubeObject): Array<{ resource: string; rt: ResourceType; obj: KubeObject }> {
    const uids = [...(this.dependents.get(owner.metadata.uid!) ?? [])];
    return uids.map((u) => this.lookup(u)).filter((d): d is NonNullable<typeof d> => d !== undefined);
  }

  private lookup(uid: string): { resource: string; rt: ResourceType; obj: KubeObject } | undefined {
    const at = this.byUid.get(uid);
    if (!at) return undefined;
    const obj = this.cluster.store.get(at.resource, at.namespace, at.name);
    const [group, plural] = splitKey(at.resource);
    const rt = this.cluster.registry.inGroup(group).find((r) => r.plural === plural);
    return obj && rt ? { resource: at.resource, rt, obj } : undefined;
  }

  private index(ev: ChangeEvent): void {
    const uid = ev.object.metadata.uid;
    if (!uid) return;
    for (const owner of this.ownersOf.get(uid) ?? []) {
      const set = this.dependents.get(owner);
      set?.delete(uid);
      if (set?.size === 0) this.dependents.delete(owner);
    }
    this.ownersOf.delete(uid);
    if (ev.type === "DELETED") {
      this.byUid.delete(uid);
      return;
    }
    this.byUid.set(uid, {
      resource: ev.resource,
      namespace: ev.object.metadata.namespace,
      name: ev.object.metadata.name!,
    });
    const owners = (ev.object.metadata.ownerReferences ?? []).map((r) => r.uid);
    if (owners.length === 0) return;
    this.ownersOf.set(uid, owners);
    for (const owner of owners) {
      let set = this.dependents.get(owner);
      if (!set) {
        set = new Set();
        this.dependents.set(owner, set);
      }
      set.add(uid);
    }
  }
}

function splitKey(key: string): [string, string] {
  const i = key.indexOf("/");
  return [key.slice(0, i), key.slice(i + 1)];
}

export const CRD_KEY = resourceKey(CRD_RESOURCE);
