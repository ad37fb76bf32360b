/**
 * What the ARM emulator keeps in its state directory, so a sandbox restarted on the same
 * directory is the same Azure: the TLS certificate (clients keep trusting it; `ca.pem` is what
 * an operator started separately reads), and the state — free nodes, quota, groups,
 * reservations, the pool's size and the tokens it issued (an operator's cached token stays
 * valid). Writes are coalesced and atomic (temp file + rename); a crash loses at most the
 * last few milliseconds, as a crashed cloud API would not, which is fine for a sandbox.
 */
import { X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ArmCapacityEntry, ArmQuotaEntry } from "./config.ts";
import { type SelfSignedCertificate, selfSignedCertificate } from "./tls.ts";

export const ARM_CA_FILE = "ca.pem";
const KEY_FILE = "tls-key.pem";
const STATE_FILE = "state.json";

export interface ArmReservationRecord {
  id: string;
  name: string;
  group: string;
  location: string;
  sku: string;
  capacity: number;
  tags: Record<string, string>;
  reservationId: string;
  timeCreated: string;
}

export interface ArmSnapshot {
  version: 1;
  capacity: ArmCapacityEntry[];
  quota: ArmQuotaEntry[];
  groups: Array<{ name: string; location: string; id: string }>;
  reservations: Array<[string, ArmReservationRecord]>;
  poolCount: number;
  tokens: Array<[string, number]>;
}

function writeAtomic(path: string, text: string, mode = 0o644): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode });
  renameSync(tmp, path);
}

/** The certificate kept in `dir` while it is valid for another day, else a new one. */
export function loadOrCreateCertificate(dir: string | undefined): SelfSignedCertificate {
  if (!dir) return selfSignedCertificate();
  mkdirSync(dir, { recursive: true });
  const certPath = join(dir, ARM_CA_FILE);
  const keyPath = join(dir, KEY_FILE);
  if (existsSync(certPath) && existsSync(keyPath)) {
    try {
      const cert = readFileSync(certPath, "utf8");
      const validTo = Date.parse(new X509Certificate(cert).validTo);
      if (validTo - Date.now() > 86_400_000) return { cert, key: readFileSync(keyPath, "utf8") };
    } catch {
      // Unreadable or corrupt: replaced below.
    }
  }
  const made = selfSignedCertificate();
  writeAtomic(keyPath, made.key, 0o600);
  writeAtomic(certPath, made.cert);
  return made;
}

/** The emulator's CA certificate in a state directory, for an operator started on its own. */
export function readArmCa(dir: string): string {
  return readFileSync(join(dir, ARM_CA_FILE), "utf8");
}

export function loadSnapshot(dir: string | undefined): ArmSnapshot | undefined {
  if (!dir) return undefined;
  const path = join(dir, STATE_FILE);
  if (!existsSync(path)) return undefined;
  const parsed = JSON.parse(readFileSync(path, "utf8")) as ArmSnapshot;
  return parsed.version === 1 ? parsed : undefined;
}

/** A writer that saves at most once per tick burst; `flush` writes now (on close). */
export function snapshotWriter(dir: string | undefined, take: () => ArmSnapshot) {
  let pending: NodeJS.Timeout | undefined;
  const write = () => {
    pending = undefined;
    if (dir) writeAtomic(join(dir, STATE_FILE), JSON.stringify(take()));
  };
  return {
    dirty(): void {
      if (!dir || pending) return;
      pending = setTimeout(write, 20);
      pending.unref();
    },
    flush(): void {
      if (!dir) return;
      if (pending) clearTimeout(pending);
      write();
    },
  };
}
