/** Plain-text tables in kubectl's style: upper-case headers, columns padded with 3 spaces. */
export function renderTable(headers: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("   ")
      .trimEnd();
  return [line(headers), ...rows.map(line)].join("\n");
}

/** kubectl's age format: 45s, 3m, 2h, 5d. */
export function age(from: string | undefined, now: number = Date.now()): string {
  const t = Date.parse(from ?? "");
  if (!Number.isFinite(t)) return "<unknown>";
  const s = Math.max(0, Math.floor((now - t) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172_800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}

export const price = (usd: number | undefined): string => (usd === undefined ? "-" : `$${usd.toFixed(2)}/h`);
