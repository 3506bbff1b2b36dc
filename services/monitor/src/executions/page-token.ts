import { RUN_ID_PATTERN, ServerError, Status } from '@elexirion/kit';
import type { IndexPosition } from './execution-store.js';

/**
 * The opaque page token: the last run of the page (finish time, run id), base64url JSON. The
 * next page starts strictly after it in newest-first order, so runs that arrive meanwhile (newer)
 * neither shift nor repeat what follows.
 */
export function encodePageToken(position: IndexPosition): string {
  return Buffer.from(JSON.stringify({ t: position.finishedAtMs, r: position.runId })).toString('base64url');
}

export function decodePageToken(token: string): IndexPosition {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
  } catch {
    parsed = undefined;
  }
  const fields = parsed as { t?: unknown; r?: unknown } | undefined;
  if (!fields || typeof fields.t !== 'number' || !Number.isSafeInteger(fields.t) || typeof fields.r !== 'string' || !RUN_ID_PATTERN.test(fields.r)) {
    throw new ServerError(Status.INVALID_ARGUMENT, 'page_token is not a token this call answered: pass next_page_token as it came, or none for the first page');
  }
  return { finishedAtMs: fields.t, runId: fields.r };
}
