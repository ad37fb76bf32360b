/**
 * OKE on OCI for runs Azure declined: a VCN laid out the way OKE expects (public API endpoint
 * and load-balancer subnets, private workers behind NAT and a service gateway), an enhanced
 * OKE cluster, one GPU node pool per requested pool spread over the availability domains, an
 * Object Storage bucket for datasets and checkpoints, and a customer secret key so the data
 * plane reaches the bucket through the S3-compatibility API.
 *
 * The same function runs under the Pulumi CLI (`index.ts`) and inline under the Automation
 * API (`operator/clouds/pulumi`).
 */
import * as containerengine from "@pulumi/oci/containerengine/index.js";
import * as core from "@pulumi/oci/core/index.js";
import * as identity from "@pulumi/oci/identity/index.js";
import * as objectstorage from "@pulumi/oci/objectstorage/index.js";
import * as pulumi from "@pulumi/pulumi";
import { ConfigReader, type ConfigSource, type GpuPoolConfig } from "../shared/config.ts";
import { StackNaming } from "../shared/naming.ts";
import { parseTagList, stackTags } from "../shared/tagging.ts";

export interface OciSettings {
  region: string;
  compartmentId: string;
  kubernetesVersion: string;
  vcnCidr: string;
  apiSubnetCidr: string;
  workerSubnetCidr: string;
  lbSubnetCidr: string;
  podsCidr: string;
  servicesCidr: string;
  /** CIDR allowed to reach the Kubernetes API (6443). */
  apiAllowedCidr: string;
  /** Empty: every availability domain of the region. */
  availabilityDomains: string[];
  gpuPools: GpuPoolConfig[];
  gpuImageId: string;
  bootVolumeSizeGbs: number;
  /** Optional OCI compute capacity reservation the GPU nodes draw from. */
  capacityReservationId?: string;
  bucketName?: string;
  /** The user that owns the S3-compatibility key (an IAM user OCID). */
  s3UserId: string;
  extraTags: Record<string, string>;
}

const OCID = /^ocid1\.[a-z0-9]+\.[a-z0-9-]*\.[a-z0-9-]*\.[a-z0-9]+$/;

/** Reads and validates the stack configuration; throws `InfraConfigError` listing every problem. */
export function readOciSettings(source: ConfigSource): OciSettings {
  const c = new ConfigReader("oci", source);
  let extraTags: Record<string, string> = {};
  try {
    extraTags = parseTagList(source.get("tags"));
  } catch (e) {
    c.problem(`config tags: ${(e as Error).message}`);
  }
  const settings: OciSettings = {
    region: c.string("oci:region", {
      pattern: /^[a-z]+-[a-z]+-[0-9]+$/,
      rule: "an OCI region identifier such as us-ashburn-1",
      hint: "set with `pulumi config set oci:region us-ashburn-1`",
    }),
    compartmentId: c.string("compartmentId", {
      pattern: OCID,
      rule: "a compartment OCID (ocid1.compartment.oc1..…)",
      hint: "the compartment OCID the cluster is created in",
    }),
    kubernetesVersion: c.string("kubernetesVersion", {
      default: "v1.31.1",
      pattern: /^v[0-9]+\.[0-9]+\.[0-9]+$/,
      rule: "a version such as v1.31.1",
    }),
    vcnCidr: c.cidr("vcnCidr", "10.0.0.0/16"),
    apiSubnetCidr: c.cidr("apiSubnetCidr", "10.0.0.0/28"),
    workerSubnetCidr: c.cidr("workerSubnetCidr", "10.0.16.0/20"),
    lbSubnetCidr: c.cidr("lbSubnetCidr", "10.0.32.0/24"),
    podsCidr: c.cidr("podsCidr", "10.244.0.0/16"),
    servicesCidr: c.cidr("servicesCidr", "10.96.0.0/16"),
    apiAllowedCidr: c.cidr("apiAllowedCidr", "0.0.0.0/0"),
    availabilityDomains: c.list("availabilityDomains"),
    gpuPools: c.gpuPools({
      defaultShape: "BM.GPU.H100.8",
      namePattern: /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/,
      nameRule: "1-63 letters, digits, '-' or '_'",
    }),
    gpuImageId: c.string("gpuImageId", {
      pattern: OCID,
      rule: "an image OCID (a GPU-enabled OKE node image)",
      hint: "the OCID of a GPU OKE node image for the region",
    }),
    bootVolumeSizeGbs: c.int("bootVolumeSizeGbs", { min: 50, max: 32768, default: 500 }),
    capacityReservationId: c.optionalString("capacityReservationId", {
      pattern: OCID,
      rule: "a capacity reservation OCID",
    }),
    bucketName: c.optionalString("bucketName", {
      pattern: /^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$/,
      rule: "3-63 lower-case letters, digits, '.', '-' or '_'",
    }),
    s3UserId: c.string("s3UserId", {
      pattern: OCID,
      rule: "a user OCID (ocid1.user.oc1..…)",
      hint: "the IAM user that owns the S3-compatibility key",
    }),
    extraTags,
  };
  c.done();
  return settings;
}

