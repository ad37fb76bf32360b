/** Plain data shared by the ports. */
export interface NodePoolSpec {
  name: string;
  shape: string;
  gpuType: string;
  gpusPerNode: number;
  nodes: number;
}
