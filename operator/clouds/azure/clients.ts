/**
 * Azure SDK clients for one CloudProvider: a credential from the provider's credentials Secret
 * and ARM clients pointed at its endpoint. Cached, so tokens (MSAL caches them per credential)
 * and connections are reused across offers; the cache key holds a digest of the secret, never
 * the secret itself.
 *
 * Credentials Secret (`spec.azure.credentialsSecretRef`), keys:
 * - `tenantId`, `clientId`, `clientSecret` — a service principal (ClientSecretCredential);
 *   `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET` are accepted as aliases, so a
 *   Secret made for the Azure CLI/SDK environment works as is;
 * - `authorityHost` (optional) — the Entra ID authority for sovereign clouds or an emulator.
 * Without a Secret the responder uses the `credential` given to its constructor (e.g. workload
 * identity), if any.
 */
import { createHash } from "node:crypto";
import { ComputeManagementClient } from "@azure/arm-compute";
import { ContainerServiceClient } from "@azure/arm-containerservice";
import type { TokenCredential } from "@azure/core-auth";
import { ClientSecretCredential } from "@azure/identity";
import { errorBodyPolicy } from "./errors.ts";

export const PUBLIC_ARM_ENDPOINT = "https://management.azure.com";
export const PUBLIC_AUTHORITY_HOST = "https://login.microsoftonline.com";

export interface AzureClientSettings {
  armEndpoint: string;
  subscriptionId: string;
  authorityHost?: string;
  /** PEM CA certificates trusted for ARM and token calls (private CA, the sandbox emulator). */
  ca?: string;
  /** Retries inside the SDK; 0 leaves backoff to the controller's work queue. */
  maxRetries: number;
  /** Used when no credentials Secret is given. */
  fallbackCredential?: TokenCredential;
}

export interface AzureClients {
  /** Endpoint, subscription and credential identity (digests only): a cache key for callers. */
  key: string;
  compute: ComputeManagementClient;
  containers: ContainerServiceClient;
  /** Secret values of this credential, for scrubbing messages. */
  secrets: string[];
}

export class CredentialsConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CredentialsConfigError";
  }
}

function pick(data: Record<string, string> | undefined, ...keys: string[]): string | undefined {
  for (const k of keys) {
    const v = data?.[k]?.trim();
    if (v) return v;
  }
  return undefined;
}

/** One client set per endpoint, subscription and credential; tokens live as long as it does. */
export class AzureClientCache {
  private readonly cache = new Map<string, AzureClients>();

  get(settings: AzureClientSettings, secretData: Record<string, string> | undefined): AzureClients {
    const tenantId = pick(secretData, "tenantId", "AZURE_TENANT_ID");
    const clientId = pick(secretData, "clientId", "AZURE_CLIENT_ID");
    const clientSecret = pick(secretData, "clientSecret", "AZURE_CLIENT_SECRET");
    const authorityHost = pick(secretData, "authorityHost", "AZURE_AUTHORITY_HOST") ?? settings.authorityHost;
    const hasSecret = tenantId !== undefined || clientId !== undefined || clientSecret !== undefined;
    if (hasSecret && (!tenantId || !clientId || !clientSecret)) {
      const missing = [
        ["tenantId", tenantId],
        ["clientId", clientId],
        ["clientSecret", clientSecret],
      ]
        .filter(([, v]) => !v)
        .map(([k]) => k);
      throw new CredentialsConfigError(`the Azure credentials Secret lacks ${missing.join(", ")}`);
    }
    if (!hasSecret && !settings.fallbackCredential) {
      throw new CredentialsConfigError(
        "no Azure credentials: set spec.azure.credentialsSecretRef (tenantId, clientId, clientSecret)",
      );
    }
    const secretDigest = clientSecret
      ? createHash("sha256").update(clientSecret).digest("hex").slice(0, 16)
      : "-";
    const key = [
      settings.armEndpoint,
      settings.subscriptionId,
      authorityHost ?? "",
      tenantId ?? "",
      clientId ?? "",
      secretDigest,
      settings.maxRetries,
      settings.ca ? createHash("sha256").update(settings.ca).digest("hex").slice(0, 16) : "",
    ].join("|");
    const hit = this.cache.get(key);
    if (hit) return hit;
    const tls = settings.ca ? { tlsOptions: { ca: settings.ca } } : {};
    const retryOptions = { maxRetries: settings.maxRetries };
    const credential: TokenCredential =
      tenantId && clientId && clientSecret
        ? new ClientSecretCredential(tenantId, clientId, clientSecret, {
            ...tls,
            retryOptions,
            ...(authorityHost ? { authorityHost } : {}),
            // Instance discovery asks login.microsoftonline.com whether the authority is a
            // known cloud; for any other authority (sovereign, emulator) it must be off.
            disableInstanceDiscovery: authorityHost !== undefined && authorityHost !== PUBLIC_AUTHORITY_HOST,
          })
        : settings.fallbackCredential!;
    const options = { endpoint: settings.armEndpoint, retryOptions, ...tls };
    const compute = new ComputeManagementClient(credential, settings.subscriptionId, options);
    const containers = new ContainerServiceClient(credential, settings.subscriptionId, options);
    compute.pipeline.addPolicy(errorBodyPolicy);
    containers.pipeline.addPolicy(errorBodyPolicy);
    const clients: AzureClients = {
      key: createHash("sha256").update(key).digest("hex").slice(0, 16),
      compute,
      containers,
      secrets: clientSecret ? [clientSecret] : [],
    };
    this.cache.set(key, clients);
    return clients;
  }
}
