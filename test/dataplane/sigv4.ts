/** SigV4 checks for the data-plane tests' protocol-level stand-ins and proxies. */
import { Sha256 } from "@smithy/core/checksum";
import { SignatureV4 } from "@smithy/signature-v4";

/**
 * Whether a request's SigV4 signature is the one its received method, path, query and signed
 * headers give (s3rver does not check signatures; S3 does). Recomputed with the SDK's signer:
 * what this catches is a request whose wire form (path encoding, headers) is not what was signed.
 */
export async function sigV4Holds(
  req: { method?: string; url?: string; headers: Record<string, string | string[] | undefined> },
  secretAccessKey: string,
): Promise<boolean> {
  const auth = String(req.headers.authorization ?? "");
  const m =
    /Credential=([^/]+)\/(\d{8})\/([^/]+)\/s3\/aws4_request, SignedHeaders=([^,]+), Signature=([0-9a-f]+)/.exec(
      auth,
    );
  if (!m) return false;
  const [, accessKeyId, , region, signedHeaders, signature] = m;
  const amzDate = String(req.headers["x-amz-date"]);
  const date = new Date(
    amzDate.replace(/^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/, "$1-$2-$3T$4:$5:$6Z"),
  );
  const url = new URL(req.url ?? "/", "http://x");
  const query: Record<string, string> = {};
  for (const [k, v] of url.searchParams) query[k] = v;
  const headers: Record<string, string> = {};
  for (const h of signedHeaders!.split(";")) headers[h] = String(req.headers[h] ?? "");
  const signer = new SignatureV4({
    service: "s3",
    region: region!,
    credentials: { accessKeyId: accessKeyId!, secretAccessKey },
    sha256: Sha256,
    uriEscapePath: false,
    applyChecksum: false,
  });
  const again = await signer.sign(
    { method: req.method ?? "GET", protocol: "http:", hostname: "x", path: url.pathname, query, headers },
    { signingDate: date },
  );
  return String(again.headers.authorization).endsWith(`Signature=${signature}`);
}
