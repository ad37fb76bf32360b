/**
 * A throwaway self-signed TLS certificate for the ARM emulator, made with node:crypto alone.
 *
 * Why TLS at all: the Azure SDK refuses to send a bearer token over plain HTTP
 * (core-rest-pipeline's bearerTokenAuthenticationPolicy throws on `http://`), and MSAL refuses
 * an `http://` authority (`authority_uri_insecure`). So the emulator serves HTTPS, and the
 * responder is handed the certificate as a trusted CA (`tlsOptions.ca`), exactly as it would
 * be for a private endpoint behind a private CA.
 *
 * Why by hand: no certificate library is installed and an `openssl` binary is not something
 * the project should depend on at run time. An X.509 v3 certificate is a small DER structure;
 * we encode the few fields needed (ECDSA P-256, SHA-256, subjectAltName 127.0.0.1/localhost,
 * basicConstraints CA so it can serve as its own trust anchor).
 */
import { createPrivateKey, generateKeyPairSync, randomBytes, sign, X509Certificate } from "node:crypto";

function len(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v >>= 8) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag: number, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  return Buffer.concat([Buffer.from([tag]), len(body.length), body]);
}

const seq = (...parts: Buffer[]) => tlv(0x30, ...parts);
const set = (...parts: Buffer[]) => tlv(0x31, ...parts);
const octets = (b: Buffer) => tlv(0x04, b);
const bits = (b: Buffer) => tlv(0x03, Buffer.from([0]), b);
const utf8 = (s: string) => tlv(0x0c, Buffer.from(s, "utf8"));
const bool = (v: boolean) => tlv(0x01, Buffer.from([v ? 0xff : 0]));

function oid(dotted: string): Buffer {
  const [a, b, ...rest] = dotted.split(".").map(Number);
  const out = [a! * 40 + b!];
  for (const n of rest) {
    const chunk: number[] = [n & 0x7f];
    for (let v = n >> 7; v > 0; v >>= 7) chunk.unshift((v & 0x7f) | 0x80);
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

function positiveInteger(b: Buffer): Buffer {
  return tlv(0x02, b[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b);
}

function utcTime(d: Date): Buffer {
  const p = (n: number) => String(n).padStart(2, "0");
  const s = `${p(d.getUTCFullYear() % 100)}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}Z`;
  return tlv(0x17, Buffer.from(s, "ascii"));
}

function pem(label: string, der: Buffer): string {
  const b64 = der.toString("base64").replace(/.{64}/g, "$&\n");
  return `-----BEGIN ${label}-----\n${b64}${b64.endsWith("\n") ? "" : "\n"}-----END ${label}-----\n`;
}

export interface SelfSignedCertificate {
  /** PEM certificate: the server's certificate and the client's trusted CA at once. */
  cert: string;
  /** PEM PKCS#8 private key. Lives only in the emulator's memory. */
  key: string;
}

/** A certificate for 127.0.0.1 and localhost, valid from an hour ago for `days`. */
export function selfSignedCertificate(
  commonName = "spillway-arm-emulator",
  days = 30,
): SelfSignedCertificate {
  const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const spki = publicKey.export({ format: "der", type: "spki" });
  const ecdsaWithSha256 = seq(oid("1.2.840.10045.4.3.2"));
  const name = seq(set(seq(oid("2.5.4.3"), utf8(commonName))));
  const now = Date.now();
  const serial = randomBytes(16);
  // Positive and minimal in DER: top bit clear (not negative), next bit set (no leading zero byte).
  serial[0] = (serial[0]! & 0x3f) | 0x40;
  const san = seq(
    tlv(0x87, Buffer.from([127, 0, 0, 1])), // iPAddress
    tlv(0x82, Buffer.from("localhost", "ascii")), // dNSName
  );
  const extensions = tlv(
    0xa3,
    seq(seq(oid("2.5.29.17"), octets(san)), seq(oid("2.5.29.19"), bool(true), octets(seq(bool(true))))),
  );
  const tbs = seq(
    tlv(0xa0, tlv(0x02, Buffer.from([2]))), // version v3
    positiveInteger(serial),
    ecdsaWithSha256,
    name,
    seq(utcTime(new Date(now - 3_600_000)), utcTime(new Date(now + days * 86_400_000))),
    name,
    spki,
    extensions,
  );
  const signature = sign("sha256", tbs, privateKey);
  const der = seq(tbs, ecdsaWithSha256, bits(signature));
  const cert = pem("CERTIFICATE", der);
  // Parse once: a malformed encoding fails here, at start-up, not in a client's handshake.
  new X509Certificate(cert);
  const key = createPrivateKey(privateKey.export({ format: "pem", type: "pkcs8" })).export({
    format: "pem",
    type: "pkcs8",
  }) as string;
  return { cert, key };
}