export interface OciOutputs {
  kubeconfig: pulumi.Output<string>;
  clusterId: pulumi.Output<string>;
  bucket: pulumi.Output<string>;
  namespace: pulumi.Output<string>;
  s3Endpoint: pulumi.Output<string>;
  s3Region: string;
  s3AccessKeyId: pulumi.Output<string>;
  s3SecretAccessKey: pulumi.Output<string>;
  region: string;
  vcnId: pulumi.Output<string>;
  nodePoolIds: pulumi.Output<string>[];
}

/** The S3-compatibility endpoint of a tenancy's Object Storage namespace in a region. */
export function ociS3Endpoint(namespace: string, region: string): string {
  return `https://${namespace}.compat.objectstorage.${region}.oraclecloud.com`;
}

const TCP = "6";
const ALL = "all";

export function ociProgram(source: ConfigSource): OciOutputs {
  const s = readOciSettings(source);
  const project = pulumi.getProject();
  const stack = pulumi.getStack();
  const names = new StackNaming(project, stack);
  const freeformTags = stackTags(project, stack, s.extraTags);
  const compartmentId = s.compartmentId;

  const vcn = new core.Vcn("vcn", {
    compartmentId,
    cidrBlocks: [s.vcnCidr],
    displayName: names.name("vcn"),
    dnsLabel: names.compact("vcn", 15),
    freeformTags,
  });

  const internetGateway = new core.InternetGateway("internet-gateway", {
    compartmentId,
    vcnId: vcn.id,
    enabled: true,
    displayName: names.name("igw"),
    freeformTags,
  });
  const natGateway = new core.NatGateway("nat-gateway", {
    compartmentId,
    vcnId: vcn.id,
    displayName: names.name("nat"),
    freeformTags,
  });
  const oracleServices = core.getServicesOutput({
    filters: [{ name: "name", values: ["All .* Services In Oracle Services Network"], regex: true }],
  }).services;
  const serviceGateway = new core.ServiceGateway("service-gateway", {
    compartmentId,
    vcnId: vcn.id,
    displayName: names.name("sgw"),
    services: [{ serviceId: oracleServices.apply((svcs) => svcs[0]?.id ?? "") }],
    freeformTags,
  });

  const publicRoutes = new core.RouteTable("public-routes", {
    compartmentId,
    vcnId: vcn.id,
    displayName: names.name("public-rt"),
    routeRules: [
      { destination: "0.0.0.0/0", destinationType: "CIDR_BLOCK", networkEntityId: internetGateway.id },
    ],
    freeformTags,
  });
  const privateRoutes = new core.RouteTable("private-routes", {
    compartmentId,
    vcnId: vcn.id,
    displayName: names.name("private-rt"),
    routeRules: [
      { destination: "0.0.0.0/0", destinationType: "CIDR_BLOCK", networkEntityId: natGateway.id },
      {
        destination: oracleServices.apply((svcs) => svcs[0]?.cidrBlock ?? ""),
        destinationType: "SERVICE_CIDR_BLOCK",
        networkEntityId: serviceGateway.id,
      },
    ],
    freeformTags,
  });

  const tcpIn = (source: string, min: number, max = min) => ({
    protocol: TCP,
    source,
    tcpOptions: { min, max },
  });
  const apiSecurity = new core.SecurityList("api-endpoint-security", {
    compartmentId,
    vcnId: vcn.id,
    displayName: names.name("api-sl"),
    ingressSecurityRules: [
      tcpIn(s.apiAllowedCidr, 6443),
      tcpIn(s.workerSubnetCidr, 6443),
      tcpIn(s.workerSubnetCidr, 12250),
      { protocol: "1", source: s.workerSubnetCidr, icmpOptions: { type: 3, code: 4 } },
    ],
    egressSecurityRules: [
      { protocol: TCP, destination: s.workerSubnetCidr },
      { protocol: "1", destination: s.workerSubnetCidr, icmpOptions: { type: 3, code: 4 } },
      {
        protocol: TCP,
        destination: oracleServices.apply((svcs) => svcs[0]?.cidrBlock ?? ""),
        destinationType: "SERVICE_CIDR_BLOCK",
        tcpOptions: { min: 443, max: 443 },
      },
    ],
    freeformTags,
  });
  const workerSecurity = new core.SecurityList("worker-security", {
    compartmentId,
    vcnId: vcn.id,
    displayName: names.name("worker-sl"),
    ingressSecurityRules: [
      // Pod-to-pod and node-to-node (NCCL, rendezvous) inside the worker subnet.
      { protocol: ALL, source: s.workerSubnetCidr },
      { protocol: TCP, source: s.apiSubnetCidr },
      { protocol: "1", source: "0.0.0.0/0", icmpOptions: { type: 3, code: 4 } },
      // Load balancers reach NodePorts.
      tcpIn(s.lbSubnetCidr, 30000, 32767),
      tcpIn(s.lbSubnetCidr, 10256),
    ],
    egressSecurityRules: [{ protocol: ALL, destination: "0.0.0.0/0" }],
    freeformTags,
  });
  const lbSecurity = new core.SecurityList("load-balancer-security", {
    compartmentId,
    vcnId: vcn.id,
    displayName: names.name("lb-sl"),
    ingressSecurityRules: [tcpIn("0.0.0.0/0", 80), tcpIn("0.0.0.0/0", 443)],
    egressSecurityRules: [
      { protocol: TCP, destination: s.workerSubnetCidr, tcpOptions: { min: 30000, max: 32767 } },
      { protocol: TCP, destination: s.workerSubnetCidr, tcpOptions: { min: 10256, max: 10256 } },
    ],
    freeformTags,
  });

  const subnet = (
    name: string,
    cidr: string,
    routes: core.RouteTable,
    security: core.SecurityList,
    isPublic: boolean,
  ) =>
    new core.Subnet(`${name}-subnet`, {
      compartmentId,
      vcnId: vcn.id,
      cidrBlock: cidr,
      displayName: names.name(name),
      dnsLabel: names.compact(name, 15),
      prohibitPublicIpOnVnic: !isPublic,
      routeTableId: routes.id,
      securityListIds: [security.id],
      freeformTags,
    });
  const apiSubnet = subnet("api", s.apiSubnetCidr, publicRoutes, apiSecurity, true);
  const workerSubnet = subnet("workers", s.workerSubnetCidr, privateRoutes, workerSecurity, false);
  const lbSubnet = subnet("lb", s.lbSubnetCidr, publicRoutes, lbSecurity, true);

  const cluster = new containerengine.Cluster("cluster", {
    compartmentId,
    name: names.name("oke"),
    kubernetesVersion: s.kubernetesVersion,
    vcnId: vcn.id,
    type: "ENHANCED_CLUSTER",
    endpointConfig: { subnetId: apiSubnet.id, isPublicIpEnabled: true },
    clusterPodNetworkOptions: [{ cniType: "FLANNEL_OVERLAY" }],
    options: {
      serviceLbSubnetIds: [lbSubnet.id],
      kubernetesNetworkConfig: { podsCidr: s.podsCidr, servicesCidr: s.servicesCidr },
      persistentVolumeConfig: { freeformTags },
      serviceLbConfig: { freeformTags },
    },
    freeformTags,
  });

  const availabilityDomains: pulumi.Input<string[]> =
    s.availabilityDomains.length > 0
      ? s.availabilityDomains
      : identity
          .getAvailabilityDomainsOutput({ compartmentId })
          .availabilityDomains.apply((ads) => ads.map((ad) => ad.name));

  const nodePools = s.gpuPools.map(
    (pool) =>
      new containerengine.NodePool(`gpu-pool-${pool.name}`, {
        clusterId: cluster.id,
        compartmentId,
        name: names.name(pool.name),
        kubernetesVersion: s.kubernetesVersion,
        nodeShape: pool.shape,
        nodeSourceDetails: {
          sourceType: "IMAGE",
          imageId: s.gpuImageId,
          bootVolumeSizeInGbs: String(s.bootVolumeSizeGbs),
        },
        nodeConfigDetails: {
          size: pool.nodes,
          placementConfigs: pulumi.output(availabilityDomains).apply((ads) =>
            ads.map((ad) => ({
              availabilityDomain: ad,
              subnetId: workerSubnet.id,
              ...(s.capacityReservationId ? { capacityReservationId: s.capacityReservationId } : {}),
            })),
          ),
          nodePoolPodNetworkOptionDetails: { cniType: "FLANNEL_OVERLAY" },
          freeformTags,
        },
        initialNodeLabels: [
          { key: "spillway.dev/pool", value: pool.name },
          ...(pool.gpuType ? [{ key: "spillway.dev/gpu-type", value: pool.gpuType }] : []),
        ],
        freeformTags,
      }),
  );

  const namespace = objectstorage.getNamespaceOutput({ compartmentId }).namespace;
  const bucket = new objectstorage.Bucket("bucket", {
    compartmentId,
    namespace,
    name: s.bucketName ?? names.globallyUnique("data", 63),
    accessType: "NoPublicAccess",
    storageTier: "Standard",
    versioning: "Disabled",
    freeformTags,
  });

  // The S3-compatibility API signs with a customer secret key of an IAM user.
  const s3Key = new identity.CustomerSecretKey("s3-key", {
    userId: s.s3UserId,
    displayName: names.name("s3"),
  });

  const kubeconfig = containerengine.getClusterKubeConfigOutput({
    clusterId: cluster.id,
    tokenVersion: "2.0.0",
    endpoint: "PUBLIC_ENDPOINT",
  }).content;

  return {
    kubeconfig: pulumi.secret(kubeconfig),
    clusterId: cluster.id,
    bucket: bucket.name,
    namespace,
    s3Endpoint: namespace.apply((ns) => ociS3Endpoint(ns, s.region)),
    // OCI signs S3-compatibility requests with the region's identifier.
    s3Region: s.region,
    s3AccessKeyId: s3Key.id,
    s3SecretAccessKey: pulumi.secret(s3Key.key),
    region: s.region,
    vcnId: vcn.id,
    nodePoolIds: nodePools.map((p) => p.id),
  };
}
