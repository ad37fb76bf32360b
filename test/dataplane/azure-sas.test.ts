/**
 * Container SASes signed without the SDK (http-azure.ts `containerSas`, what `KeySas` hands the
 * raw route): the query string must be the SDK's, byte for byte, for the same inputs — every
 * permission set the stores use and others, in any letter order, expiries, start times,
 * protocols, account names. (Azurite checks the signatures of the ones the stores use: the
 * azure-get / azure-put tests read, list and write with them.)
 */
import {
  ContainerSASPermissions,
  generateBlobSASQueryParameters,
  SASProtocol,
  StorageSharedKeyCredential,
} from "@azure/storage-blob";
import { accountKeyObject, containerSas, KeySas } from "../../operator/dataplane/http-azure.ts";

const KEYS = [
  // Azurite's published development key, and two others (one decodes to 64 bytes, one to 16).
  "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
  Buffer.alloc(64, 0x5a).toString("base64"),
  Buffer.from("a short key 16 b").toString("base64"),
];

/** The SDK's query string for these inputs. */
function sdkSas(
  account: string,
  key: string,
  values: {
    containerName: string;
    permissions: string;
    expiresOn: Date;
    startsOn?: Date;
    protocol?: SASProtocol;
  },
): string {
  return generateBlobSASQueryParameters(
    {
      containerName: values.containerName,
      permissions: ContainerSASPermissions.parse(values.permissions),
      expiresOn: values.expiresOn,
      ...(values.startsOn ? { startsOn: values.startsOn } : {}),
      ...(values.protocol ? { protocol: values.protocol } : {}),
    },
    new StorageSharedKeyCredential(account, key),
  ).toString();
}

describe("a container SAS signed without the SDK", () => {
  const permissionSets = ["r", "rl", "cw", "wc", "racwdl", "lr", "racwdxltmeiyf", "d", "l"];
  const expiries = [
    new Date("2026-11-22T11:00:00.000Z"),
    new Date("2026-11-22T11:00:00.999Z"), // milliseconds are dropped, not rounded
    new Date("2031-01-01T00:00:00.000Z"),
  ];
  const protocols: (SASProtocol | undefined)[] = [SASProtocol.Https, SASProtocol.HttpsAndHttp, undefined];
  const accounts: [string, string][] = [
    ["devstoreaccount1", "get"],
    ["acct", "a-container-01"],
  ];

  it("is the SDK's query string for every permission set, expiry, protocol, account and key", () => {
    let compared = 0;
    for (const key of KEYS)
      for (const [account, containerName] of accounts)
        for (const permissions of permissionSets)
          for (const expiresOn of expiries)
            for (const protocol of protocols) {
              const values = { containerName, permissions, expiresOn, ...(protocol ? { protocol } : {}) };
              const ours = containerSas({ accountName: account, ...values }, accountKeyObject(key));
              expect(ours).toBe(sdkSas(account, key, values));
              compared++;
            }
    expect(compared).toBe(KEYS.length * accounts.length * permissionSets.length * 3 * 3);
  });

  it("with a start time as well", () => {
    const values = {
      containerName: "c1",
      permissions: "rl",
      startsOn: new Date("2026-11-22T10:00:00.123Z"),
      expiresOn: new Date("2026-11-22T11:00:00Z"),
      protocol: SASProtocol.Https,
    };
    const ours = containerSas({ accountName: "acct", ...values }, accountKeyObject(KEYS[0]!));
    expect(ours).toBe(sdkSas("acct", KEYS[0]!, values));
    expect(new URLSearchParams(ours).get("st")).toBe("2026-11-22T10:00:00Z");
  });

  it("refuses a permission letter the service does not know, as the SDK does", () => {
    const values = { containerName: "c1", permissions: "rq", expiresOn: new Date("2026-11-22T11:00:00Z") };
    expect(() => sdkSas("acct", KEYS[0]!, values)).toThrow();
    expect(() => containerSas({ accountName: "acct", ...values }, accountKeyObject(KEYS[0]!))).toThrow(
      "invalid SAS permission 'q'",
    );
  });

  it("KeySas hands out the SDK's SAS for its access kinds: rl for reads, cw for writes, https only on https", () => {
    const now = Date.parse("2026-11-22T10:00:00.500Z");
    const expiresOn = new Date("2026-11-22T11:00:00Z"); // an hour on, to the second
    for (const [protocol, sdkProtocol] of [
      ["https", SASProtocol.Https],
      ["http", SASProtocol.HttpsAndHttp],
    ] as const) {
      const sas = new KeySas("acct", accountKeyObject(KEYS[1]!), "c1", protocol, { now: () => now });
      expect(sas.token("read")).toBe(
        sdkSas("acct", KEYS[1]!, {
          containerName: "c1",
          permissions: "rl",
          expiresOn,
          protocol: sdkProtocol,
        }),
      );
      expect(sas.token("write")).toBe(
        sdkSas("acct", KEYS[1]!, {
          containerName: "c1",
          permissions: "cw",
          expiresOn,
          protocol: sdkProtocol,
        }),
      );
    }
  });
});
