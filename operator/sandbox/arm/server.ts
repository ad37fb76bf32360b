/**
 * The ARM emulator: the Azure Resource Manager and Entra ID endpoints the Azure responder
 * calls, over real HTTPS on 127.0.0.1, so the real SDK code (@azure/identity,
 * @azure/arm-compute, @azure/arm-containerservice) runs unchanged against it.
 *
 * Served:
 * - Entra ID: `GET /{tenant}/v2.0/.well-known/openid-configuration`, `POST /{tenant}/oauth2/v2.0/token`
 *   (client credentials; `ClientSecretCredential` with `authorityHost` = the emulator's URL and
 *   `disableInstanceDiscovery`), tokens checked on every ARM call.
 * - Compute: `ResourceSkus.list`, `Usage.list`, capacity reservation groups (get, put) and
 *   capacity reservations (get, put, delete, list).
 * - Container service: one AKS cluster's agent pool (get, put).
 *
 * Why HTTPS and not plain HTTP: see `tls.ts` (the SDK will not send a token over http).
 *
 * Every long-running operation completes synchronously (201/200 with provisioningState
 * Succeeded, delete 200/204), so the SDK pollers finish without polling; failures are returned
 * synchronously with Azure's error body and status. Real ARM reports some allocation failures
 * through the async operation instead; the responder classifies the same codes either way.
 *
 * State (free nodes, reservations, pool size, quota usage) lives in memory and is mutable at
 * run time (`setCapacity`, `setQuota`, `injectError`, …) for tests and the demo.
 */

