export {
  FINALIZER,
  KUBECONFIG_KEY,
  kubeconfigSecretName,
  LABEL_CLUSTER,
  type ProvisionedClusterControllerOptions,
  provisionedClusterController,
  provisionRequest,
  registerProvisionedClusterController,
  runsOn,
  secretConfigFrom,
  totalGpus,
} from "./controller.ts";
