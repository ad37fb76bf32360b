/**
 * The Azure responder's real SDK code (@azure/identity, @azure/arm-compute,
 * @azure/arm-containerservice) over HTTPS against the sandbox's ARM emulator.
 */
import { afterEach, beforeEach, describe, expect, test } from "@jest/globals";
import { AzureResponder, reservationName } from "../../../operator/clouds/azure/index.ts";
import { RetryableError } from "../../../operator/ports/errors.ts";
import type { ArmEmulator } from "../../../operator/sandbox/arm/index.ts";
import { AUTH, ctx, emulator, H100, offer, provider, responder } from "./fixtures.ts";

let emu: ArmEmulator;

beforeEach(async () => {
  emu = await emulator(2, 4);
});
afterEach(async () => {
  await emu.close();
});

describe("accepting", () => {
  test("reserves capacity, scales the GPU pool and accepts at the list price", async () => {
    const o = offer(1);
    const answer = await responder(emu).respond(o, provider(emu), ctx());
    expect(answer).toMatchObject({ outcome: "Accepted", acceptedPricePerHour: 55.84 });
    const r = emu.reservation(reservationName(o));
    expect(r).toMatchObject({ sku: H100, capacity: 1, location: "eastus" });
    expect(r?.tags).toMatchObject({
      "spillway-offer": `ml-team/${o.metadata.name}`,
      "spillway-run-uid": o.spec.run.uid,
    });
    expect(answer.reservation).toBe(r?.id);
    expect(emu.agentPool().count).toBe(1);
    expect(emu.available("eastus", H100)).toBe(1);
  });

  test("creates the capacity reservation group when it does not exist yet", async () => {
    const p = provider(emu, (x) => {
      x.spec.azure.capacityReservationGroup = "new-crg";
    });
    const answer = await responder(emu).respond(offer(1), p, ctx());
    expect(answer).toMatchObject({ outcome: "Accepted" });
    expect(emu.calls("capacityReservationGroups.createOrUpdate")).toBe(1);
    expect(emu.reservations()[0]?.group).toBe("new-crg");
  });

  test("matches a cheaper competing quote that is above the floor", async () => {
    // 8 GPUs: list $55.84/h, floor $32.80/h; the alternative quotes $36/h.
    const answer = await responder(emu).respond(offer(1, 36), provider(emu), ctx());
    expect(answer.outcome).toBe("Accepted");
    expect(answer.acceptedPricePerHour).toBe(36);
    expect(answer.message).toContain("matching oci-ashburn");
  });

  test("declines PriceNotMatched under the floor, before reserving anything", async () => {
    const answer = await responder(emu).respond(offer(1, 30), provider(emu), ctx());
    expect(answer).toMatchObject({ outcome: "Declined", reason: "PriceNotMatched" });
    expect(answer.message).toContain("$32.80/h");
    expect(emu.reservations()).toHaveLength(0);
    expect(emu.calls("capacityReservations.createOrUpdate")).toBe(0);
    expect(emu.agentPool().count).toBe(0);
  });

  test("answering the same offer twice finds its reservation and reserves nothing more", async () => {
    const r = responder(emu);
    const o = offer(1);
    const first = await r.respond(o, provider(emu), ctx());
    const second = await r.respond(o, provider(emu), ctx());
    expect(second).toEqual(first);
    expect(emu.reservations()).toHaveLength(1);
    expect(emu.calls("capacityReservations.createOrUpdate")).toBe(1);
    expect(emu.agentPool().count).toBe(1);
    expect(emu.available("eastus", H100)).toBe(1);
  });

  test("a new responder (operator restarted) finds the reservation too", async () => {
    const o = offer(2);
    await responder(emu).respond(o, provider(emu), ctx());
    const again = await responder(emu).respond(o, provider(emu), ctx());
    expect(again.outcome).toBe("Accepted");
    expect(emu.calls("capacityReservations.createOrUpdate")).toBe(1);
    expect(emu.agentPool().count).toBe(2);
  });

  test("concurrent offers each get a reservation and the pool holds them all", async () => {
    await emu.close();
    emu = await emulator(6, 6);
    const r = responder(emu);
    const answers = await Promise.all([1, 2, 3].map(() => r.respond(offer(2), provider(emu), ctx())));
    expect(answers.map((a) => a.outcome)).toEqual(["Accepted", "Accepted", "Accepted"]);
    expect(emu.reservations()).toHaveLength(3);
    expect(emu.agentPool().count).toBe(6);
    expect(emu.available("eastus", H100)).toBe(0);
  });
});

