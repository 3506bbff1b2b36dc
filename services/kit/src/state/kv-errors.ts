import type { z } from 'zod';
import { ElexirionError, Status } from '../rpc/errors.js';

// The failures of a typed KV bucket (KvStore, KvView), each a named class with the gRPC status it
// stands for, so a handler that lets one through answers with the right code.

/** Problems listed in an error or a log line; a value with more is already understood. */
const MAX_PROBLEMS = 5;

/** A zod error as `path: message` lines (at most a few), the one format for KV values. */
export function describeIssues(error: z.ZodError): string[] {
  const lines = error.issues
    .slice(0, MAX_PROBLEMS)
    .map((issue) => `${issue.path.length ? issue.path.join('.') : '(value)'}: ${issue.message}`);
  const more = error.issues.length - MAX_PROBLEMS;
  if (more > 0) lines.push(`(and ${more} more)`);
  return lines;
}

/** Keys are quoted in messages, cut short: a caller may have sent anything. */
function quoted(key: string): string {
  const text = JSON.stringify(typeof key === 'string' ? key : String(key));
  return text.length > 90 ? `${text.slice(0, 88)}…"` : text;
}

/** A key the bucket's key rule does not allow. */
export class KvInvalidKeyError extends ElexirionError {
  override readonly name: string = 'KvInvalidKeyError';
  constructor(
    readonly bucket: string,
    readonly key: string,
    /** What a key must be, in words ("1-128 characters of A-Z a-z 0-9 _ -"). */
    readonly rule: string,
    /** What the keys are called in messages ("run id"). */
    keyName = 'key',
  ) {
    super(Status.INVALID_ARGUMENT, `invalid ${keyName} ${quoted(key)} for bucket ${bucket}: expected ${rule}`);
  }
}

/** A value refused before it was written: it fails the bucket's schema or check, or is too large. */
export class KvRejectedValueError extends ElexirionError {
  override readonly name: string = 'KvRejectedValueError';
  readonly reason: string;
  constructor(
    readonly bucket: string,
    readonly key: string,
    readonly problems: readonly string[],
  ) {
    const reason = problems.join('; ');
    super(Status.INVALID_ARGUMENT, `value for ${quoted(key)} in bucket ${bucket} cannot be stored: ${reason}`);
    this.reason = reason;
  }
}

/** A stored value that is not JSON or not what the bucket holds: read, but not usable. */
export class KvCorruptEntryError extends ElexirionError {
  override readonly name: string = 'KvCorruptEntryError';
  readonly reason: string;
  constructor(
    readonly bucket: string,
    readonly key: string,
    readonly problems: readonly string[],
    options?: ErrorOptions,
  ) {
    const reason = problems.join('; ');
    super(Status.DATA_LOSS, `entry ${quoted(key)} in bucket ${bucket} is corrupt: ${reason}`, options);
    this.reason = reason;
  }
}

/** A compare-and-set write lost: the key's revision was not the expected one (0: the key existed). */
export class KvRevisionConflictError extends ElexirionError {
  override readonly name: string = 'KvRevisionConflictError';
  constructor(
    readonly bucket: string,
    readonly key: string,
    readonly expectedRevision: number,
    options?: ErrorOptions,
  ) {
    super(
      Status.ABORTED,
      expectedRevision === 0
        ? `${quoted(key)} already exists in bucket ${bucket}`
        : `${quoted(key)} in bucket ${bucket} is no longer at revision ${expectedRevision}`,
      options,
    );
  }
}
