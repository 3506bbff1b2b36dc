// How figures read on every page.

export function formatMs(ms: number | undefined | null): string {
  if (ms === undefined || ms === null || !Number.isFinite(ms)) return '-';
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

export function formatCost(usd: number | undefined | null): string {
  if (usd === undefined || usd === null || !Number.isFinite(usd)) return '-';
  if (usd === 0) return '$0';
  if (usd < 0.01) return `$${usd.toPrecision(2)}`;
  return `$${usd.toFixed(usd < 10 ? 4 : 2)}`;
}

export function formatCount(value: number | string | undefined | null): string {
  if (value === undefined || value === null || value === '') return '-';
  const number = typeof value === 'string' ? Number(value) : value;
  return Number.isFinite(number) ? number.toLocaleString('en') : String(value);
}

export function formatTime(iso: string | undefined | null): string {
  if (!iso) return '-';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

/** "JOB_STATUS_RUNNING" -> "running". */
export function enumLabel(value: string | undefined | null, prefix: string): string {
  if (!value) return '-';
  return value.startsWith(prefix) ? value.slice(prefix.length).toLowerCase().replaceAll('_', ' ') : value.toLowerCase();
}