describe("declining", () => {
  test("NoCapacity when the region has fewer free nodes than asked", async () => {
    const answer = await responder(emu).respond(offer(3), provider(emu), ctx());
    expect(answer).toMatchObject({ outcome: "Declined", reason: "NoCapacity" });
    expect(answer.message).toContain("AllocationFailed");
    expect(emu.reservations()).toHaveLength(0);
    expect(emu.agentPool().count).toBe(0);
  });

  test("NoCapacity when the capacity goes while the demo runs", async () => {
    emu.setCapacity("eastus", H100, 0);
    const answer = await responder(emu).respond(offer(1), provider(emu), ctx());
    expect(answer.reason).toBe("NoCapacity");
  });

  test("NoCapacity beyond the provider's maxNodes", async () => {
    const p = provider(emu, (x) => {
      x.spec.capacity.gpus[0].maxNodes = 1;
    });
    const r = responder(emu);
    expect((await r.respond(offer(1), p, ctx())).outcome).toBe("Accepted");
    const second = await r.respond(offer(1), p, ctx());
    expect(second).toMatchObject({ outcome: "Declined", reason: "NoCapacity" });
    expect(second.message).toContain("at most 1");
  });

  test("QuotaExceeded when the family's free vCPUs do not cover the request", async () => {
    emu.setQuota("eastus", "standardNDSH100v5Family", 192, 96);
    const answer = await responder(emu).respond(offer(2), provider(emu), ctx());
    expect(answer).toMatchObject({ outcome: "Declined", reason: "QuotaExceeded" });
    expect(answer.message).toContain("96 of 192 vCPUs used");
    expect(emu.reservations()).toHaveLength(0);
  });

  test("SkuUnavailable when the region does not offer the SKU", async () => {
    emu.removeSku("eastus", H100);
    const answer = await responder(emu).respond(offer(1), provider(emu), ctx());
    expect(answer).toMatchObject({ outcome: "Declined", reason: "SkuUnavailable" });
    expect(answer.message).toContain(H100);
  });

  test("RegionNotAllowed for an offer in another region than the provider's", async () => {
    const o = offer(1);
    o.spec.request.region = "westeurope";
    const answer = await responder(emu).respond(o, provider(emu), ctx());
    expect(answer).toMatchObject({ outcome: "Declined", reason: "RegionNotAllowed" });
  });

  test("a wrong client secret is a ProviderError whose message and logs never show a secret", async () => {
    const logs: string[] = [];
    const wrong = { ...AUTH, clientSecret: "definitely-wrong-secret-77" };
    const answer = await responder(emu, logs).respond(offer(1), provider(emu), { credentials: wrong });
    expect(answer).toMatchObject({ outcome: "Declined", reason: "ProviderError" });
    expect(answer.message).toContain("invalid_client");
    // winston writes to its stream asynchronously: wait for the line before reading them all.
    for (let i = 0; i < 200 && !logs.some((l) => l.includes('"reason":"ProviderError"')); i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    for (const text of [answer.message, ...logs]) {
      expect(text).not.toContain(wrong.clientSecret);
      expect(text).not.toContain(AUTH.clientSecret);
    }
    expect(logs.some((l) => l.includes('"reason":"ProviderError"'))).toBe(true);
  });

  test("missing credentials are a ProviderError naming the missing keys", async () => {
    const answer = await responder(emu).respond(offer(1), provider(emu), {
      credentials: { tenantId: "t", clientId: "c" },
    });
    expect(answer).toMatchObject({ outcome: "Declined", reason: "ProviderError" });
    expect(answer.message).toContain("clientSecret");
  });
});

describe("transient errors", () => {
  test("throttling (429 with Retry-After) throws RetryableError, and the retry is accepted", async () => {
    emu.injectError({
      operation: "capacityReservations.createOrUpdate",
      code: "OperationNotAllowed",
      status: 429,
      message:
        "The server rejected the request because too many requests have been received for this subscription.",
      details: [{ code: "TooManyRequests" }],
      retryAfterSeconds: 7,
      times: 1,
    });
    const r = responder(emu);
    const o = offer(1);
    const err = await r.respond(o, provider(emu), ctx()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RetryableError);
    expect((err as RetryableError).retryAfterMs).toBe(7000);
    expect(emu.reservations()).toHaveLength(0);
    expect((await r.respond(o, provider(emu), ctx())).outcome).toBe("Accepted");
  });

  test("a 5xx while scaling the pool throws RetryableError; the retry finishes the job", async () => {
    emu.injectError({ operation: "agentPools.createOrUpdate", code: "InternalServerError", times: 1 });
    const r = responder(emu);
    const o = offer(1);
    await expect(r.respond(o, provider(emu), ctx())).rejects.toBeInstanceOf(RetryableError);
    expect(emu.reservations()).toHaveLength(1);
    expect(emu.agentPool().count).toBe(0);
    expect((await r.respond(o, provider(emu), ctx())).outcome).toBe("Accepted");
    expect(emu.agentPool().count).toBe(1);
    expect(emu.reservations()).toHaveLength(1);
  });

  test("a retry that ends in a decline removes the reservation the first try made", async () => {
    emu.injectError({ operation: "agentPools.createOrUpdate", code: "ServiceUnavailable", times: 1 });
    const r = responder(emu);
    const o = offer(1);
    await expect(r.respond(o, provider(emu), ctx())).rejects.toBeInstanceOf(RetryableError);
    expect(emu.reservations()).toHaveLength(1);
    emu.injectError({ operation: "agentPools.createOrUpdate", code: "ZonalAllocationFailed", times: 1 });
    const answer = await r.respond(o, provider(emu), ctx());
    expect(answer).toMatchObject({ outcome: "Declined", reason: "NoCapacity" });
    expect(emu.reservations()).toHaveLength(0);
    expect(emu.available("eastus", H100)).toBe(2);
  });

  test("an unreachable ARM endpoint throws RetryableError", async () => {
    const gone = await emulator();
    await gone.close();
    const p = provider(emu, (x) => {
      x.spec.azure.armEndpoint = gone.url;
    });
    await expect(responder(emu).respond(offer(1), p, ctx())).rejects.toBeInstanceOf(RetryableError);
  });

  test("an unreachable Entra ID authority throws RetryableError", async () => {
    const gone = await emulator();
    await gone.close();
    const r = new AzureResponder({ authorityHost: gone.url, ca: emu.ca });
    await expect(r.respond(offer(1), provider(emu), ctx())).rejects.toBeInstanceOf(RetryableError);
  });
});

describe("releasing", () => {
  test("deletes the reservation and shrinks the pool; a second release is a no-op", async () => {
    const r = responder(emu);
    const keep = offer(1);
    const done = offer(1);
    await r.respond(keep, provider(emu), ctx());
    await r.respond(done, provider(emu), ctx());
    expect(emu.agentPool().count).toBe(2);
    await r.release(done, provider(emu), ctx());
    expect(emu.reservation(reservationName(done))).toBeUndefined();
    expect(emu.reservation(reservationName(keep))).toBeDefined();
    expect(emu.agentPool().count).toBe(1);
    expect(emu.available("eastus", H100)).toBe(1);
    await r.release(done, provider(emu), ctx());
    expect(emu.agentPool().count).toBe(1);
  });

  test("releasing an offer that never reserved anything succeeds", async () => {
    await responder(emu).release(offer(1), provider(emu), ctx());
    expect(emu.calls("capacityReservations.delete")).toBe(1);
    expect(emu.reservations()).toHaveLength(0);
  });

  test("a throttled release throws RetryableError and leaves the reservation for the retry", async () => {
    const r = responder(emu);
    const o = offer(1);
    await r.respond(o, provider(emu), ctx());
    emu.injectError({ operation: "capacityReservations.delete", code: "TooManyRequests", times: 1 });
    await expect(r.release(o, provider(emu), ctx())).rejects.toBeInstanceOf(RetryableError);
    expect(emu.reservations()).toHaveLength(1);
    await r.release(o, provider(emu), ctx());
    expect(emu.reservations()).toHaveLength(0);
    expect(emu.agentPool().count).toBe(0);
  });
});

test("a collector lists Spillway's reservations with their offers and releases an orphan by name", async () => {
  const r = responder(emu);
  const kept = offer(1);
  const orphan = offer(1);
  await r.respond(kept, provider(emu), ctx());
  await r.respond(orphan, provider(emu), ctx());
  const listed = await r.managedReservations(provider(emu), ctx());
  expect(listed.map((x) => x.offer.name).sort()).toEqual([kept.metadata.name, orphan.metadata.name].sort());
  const found = listed.find((x) => x.offer.name === orphan.metadata.name)!;
  expect(found).toMatchObject({
    sku: H100,
    nodes: 1,
    offer: { namespace: "ml-team" },
    runUid: orphan.spec.run.uid,
  });
  await r.releaseReservation(found.name, provider(emu), ctx());
  expect(emu.reservations().map((x) => x.name)).toEqual([reservationName(kept)]);
  expect(emu.agentPool().count).toBe(1);
});

test("reservation names are valid Azure names and deterministic, also for long offer names", () => {
  const long = offer(1, undefined, `${"x".repeat(120)}-a1`);
  const name = reservationName(long);
  expect(name.length).toBeLessThanOrEqual(64);
  expect(name).toMatch(/^[A-Za-z0-9_.-]+$/);
  expect(reservationName(long)).toBe(name);
  expect(reservationName(offer(1, undefined, "run-a-a2"))).toMatch(/^sw-ml-team-run-a-a2-[0-9a-f]{8}$/);
  // Dashes cannot make two offers share a name.
  const a = offer(1, undefined, "team-x");
  const b = offer(1, undefined, "x");
  a.metadata.namespace = "ml";
  b.metadata.namespace = "ml-team";
  expect(reservationName(a)).not.toBe(reservationName(b));
});

describe("with Azure-style async operations (201/202 + Azure-AsyncOperation, polled)", () => {
  beforeEach(() => emu.setAsyncOperations(true));

  test("accepts and releases through polled operations", async () => {
    const r = responder(emu);
    const o = offer(2);
    expect((await r.respond(o, provider(emu), ctx())).outcome).toBe("Accepted");
    expect(emu.agentPool().count).toBe(2);
    await r.release(o, provider(emu), ctx());
    expect(emu.reservations()).toHaveLength(0);
    expect(emu.agentPool().count).toBe(0);
    // Reservation PUT, pool PUT ×2 and DELETE were each followed by a status poll.
    expect(emu.calls("operations.get")).toBeGreaterThanOrEqual(4);
  });

  test("an allocation failure reported by the operation is NoCapacity", async () => {
    const answer = await responder(emu).respond(offer(3), provider(emu), ctx());
    expect(answer).toMatchObject({ outcome: "Declined", reason: "NoCapacity" });
    expect(answer.message).toContain("AllocationFailed");
    expect(emu.calls("operations.get")).toBe(1);
    expect(emu.reservations()).toHaveLength(0);
  });
});
