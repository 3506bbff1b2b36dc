import { isAbortError } from 'abort-controller-x';
import type { ProviderName } from './provider-config.js';

/** Statuses worth another attempt: timeouts, rate limits, server errors, Anthropic's 529 overloaded. */
export const RETRYABLE_STATUSES = new Set([408, 429, 500, 502, 503, 504, 529]);

export type UpstreamErrorKind = 'http' | 'connection' | 'timeout';

/** A failed vendor request, classified for retries, breakers and status mapping. */
export class UpstreamError extends Error {
  override readonly name = 'UpstreamError';
  constructor(
    readonly provider: ProviderName,
    readonly kind: UpstreamErrorKind,
    message: string,
    readonly status?: number,
    readonly retryAfterMs?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  get retryable(): boolean {
    return this.kind !== 'http' || RETRYABLE_STATUSES.has(this.status ?? 0);
  }

  /** Whether this failure says the vendor is unhealthy (counts against its breaker). */
  get countsAgainstProvider(): boolean {
    return this.retryable;
  }

  describe(): string {
    return this.kind === 'http' ? `${this.message} (${this.status})` : `${this.kind} error: ${this.message}`;
  }
}

/** Milliseconds from Retry-After (seconds or an HTTP date) or retry-after-ms. */
export function parseRetryAfter(headers: { get(name: string): string | null } | undefined, now = Date.now()): number | undefined {
  if (!headers) return undefined;
  const ms = headers.get('retry-after-ms');
  if (ms !== null && ms.trim() !== '' && Number.isFinite(Number(ms))) return Math.max(0, Number(ms));
  const value = headers.get('retry-after');
  if (value === null || value.trim() === '') return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isFinite(date) ? Math.max(0, date - now) : undefined;
}

const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'ECONNABORTED']);

/** True for errors that mean "the network failed" in undici/fetch terms. */
export function isConnectionFailure(error: unknown): boolean {
  let current: unknown = error;
  for (let depth = 0; current && depth < 5; depth += 1) {
    const code = (current as { code?: string }).code;
    if (code && CONNECTION_CODES.has(code)) return true;
    if (current instanceof TypeError && /fetch failed|terminated|network/i.test(current.message)) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

/** undici's codes for no answer (or no further body byte) within a request's timeout. */
const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

/** True for undici's own request timeouts (headersTimeout, bodyTimeout). */
export function isTimeoutFailure(error: unknown): boolean {
  return TIMEOUT_CODES.has((error as { code?: string } | undefined)?.code ?? '');
}

export { isAbortError };
