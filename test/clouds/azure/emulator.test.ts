/**
 * The sandbox's ARM emulator on its own (raw HTTPS), and the default demo scenario's Azure
 * story through the real responder.
 */
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, test } from "@jest/globals";
import { RetryableError } from "../../../operator/ports/errors.ts";
import {
  ArmConfigError,
  type ArmEmulator,
  parseArmConfig,
  readArmCa,
  selfSignedCertificate,
  startArmEmulator,
} from "../../../operator/sandbox/arm/index.ts";
import { DEFAULT_SCENARIO } from "../../../operator/sandbox/scenario.ts";
import { AUTH, ctx, emulator, H100, offer, provider, responder } from "./fixtures.ts";

let emu: ArmEmulator | undefined;
afterEach(async () => {
  await emu?.close();
  emu = undefined;
});

function call(
  e: ArmEmulator,
  method: string,
  path: string,
  opts: { token?: string; body?: string } = {},
): Promise<{ status: number; headers: Record<string, unknown>; json: any }> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${e.url}${path}`,
      {
        method,
        ca: e.ca,
        headers: {
          ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
          ...(opts.body ? { "content-type": "application/x-www-form-urlencoded" } : {}),
        },
      },
      (res) => {
        let text = "";
        res.on("data", (c) => {
          text += c;
        });
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            json: text ? JSON.parse(text) : undefined,
          }),
        );
      },
    );
    req.on("error", reject);
    req.end(opts.body);
  });
}

async function token(e: ArmEmulator): Promise<string> {
  const body = new URLSearchParams({
    grant_type: "client_credentials",
    client_id: AUTH.clientId,
    client_secret: AUTH.clientSecret,
    scope: "https://management.azure.com/.default",
  }).toString();
  const res = await call(e, "POST", `/${AUTH.tenantId}/oauth2/v2.0/token`, { body });
  expect(res.status).toBe(200);
  return res.json.access_token;
}

const SUB = "/subscriptions/00000000-0000-0000-0000-000000000000";
const POOL = `${SUB}/resourceGroups/spillway-rg/providers/Microsoft.ContainerService/managedClusters/spillway-aks/agentPools/gpuh100?api-version=2025-01-01`;

describe("configuration", () => {
  test("the default scenario's arm section is valid", () => {
    const c = parseArmConfig(DEFAULT_SCENARIO.clouds.azure.arm);
    expect(c.capacity).toEqual([{ region: "eastus", sku: H100, available: 1 }]);
    expect(c.latency).toBe("200ms");
  });

  test("a bad field is a one-line error naming it", () => {
    expect(() => parseArmConfig({ capacity: [{ region: "eastus", sku: H100, available: -1 }] })).toThrow(
      /clouds\.azure\.arm\/capacity\/0\/available: /,
    );
    expect(() => parseArmConfig({ latency: "soon" })).toThrow(ArmConfigError);
  });

  test("a SKU outside the catalogue must be described", () => {
    expect(() =>
      parseArmConfig({ capacity: [{ region: "eastus", sku: "Standard_X9", available: 1 }] }),
    ).toThrow(/Standard_X9 is not in the SKU catalogue/);
    const c = parseArmConfig({
      capacity: [{ region: "eastus", sku: "Standard_X9", available: 1 }],
      skus: [{ name: "Standard_X9", family: "standardX9Family", vcpus: 8 }],
    });
    expect(c.skus).toHaveLength(1);
  });
});

describe("the HTTPS endpoints", () => {
  test("its certificate is for 127.0.0.1 and is its own trust anchor", async () => {
    emu = await emulator();
    const cert = new X509Certificate(emu.ca);
    expect(cert.checkIP("127.0.0.1")).toBe("127.0.0.1");
    expect(cert.ca).toBe(true);
    expect(cert.verify(cert.publicKey)).toBe(true);
  });

  test("every fresh certificate is well-formed DER (random serials included)", () => {
    for (let i = 0; i < 200; i++) {
      const { cert } = selfSignedCertificate();
      expect(new X509Certificate(cert).serialNumber).toMatch(/^[4-7][0-9A-F]{31}$/);
    }
  });

  test("ARM calls need a token it issued and an api-version", async () => {
    emu = await emulator();
    const anonymous = await call(emu, "GET", POOL);
    expect(anonymous.status).toBe(401);
    expect(anonymous.json.error.code).toBe("AuthenticationFailed");
    const forged = await call(emu, "GET", POOL, { token: "forged" });
    expect(forged.json.error.code).toBe("InvalidAuthenticationToken");
    const t = await token(emu);
    expect((await call(emu, "GET", POOL.replace(/\?.*/, ""), { token: t })).json.error.code).toBe(
      "MissingApiVersionParameter",
    );
    const ok = await call(emu, "GET", POOL, { token: t });
    expect(ok.status).toBe(200);
    expect(ok.json.properties).toMatchObject({ count: 0, vmSize: H100, provisioningState: "Succeeded" });
  });

  test("the token endpoint refuses a wrong secret with Entra's error shape", async () => {
    emu = await emulator();
    const body = new URLSearchParams({
      grant_type: "client_credentials",
      client_id: AUTH.clientId,
      client_secret: "nope",
    }).toString();
    const res = await call(emu, "POST", `/${AUTH.tenantId}/oauth2/v2.0/token`, { body });
    expect(res.status).toBe(401);
    expect(res.json.error).toBe("invalid_client");
    expect(res.json.error_description).toMatch(/^AADSTS7000215/);
  });

  test("scenario errors fail the named call `times` times with Azure's body and status, then stop", async () => {
    emu = await emulator(1, 1, {
      errors: [{ operation: "agentPools.get", code: "TooManyRequests", times: 2, retryAfterSeconds: 3 }],
    });
    const t = await token(emu);
    for (let i = 0; i < 2; i++) {
      const res = await call(emu, "GET", POOL, { token: t });
      expect(res.status).toBe(429);
      expect(res.headers["retry-after"]).toBe("3");
      expect(Object.keys(res.json)).toEqual(["error"]);
      expect(res.json.error.code).toBe("TooManyRequests");
      expect(typeof res.json.error.message).toBe("string");
    }
    expect((await call(emu, "GET", POOL, { token: t })).status).toBe(200);
  });
});

describe("state for the sandbox", () => {
  test("restarted on its state directory and port, it is the same Azure to a running responder", async () => {
    const dir = mkdtempSync(join(tmpdir(), "arm-"));
    try {
      const config = {
        capacity: [{ region: "eastus", sku: H100, available: 2 }],
        quota: [{ region: "eastus", family: "standardNDSH100v5Family", limit: 384 }],
      };
      emu = await startArmEmulator(config, { stateDir: dir, region: "eastus" });
      const port = new URL(emu.url).port;
      const r = responder(emu);
      const o = offer(1);
      expect((await r.respond(o, provider(emu), ctx())).outcome).toBe("Accepted");
      const ca = emu.ca;
      await emu.close();

      emu = await startArmEmulator(config, { stateDir: dir, port: Number(port), region: "eastus" });
      expect(emu.ca).toBe(ca);
      expect(readArmCa(dir)).toBe(ca);
      expect(emu.agentPool().count).toBe(1);
      expect(emu.available("eastus", H100)).toBe(1);
      // Same responder, same cached token: the reservation is found, nothing is reserved twice.
      // A kept-alive connection to the old process may fail once, retryably, as the controller
      // would see it.
      const again = await r.respond(o, provider(emu), ctx()).catch((e: unknown) => {
        expect(e).toBeInstanceOf(RetryableError);
        return r.respond(o, provider(emu!), ctx());
      });
      expect(again.outcome).toBe("Accepted");
      expect(emu.calls("token")).toBe(0);
      expect(emu.calls("capacityReservations.createOrUpdate")).toBe(0);
      expect(emu.reservations()).toHaveLength(1);
    } finally {
      await emu?.close();
      emu = undefined;
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("reports pool scaling as events the sandbox turns into nodes", async () => {
    emu = await emulator(2, 2);
    const seen: Array<{ count: number; previous: number }> = [];
    emu.events.on("agentPoolScaled", (e) => seen.push({ count: e.count, previous: e.previous }));
    const r = responder(emu);
    const o = offer(2);
    await r.respond(o, provider(emu), ctx());
    await r.release(o, provider(emu), ctx());
    expect(seen).toEqual([
      { count: 2, previous: 0 },
      { count: 0, previous: 2 },
    ]);
    expect(emu.quotaUsage("eastus", "standardNDSH100v5Family")).toBe(0);
  });

  test("the default demo story: run A declined NoCapacity, run B accepted, the serving run finds Azure full", async () => {
    emu = await startArmEmulator({ ...DEFAULT_SCENARIO.clouds.azure.arm, latency: "0s", errors: [] });
    const r = responder(emu);
    const p = provider(emu);
    const creds = { credentials: { tenantId: "t", clientId: "c", clientSecret: "any-secret" } };
    expect((await r.respond(offer(2, 72), p, creds)).reason).toBe("NoCapacity");
    expect((await r.respond(offer(1, 36), p, creds)).outcome).toBe("Accepted");
    expect((await r.respond(offer(1), p, creds)).reason).toBe("NoCapacity");
    expect(emu.agentPool().count).toBe(1);
  });
});
