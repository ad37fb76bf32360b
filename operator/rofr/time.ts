/** RFC 3339 at second precision, as Kubernetes prints `metav1.Time`; rounded up, never earlier. */
export function timestamp(d: Date): string {
  const ms = Math.ceil(d.getTime() / 1000) * 1000;
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}
