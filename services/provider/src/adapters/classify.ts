import { AbortError } from 'abort-controller-x';
import type { ProviderName } from '../provider-config.js';
import { UpstreamError, isAbortError, isConnectionFailure, isTimeoutFailure, parseRetryAfter } from '../upstream-error.js';

/** The error classes an SDK in the Stainless family (Anthropic, OpenAI) throws. */
export interface SdkErrorClasses {
  APIError: abstract new (...args: any[]) => Error & { status?: number; headers?: Headers };
  APIUserAbortError: abstract new (...args: any[]) => Error;
  APIConnectionTimeoutError: abstract new (...args: any[]) => Error;
  APIConnectionError: abstract new (...args: any[]) => Error;
}

/**
 * Turns whatever an SDK threw into an UpstreamError, or an AbortError when our own signal
 * aborted the request (cancellation is not an upstream failure).
 */
export function classifySdkError(provider: ProviderName, error: unknown, signal: AbortSignal, classes?: SdkErrorClasses): Error {
  if (error instanceof UpstreamError) return error;
  if (signal.aborted || isAbortError(error) || (classes && error instanceof classes.APIUserAbortError)) return new AbortError();
  if ((classes && error instanceof classes.APIConnectionTimeoutError) || isTimeoutFailure(error)) {
    return new UpstreamError(provider, 'timeout', 'request timed out', undefined, undefined, { cause: error });
  }
  if (classes && error instanceof classes.APIConnectionError) {
    return new UpstreamError(provider, 'connection', 'connection failed', undefined, undefined, { cause: error });
  }
  if (classes && error instanceof classes.APIError && error.status === undefined) return streamError(provider, error);
  const status = (error as { status?: unknown }).status;
  if (typeof status === 'number' && status >= 400) {
    const headers = (error as { headers?: Headers }).headers;
    const retryAfter = parseRetryAfter(headers) ?? retryInfoDelay(error);
    return new UpstreamError(provider, 'http', upstreamMessage(error, status), status, retryAfter, { cause: error });
  }
  if (isConnectionFailure(error)) {
    return new UpstreamError(provider, 'connection', 'connection failed', undefined, undefined, { cause: error });
  }
  return new UpstreamError(provider, 'connection', `unexpected failure: ${(error as Error)?.message ?? String(error)}`, undefined, undefined, { cause: error });
}

/**
 * The status each in-stream error type stands for: what the API answers for the same failure
 * before a stream has begun (Anthropic's error types; OpenAI's `server_error`).
 */
const STREAM_ERROR_STATUSES: Record<string, number> = {
  invalid_request_error: 400,
  authentication_error: 401,
  billing_error: 402,
  permission_error: 403,
  not_found_error: 404,
  request_too_large: 413,
  rate_limit_error: 429,
  api_error: 500,
  server_error: 500,
  timeout_error: 504,
  overloaded_error: 529,
};

/**
 * An error the vendor sent inside a 200 stream (Anthropic's `event: error`, OpenAI's
 * `data: {"error": ...}`): the SDK throws it without a status. It is retried, counted and
 * mapped like the status its type stands for; an unknown type like a server error (500).
 */
function streamError(provider: ProviderName, error: Error): UpstreamError {
  const body = (error as { error?: unknown }).error as { type?: unknown; code?: unknown; message?: unknown; error?: { type?: unknown; message?: unknown } } | undefined;
  const type = [body?.error?.type, body?.type].find((value): value is string => typeof value === 'string' && value !== 'error');
  // OpenAI-compatible servers (vLLM) put the HTTP status in `code`.
  const code = typeof body?.code === 'number' && body.code >= 400 && body.code < 600 ? body.code : undefined;
  const status = code ?? (type ? STREAM_ERROR_STATUSES[type] : undefined) ?? 500;
  const message = [body?.error?.message, body?.message].find((value): value is string => typeof value === 'string') ?? 'no message';
  return new UpstreamError(provider, 'http', `stream error${type ? ` ${type}` : ''}: ${message.slice(0, 300)}`, status, undefined, { cause: error });
}

/**
 * Gemini's SDK exposes no response headers; its API says when to retry in the error body, as
 * google.rpc.RetryInfo `"retryDelay": "2s"`.
 */
function retryInfoDelay(error: unknown): number | undefined {
  const match = /"retryDelay"\s*:\s*"(\d+(?:\.\d+)?)s"/.exec((error as Error)?.message ?? '');
  return match ? Number(match[1]) * 1000 : undefined;
}

/** A short message from a vendor error body, without the SDK's status prefix. */
function upstreamMessage(error: unknown, status: number): string {
  const body = (error as { error?: unknown }).error as { error?: { message?: string }; message?: string } | undefined;
  const message = body?.error?.message ?? body?.message ?? (error as Error).message ?? '';
  const cleaned = String(message).replace(/^\d{3}\s+/, '').slice(0, 300);
  return cleaned || `HTTP ${status}`;
}