import { randomBytes, randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { parseDuration } from "../../util/duration.ts";
import {
  type ArmCapacityEntry,
  type ArmConfig,
  type ArmConfigInput,
  type ArmInjectedErrorSpec,
  type ArmOperation,
  parseArmConfig,
  skuInfo,
} from "./config.ts";
import { armErrorBody, armMessages, defaultStatus } from "./errors.ts";
import {
  type ArmReservationRecord,
  type ArmSnapshot,
  loadOrCreateCertificate,
  loadSnapshot,
  snapshotWriter,
} from "./persist.ts";

export type ArmReservation = ArmReservationRecord;

/** Where and how the emulator runs (the sandbox's `ArmEmulatorLaunch` fits as is). */
export interface ArmEmulatorOptions {
  /** Port to listen on; a free one when absent or taken. */
  port?: number;
  /** Keeps certificate and state here across restarts (see `persist.ts`); memory only when absent. */
  stateDir?: string;
  /** Location of the cluster and group when the config names none (before the first capacity entry's). */
  region?: string;
}

export interface ArmAgentPool {
  id: string;
  cluster: string;
  name: string;
  vmSize: string;
  count: number;
  capacityReservationGroupId: string;
}

export interface ArmEmulatorEvents {
  /** A reservation was created, resized or deleted. */
  reservation: [{ action: "created" | "updated" | "deleted"; reservation: ArmReservation }];
  /** The GPU agent pool's node count changed (the sandbox adds or removes simulated nodes). */
  agentPoolScaled: [{ cluster: string; pool: string; vmSize: string; count: number; previous: number }];
}

export interface ArmEmulator {
  /** ARM endpoint and Entra authority host at once: `https://127.0.0.1:PORT`. */
  readonly url: string;
  /** PEM certificate the clients must trust (`tlsOptions: { ca }`). */
  readonly ca: string;
  readonly config: Readonly<ArmConfig>;
  readonly events: EventEmitter<ArmEmulatorEvents>;
  close(): Promise<void>;

  /** Free nodes of `sku` in `region` (the SKU is offered there from now on). */
  setCapacity(region: string, sku: string, available: number): void;
  /** Stops offering `sku` in `region` (ResourceSkus omits it; a reservation gets SkuNotAvailable). */
  removeSku(region: string, sku: string): void;
  setQuota(region: string, family: string, limit: number, used?: number): void;
  setLatency(latency: string | number): void;
  /** Switches Azure-style async long-running operations on or off (see the config). */
  setAsyncOperations(on: boolean): void;
  /** Injects an ARM error; returns a function that removes it. */
  injectError(spec: ArmInjectedErrorSpec): () => void;
  clearErrors(): void;

  available(region: string, sku: string): number | undefined;
  reservations(): ArmReservation[];
  reservation(name: string): ArmReservation | undefined;
  agentPool(): ArmAgentPool;
  /** vCPUs of `family` in `region` charged against quota (outside use + reservations). */
  quotaUsage(region: string, family: string): number;
  /** Calls served per operation (including failed ones); for request-count figures. */
  calls(operation?: ArmOperation): number;
}

interface Route {
  op: ArmOperation;
  params: Record<string, string>;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const lc = (s: string) => s.toLowerCase();

/** Matches a request path against the emulator's routes (ARM paths are case-insensitive). */
function route(method: string, path: string): Route | undefined {
  const s = path.split("/").filter(Boolean).map(decodeURIComponent);
  const l = s.map(lc);
  if (l.length === 4 && l[1] === "v2.0" && l[2] === ".well-known" && l[3] === "openid-configuration") {
    return method === "GET" ? { op: "token", params: { tenant: s[0]!, discovery: "1" } } : undefined;
  }
  if (l.length === 4 && l[1] === "oauth2" && l[2] === "v2.0" && l[3] === "token") {
    return method === "POST" ? { op: "token", params: { tenant: s[0]! } } : undefined;
  }
  if (l[0] !== "subscriptions" || l.length < 4) return undefined;
  const sub = s[1]!;
  if (l[2] === "providers" && l.length === 8 && l[4] === "locations" && l[6] === "operations") {
    return method === "GET" ? { op: "operations.get", params: { sub, id: s[7]! } } : undefined;
  }
  if (l[2] === "providers" && l[3] === "microsoft.compute") {
    if (l.length === 5 && l[4] === "skus" && method === "GET")
      return { op: "resourceSkus.list", params: { sub } };
    if (l.length === 7 && l[4] === "locations" && l[6] === "usages" && method === "GET") {
      return { op: "usage.list", params: { sub, location: s[5]! } };
    }
    return undefined;
  }
  if (l[2] !== "resourcegroups" || l[4] !== "providers") return undefined;
  const rg = s[3]!;
  if (l[5] === "microsoft.compute" && l[6] === "capacityreservationgroups" && l.length >= 8) {
    const group = s[7]!;
    if (l.length === 8) {
      if (method === "GET") return { op: "capacityReservationGroups.get", params: { sub, rg, group } };
      if (method === "PUT")
        return { op: "capacityReservationGroups.createOrUpdate", params: { sub, rg, group } };
      return undefined;
    }
    if (l[8] !== "capacityreservations") return undefined;
    if (l.length === 9 && method === "GET")
      return { op: "capacityReservations.list", params: { sub, rg, group } };
    if (l.length === 10) {
      const name = s[9]!;
      const ops: Record<string, ArmOperation> = {
        GET: "capacityReservations.get",
        PUT: "capacityReservations.createOrUpdate",
        DELETE: "capacityReservations.delete",
      };
      const op = ops[method];
      return op ? { op, params: { sub, rg, group, name } } : undefined;
    }
    return undefined;
  }
  if (
    l[5] === "microsoft.containerservice" &&
    l[6] === "managedclusters" &&
    l[8] === "agentpools" &&
    l.length === 10
  ) {
    const params = { sub, rg, cluster: s[7]!, pool: s[9]! };
    if (method === "GET") return { op: "agentPools.get", params };
    if (method === "PUT") return { op: "agentPools.createOrUpdate", params };
  }
  return undefined;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
    readonly details?: ReadonlyArray<{ code: string; message?: string }>,
  ) {
    super(message);
  }
}

class ArmState {
  capacity = new Map<string, ArmCapacityEntry>();
  groups = new Map<string, { name: string; location: string; id: string }>();
  reservations = new Map<string, ArmReservation>();
  pool: ArmAgentPool;
  tokens = new Map<string, number>();
  errors: ArmInjectedErrorSpec[] = [];
  latencyMs: number;
  asyncOperations: boolean;
  operations = new Map<
    string,
    { status: "Succeeded" | "Failed"; error?: { code: string; message: string }; start: string }
  >();
  callCounts = new Map<ArmOperation, number>();
  readonly location: string;

  constructor(
    readonly config: ArmConfig,
    region?: string,
  ) {
    for (const c of config.capacity) this.capacity.set(this.capKey(c.region, c.sku), { ...c });
    this.location = config.location ?? region ?? config.capacity[0]?.region ?? "eastus";
    const groupId = this.groupId(config.capacityReservationGroup);
    this.groups.set(lc(config.capacityReservationGroup), {
      name: config.capacityReservationGroup,
      location: this.location,
      id: groupId,
    });
    const vmSize = config.nodePoolSku ?? config.capacity[0]?.sku ?? "Standard_ND96isr_H100_v5";
    this.pool = {
      id: `/subscriptions/${config.subscriptionId}/resourceGroups/${config.resourceGroup}/providers/Microsoft.ContainerService/managedClusters/${config.aksCluster}/agentPools/${config.nodePool}`,
      cluster: config.aksCluster,
      name: config.nodePool,
      vmSize,
      count: config.nodePoolCount,
      capacityReservationGroupId: groupId,
    };
    this.errors = config.errors.map((e) => ({ ...e }));
    this.latencyMs = parseDuration(config.latency);
    this.asyncOperations = config.asyncOperations;
  }

  snapshot(): ArmSnapshot {
    const now = Date.now();
    return {
      version: 1,
      capacity: [...this.capacity.values()],
      quota: this.config.quota,
      groups: [...this.groups.values()],
      reservations: [...this.reservations.entries()],
      poolCount: this.pool.count,
      tokens: [...this.tokens.entries()].filter(([, exp]) => exp > now),
    };
  }

  restore(s: ArmSnapshot): void {
    this.capacity = new Map(s.capacity.map((c) => [this.capKey(c.region, c.sku), c]));
    this.config.quota = s.quota;
    this.groups = new Map(s.groups.map((g) => [lc(g.name), g]));
    this.reservations = new Map(s.reservations);
    this.pool.count = s.poolCount;
    this.tokens = new Map(s.tokens);
  }

  capKey(region: string, sku: string): string {
    return `${lc(region)}|${lc(sku)}`;
  }

  groupId(group: string): string {
    return `/subscriptions/${this.config.subscriptionId}/resourceGroups/${this.config.resourceGroup}/providers/Microsoft.Compute/capacityReservationGroups/${group}`;
  }

  reservedVcpus(region: string, family: string): number {
    let total = 0;
    for (const r of this.reservations.values()) {
      if (lc(r.location) !== lc(region)) continue;
      const info = skuInfo(this.config, r.sku);
      if (!info) continue;
      if (lc(family) === "cores" || lc(info.family) === lc(family)) total += info.vcpus * r.capacity;
    }
    return total;
  }

  quotaUsage(region: string, family: string): number {
    const q = this.config.quota.find((x) => lc(x.region) === lc(region) && lc(x.family) === lc(family));
    return (q?.used ?? 0) + this.reservedVcpus(region, family);
  }

  /** The first injected error for `op` still armed, consumed once. */
  takeError(op: ArmOperation): ArmInjectedErrorSpec | undefined {
    const i = this.errors.findIndex((e) => e.operation === op || e.operation === "*");
    if (i < 0) return undefined;
    const e = this.errors[i]!;
    if (e.times !== undefined) {
      e.times -= 1;
      if (e.times <= 0) this.errors.splice(i, 1);
    }
    return e;
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

type Json = Record<string, unknown>;

function asObject(v: unknown): Json {
  return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Json) : {};
}

/** Starts the emulator on 127.0.0.1 and a free port. */
export async function startArmEmulator(
  input: ArmConfigInput | unknown = {},
  options: ArmEmulatorOptions = {},
): Promise<ArmEmulator> {
  const config = parseArmConfig(input);
  const state = new ArmState(config, options.region);
  const saved = loadSnapshot(options.stateDir);
  if (saved) state.restore(saved);
  const saver = snapshotWriter(options.stateDir, () => state.snapshot());
  const events = new EventEmitter<ArmEmulatorEvents>();
  const { cert, key } = loadOrCreateCertificate(options.stateDir);
  let base = "";

  const send = (
    res: ServerResponse,
    status: number,
    body?: unknown,
    headers: Record<string, string> = {},
  ) => {
    const text = body === undefined ? "" : typeof body === "string" ? body : JSON.stringify(body);
    res.writeHead(status, {
      ...(text ? { "content-type": "application/json; charset=utf-8" } : {}),
      "x-ms-request-id": randomUUID(),
      ...headers,
    });
    res.end(text);
  };

  const reservationView = (r: ArmReservation) => ({
    id: r.id,
    name: r.name,
    type: "Microsoft.Compute/capacityReservationGroups/capacityReservations",
    location: r.location,
    tags: r.tags,
    sku: { name: r.sku, capacity: r.capacity },
    properties: {
      reservationId: r.reservationId,
      provisioningState: "Succeeded",
      provisioningTime: r.timeCreated,
      timeCreated: r.timeCreated,
      platformFaultDomainCount: 1,
    },
  });

  /** Codes Azure reports through the async operation rather than the PUT's response. */
  const ASYNC_FAILURES = new Set([
    "AllocationFailed",
    "ZonalAllocationFailed",
    "OverconstrainedAllocationRequest",
    "OverconstrainedZonalAllocationRequest",
  ]);

  /**
   * Answers a long-running operation: as is when async operations are off; else with an
   * Azure-AsyncOperation URL whose status is Succeeded, or Failed with `error`.
   */
  const sendLro = (
    res: ServerResponse,
    status: number,
    body: unknown,
    provider: "Microsoft.Compute" | "Microsoft.ContainerService",
    error?: { code: string; message: string },
  ) => {
    if (!state.asyncOperations) return send(res, status, body);
    const id = randomUUID();
    state.operations.set(id, {
      status: error ? "Failed" : "Succeeded",
      ...(error ? { error } : {}),
      start: new Date().toISOString(),
    });
    const url = `${base}/subscriptions/${config.subscriptionId}/providers/${provider}/locations/${state.location}/operations/${id}?api-version=2024-01-01`;
    return send(res, status, body, { "azure-asyncoperation": url, location: url });
  };

  const poolView = () => ({
    id: state.pool.id,
    name: state.pool.name,
    type: "Microsoft.ContainerService/managedClusters/agentPools",
    properties: {
      count: state.pool.count,
      vmSize: state.pool.vmSize,
      mode: "User",
      osType: "Linux",
      type: "VirtualMachineScaleSets",
      provisioningState: "Succeeded",
      powerState: { code: "Running" },
      capacityReservationGroupID: state.pool.capacityReservationGroupId,
    },
  });

  const checkScope = (p: Record<string, string>) => {
    if (p.sub && lc(p.sub) !== lc(config.subscriptionId)) {
      throw new HttpError(404, "SubscriptionNotFound", `The subscription '${p.sub}' could not be found.`);
    }
    if (p.rg && lc(p.rg) !== lc(config.resourceGroup)) {
      throw new HttpError(404, "ResourceGroupNotFound", `Resource group '${p.rg}' could not be found.`);
    }
  };

  const group = (name: string) => {
    const g = state.groups.get(lc(name));
    if (!g) {
      throw new HttpError(
        404,
        "ResourceNotFound",
        armMessages.notFound("Microsoft.Compute/capacityReservationGroups", name, config.resourceGroup),
      );
    }
    return g;
  };

  const token = async (
    r: Route,
    req: IncomingMessage,
    res: ServerResponse,
    injected?: ArmInjectedErrorSpec,
  ) => {
    const tenant = r.params.tenant!;
    if (r.params.discovery) {
      const t = `${base}/${tenant}`;
      send(res, 200, {
        token_endpoint: `${t}/oauth2/v2.0/token`,
        authorization_endpoint: `${t}/oauth2/v2.0/authorize`,
        end_session_endpoint: `${t}/oauth2/v2.0/logout`,
        issuer: `${t}/v2.0`,
        jwks_uri: `${t}/discovery/v2.0/keys`,
        token_endpoint_auth_methods_supported: [
          "client_secret_post",
          "private_key_jwt",
          "client_secret_basic",
        ],
        response_types_supported: ["code", "id_token", "code id_token", "id_token token"],
        scopes_supported: ["openid", "profile", "email", "offline_access"],
        tenant_region_scope: "NA",
      });
      return;
    }
    const form = new URLSearchParams(await readBody(req));
    if (injected) {
      send(
        res,
        injected.status ?? 400,
        { error: injected.code, error_description: injected.message ?? injected.code },
        injected.retryAfterSeconds !== undefined ? { "retry-after": String(injected.retryAfterSeconds) } : {},
      );
      return;
    }
    const auth = config.auth;
    const bad = (desc: string) => send(res, 401, { error: "invalid_client", error_description: desc });
    if (form.get("grant_type") !== "client_credentials") {
      send(res, 400, {
        error: "unsupported_grant_type",
        error_description: "AADSTS70003: only client_credentials",
      });
      return;
    }
    if (auth?.tenantId && auth.tenantId !== tenant) {
      send(res, 400, {
        error: "invalid_request",
        error_description: `AADSTS90002: Tenant '${tenant}' not found.`,
      });
      return;
    }
    if (auth?.clientId && form.get("client_id") !== auth.clientId) {
      bad(`AADSTS700016: Application with identifier '${form.get("client_id")}' was not found.`);
      return;
    }
    if (auth?.clientSecret && form.get("client_secret") !== auth.clientSecret) {
      bad(
        "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
      );
      return;
    }
    const accessToken = randomBytes(24).toString("base64url");
    state.tokens.set(accessToken, Date.now() + 3_600_000);
    saver.dirty();
    send(res, 200, {
      token_type: "Bearer",
      expires_in: 3599,
      ext_expires_in: 3599,
      access_token: accessToken,
    });
  };

  const authorize = (req: IncomingMessage) => {
    const h = req.headers.authorization ?? "";
    const m = /^Bearer (.+)$/.exec(h);
    const exp = m ? state.tokens.get(m[1]!) : undefined;
    if (!m) {
      throw new HttpError(
        401,
        "AuthenticationFailed",
        "Authentication failed. The 'Authorization' header is missing.",
      );
    }
    if (exp === undefined || exp < Date.now()) {
      throw new HttpError(401, "InvalidAuthenticationToken", "The access token is invalid or expired.");
    }
  };

  /** What a PUT that will fail asynchronously answers at first. */
  const pendingReservation = (p: Record<string, string>, body: Json) => ({
    id: `${state.groupId(p.group!)}/capacityReservations/${p.name}`,
    name: p.name,
    type: "Microsoft.Compute/capacityReservationGroups/capacityReservations",
    location: body.location,
    sku: body.sku,
    properties: { provisioningState: "Creating" },
  });

  const putReservation = (p: Record<string, string>, body: Json): [number, unknown] => {
    const g = group(p.group!);
    const sku = asObject(body.sku);
    const skuName = typeof sku.name === "string" ? sku.name : undefined;
    const capacity = typeof sku.capacity === "number" ? sku.capacity : undefined;
    const location = typeof body.location === "string" ? body.location : undefined;
    if (!skuName || capacity === undefined || !Number.isInteger(capacity) || capacity < 0) {
      throw new HttpError(
        400,
        "InvalidParameter",
        "Required parameter 'sku' (name and integer capacity) is missing or invalid.",
      );
    }
    if (!location) throw new HttpError(400, "InvalidParameter", "Required parameter 'location' is missing.");
    if (lc(location) !== lc(g.location)) {
      throw new HttpError(
        400,
        "InvalidParameter",
        `The capacity reservation location '${location}' must match its group's location '${g.location}'.`,
      );
    }
    const cap = state.capacity.get(state.capKey(location, skuName));
    const info = skuInfo(config, skuName);
    if (!cap || !info)
      throw new HttpError(409, "SkuNotAvailable", armMessages.skuNotAvailable(skuName, location));
    const key = `${lc(g.name)}/${lc(p.name!)}`;
    const existing = state.reservations.get(key);
    const previous = existing && lc(existing.sku) === lc(skuName) ? existing.capacity : 0;
    const delta = capacity - previous;
    if (delta > 0) {
      for (const family of [info.family, "cores"]) {
        const q = config.quota.find((x) => lc(x.region) === lc(location) && lc(x.family) === lc(family));
        if (!q) continue;
        const usage = state.quotaUsage(location, family);
        if (usage + delta * info.vcpus > q.limit) {
          throw new HttpError(
            409,
            "OperationNotAllowed",
            armMessages.quotaExceeded(
              family === "cores" ? "Total Regional" : family,
              location,
              q.limit,
              usage,
              delta * info.vcpus,
            ),
          );
        }
      }
      if (cap.available < delta)
        throw new HttpError(409, "AllocationFailed", armMessages.allocationFailed(skuName, location));
    }
    if (existing && lc(existing.sku) !== lc(skuName)) {
      const old = state.capacity.get(state.capKey(existing.location, existing.sku));
      if (old) old.available += existing.capacity;
    }
    cap.available -= delta;
    const now = new Date().toISOString();
    const r: ArmReservation = {
      id: `${g.id}/capacityReservations/${p.name}`,
      name: p.name!,
      group: g.name,
      location: g.location,
      sku: skuName,
      capacity,
      tags: Object.fromEntries(
        Object.entries(asObject(body.tags)).filter((e): e is [string, string] => typeof e[1] === "string"),
      ),
      reservationId: existing?.reservationId ?? randomUUID(),
      timeCreated: existing?.timeCreated ?? now,
    };
    state.reservations.set(key, r);
    events.emit("reservation", { action: existing ? "updated" : "created", reservation: { ...r } });
    return [existing ? 200 : 201, reservationView(r)];
  };

  const handle = async (r: Route, req: IncomingMessage, res: ServerResponse, url: URL) => {
    const p = r.params;
    if (!url.searchParams.get("api-version")) {
      throw new HttpError(
        400,
        "MissingApiVersionParameter",
        "The api-version query parameter (?api-version=) is required for all requests.",
      );
    }
    authorize(req);
    checkScope(p);
    const body = req.method === "PUT" ? asObject(JSON.parse((await readBody(req)) || "{}")) : {};
    switch (r.op) {
      case "resourceSkus.list": {
        const filter = url.searchParams.get("$filter") ?? "";
        const m = /location\s+eq\s+'([^']+)'/i.exec(filter);
        const value = [...state.capacity.values()]
          .filter((c) => !m || lc(c.region) === lc(m[1]!))
          .map((c) => {
            const info = skuInfo(config, c.sku)!;
            return {
              resourceType: "virtualMachines",
              name: info.name,
              tier: "Standard",
              size: info.name.replace(/^Standard_/, ""),
              family: info.family,
              locations: [c.region],
              locationInfo: [{ location: c.region, zones: [] }],
              capabilities: [
                { name: "vCPUs", value: String(info.vcpus) },
                { name: "GPUs", value: String(info.gpus ?? 0) },
              ],
              restrictions: [],
            };
          });
        return send(res, 200, { value });
      }
      case "usage.list": {
        const value = config.quota
          .filter((q) => lc(q.region) === lc(p.location!))
          .map((q) => ({
            unit: "Count",
            currentValue: state.quotaUsage(q.region, q.family),
            limit: q.limit,
            name: {
              value: q.family,
              localizedValue: lc(q.family) === "cores" ? "Total Regional vCPUs" : `${q.family} vCPUs`,
            },
          }));
        return send(res, 200, { value });
      }
      case "capacityReservationGroups.get": {
        const g = group(p.group!);
        return send(res, 200, {
          id: g.id,
          name: g.name,
          location: g.location,
          type: "Microsoft.Compute/capacityReservationGroups",
          properties: {},
        });
      }
      case "capacityReservationGroups.createOrUpdate": {
        const location = typeof body.location === "string" ? body.location : state.location;
        const existed = state.groups.has(lc(p.group!));
        const g = { name: p.group!, location, id: state.groupId(p.group!) };
        state.groups.set(lc(p.group!), g);
        return send(res, existed ? 200 : 201, {
          id: g.id,
          name: g.name,
          location,
          type: "Microsoft.Compute/capacityReservationGroups",
          properties: {},
        });
      }
      case "capacityReservations.list": {
        const g = group(p.group!);
        const value = [...state.reservations.values()]
          .filter((x) => lc(x.group) === lc(g.name))
          .map(reservationView);
        return send(res, 200, { value });
      }
      case "capacityReservations.get": {
        const g = group(p.group!);
        const x = state.reservations.get(`${lc(g.name)}/${lc(p.name!)}`);
        if (!x) {
          throw new HttpError(
            404,
            "ResourceNotFound",
            armMessages.notFound(
              "Microsoft.Compute/capacityReservationGroups/capacityReservations",
              `${g.name}/${p.name}`,
              config.resourceGroup,
            ),
          );
        }
        return send(res, 200, reservationView(x));
      }
      case "capacityReservations.createOrUpdate": {
        try {
          const [status, view] = putReservation(p, body);
          return sendLro(res, status, view, "Microsoft.Compute");
        } catch (e) {
          if (!(state.asyncOperations && e instanceof HttpError && ASYNC_FAILURES.has(e.code))) throw e;
          return sendLro(res, 201, pendingReservation(p, body), "Microsoft.Compute", {
            code: e.code,
            message: e.message,
          });
        }
      }
      case "capacityReservations.delete": {
        const g = group(p.group!);
        const key = `${lc(g.name)}/${lc(p.name!)}`;
        const x = state.reservations.get(key);
        if (!x) return send(res, 204);
        state.reservations.delete(key);
        const cap = state.capacity.get(state.capKey(x.location, x.sku));
        if (cap) cap.available += x.capacity;
        events.emit("reservation", { action: "deleted", reservation: { ...x } });
        return state.asyncOperations ? sendLro(res, 202, undefined, "Microsoft.Compute") : send(res, 200);
      }
      case "agentPools.get":
      case "agentPools.createOrUpdate": {
        if (lc(p.cluster!) !== lc(config.aksCluster) || lc(p.pool!) !== lc(config.nodePool)) {
          const type =
            lc(p.cluster!) !== lc(config.aksCluster)
              ? "Microsoft.ContainerService/managedClusters"
              : "Microsoft.ContainerService/managedClusters/agentPools";
          throw new HttpError(
            404,
            "ResourceNotFound",
            armMessages.notFound(type, p.pool!, config.resourceGroup),
          );
        }
        if (r.op === "agentPools.createOrUpdate") {
          const props = asObject(body.properties);
          const count = props.count;
          if (typeof count !== "number" || !Number.isInteger(count) || count < 0 || count > 1000) {
            throw new HttpError(
              400,
              "InvalidParameter",
              "The value of parameter agentPoolProfile.count is invalid: it must be an integer from 0 to 1000.",
            );
          }
          if (typeof props.vmSize === "string" && lc(props.vmSize) !== lc(state.pool.vmSize)) {
            throw new HttpError(400, "OperationNotAllowed", "Changing property 'vmSize' is not allowed.");
          }
          const previous = state.pool.count;
          state.pool.count = count;
          if (previous !== count) {
            events.emit("agentPoolScaled", {
              cluster: state.pool.cluster,
              pool: state.pool.name,
              vmSize: state.pool.vmSize,
              count,
              previous,
            });
          }
        }
        return r.op === "agentPools.createOrUpdate"
          ? sendLro(res, 200, poolView(), "Microsoft.ContainerService")
          : send(res, 200, poolView());
      }
      case "operations.get": {
        const o = state.operations.get(p.id!);
        if (!o) throw new HttpError(404, "ResourceNotFound", `The operation '${p.id}' was not found.`);
        return send(res, 200, {
          id: url.pathname,
          name: p.id,
          status: o.status,
          startTime: o.start,
          endTime: o.start,
          ...(o.error ? { error: o.error } : {}),
        });
      }
      default:
        throw new HttpError(404, "InvalidResourceType", "The resource type could not be found.");
    }
  };

  const server: Server = createServer({ cert, key }, (req, res) => {
    void (async () => {
      const url = new URL(req.url ?? "/", base);
      const r = route(req.method ?? "GET", url.pathname);
      if (state.latencyMs > 0) await sleep(state.latencyMs);
      if (!r) {
        // Discovery MSAL may try when instance discovery is left on: answer "unknown cloud".
        send(res, 404, armErrorBody("InvalidResourceType", `No route for ${req.method} ${url.pathname}`));
        return;
      }
      state.callCounts.set(r.op, (state.callCounts.get(r.op) ?? 0) + 1);
      const injected = r.params.discovery ? undefined : state.takeError(r.op);
      try {
        if (r.op === "token") {
          await token(r, req, res, injected);
          return;
        }
        const lroOps: Partial<Record<ArmOperation, "Microsoft.Compute" | "Microsoft.ContainerService">> = {
          "capacityReservations.createOrUpdate": "Microsoft.Compute",
          "capacityReservations.delete": "Microsoft.Compute",
          "agentPools.createOrUpdate": "Microsoft.ContainerService",
        };
        const lroProvider = lroOps[r.op];
        if (injected?.via === "operation" && state.asyncOperations && lroProvider) {
          // Accepted now, failed later: nothing changes, the operation reports the error.
          const body = req.method === "PUT" ? asObject(JSON.parse((await readBody(req)) || "{}")) : {};
          const first =
            r.op === "capacityReservations.createOrUpdate" ? pendingReservation(r.params, body) : undefined;
          sendLro(res, first ? 201 : 202, first, lroProvider, {
            code: injected.code,
            message: injected.message ?? `${injected.code} (injected)`,
          });
          return;
        }
        if (injected) {
          const status = injected.status ?? defaultStatus(injected.code);
          const retryAfter = injected.retryAfterSeconds ?? (status === 429 || status === 503 ? 0 : undefined);
          throw new HttpError(
            status,
            injected.code,
            injected.message ?? (status === 429 ? armMessages.throttled() : `${injected.code} (injected)`),
            retryAfter !== undefined ? { "retry-after": String(retryAfter) } : {},
            injected.details,
          );
        }
        await handle(r, req, res, url);
        saver.dirty();
      } catch (e) {
        if (res.headersSent) return;
        if (e instanceof HttpError) {
          send(res, e.status, armErrorBody(e.code, e.message, e.details), e.headers);
        } else if (e instanceof SyntaxError) {
          send(
            res,
            400,
            armErrorBody("InvalidRequestContent", `The request content was invalid: ${e.message}`),
          );
        } else {
          send(res, 500, armErrorBody("InternalServerError", (e as Error).message));
        }
      }
    })();
  });
  const listen = (port: number) =>
    new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
  try {
    await listen(options.port ?? 0);
  } catch (e) {
    // The port a previous run used is taken: any free one (clients learn the new URL).
    if ((e as NodeJS.ErrnoException).code !== "EADDRINUSE" || !options.port) throw e;
    await listen(0);
  }
  base = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    url: base,
    ca: cert,
    config,
    events,
    close: () =>
      new Promise<void>((resolve) => {
        saver.flush();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
    setCapacity(region, sku, available) {
      saver.dirty();
      if (!skuInfo(config, sku)) throw new Error(`${sku} is not in the SKU catalogue`);
      const k = state.capKey(region, sku);
      const c = state.capacity.get(k);
      if (c) c.available = available;
      else state.capacity.set(k, { region, sku, available });
    },
    removeSku(region, sku) {
      saver.dirty();
      state.capacity.delete(state.capKey(region, sku));
    },
    setQuota(region, family, limit, used) {
      saver.dirty();
      const q = config.quota.find((x) => lc(x.region) === lc(region) && lc(x.family) === lc(family));
      if (q) {
        q.limit = limit;
        if (used !== undefined) q.used = used;
      } else config.quota.push({ region, family, limit, ...(used !== undefined ? { used } : {}) });
    },
    setAsyncOperations(on) {
      state.asyncOperations = on;
    },
    setLatency(latency) {
      state.latencyMs = typeof latency === "number" ? latency : parseDuration(latency);
    },
    injectError(spec) {
      const e = { ...spec };
      state.errors.push(e);
      return () => {
        const i = state.errors.indexOf(e);
        if (i >= 0) state.errors.splice(i, 1);
      };
    },
    clearErrors() {
      state.errors.length = 0;
    },
    available: (region, sku) => state.capacity.get(state.capKey(region, sku))?.available,
    reservations: () => [...state.reservations.values()].map((r) => ({ ...r, tags: { ...r.tags } })),
    reservation: (name) => {
      const r = [...state.reservations.values()].find((x) => lc(x.name) === lc(name));
      return r ? { ...r, tags: { ...r.tags } } : undefined;
    },
    agentPool: () => ({ ...state.pool }),
    quotaUsage: (region, family) => state.quotaUsage(region, family),
    calls: (operation) =>
      operation
        ? (state.callCounts.get(operation) ?? 0)
        : [...state.callCounts.values()].reduce((a, b) => a + b, 0),
  };
}
