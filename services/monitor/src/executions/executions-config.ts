import { z } from 'zod';

/** The executions area's settings (spread into the monitor's config). */
export const executionsConfigShape = {
  /** How long a completed run (and its feedback) is kept, in hours: the buckets' max age. */
  MONITOR_EXECUTIONS_RETENTION_HOURS: z.coerce.number().int().min(1).max(24 * 366).default(72),
  /**
   * The longest text kept of each input value, the output, each step's output, JSON and error:
   * longer ones are cut and end with a marker saying how long they were.
   */
  MONITOR_EXECUTIONS_MAX_TEXT_CHARS: z.coerce.number().int().min(64).max(1_000_000).default(16_384),
  /** The largest stored execution (JSON bytes, feedback included); texts are cut further to fit. Under NATS's max_payload. */
  MONITOR_EXECUTIONS_MAX_BYTES: z.coerce.number().int().min(4_096).max(8 * 1024 * 1024).default(256 * 1024),
  /** How long RecordFeedback waits for a run whose event is still on its way before NOT_FOUND. */
  MONITOR_FEEDBACK_WAIT_MS: z.coerce.number().int().min(0).max(60_000).default(5_000),
  /** The longest feedback comment accepted (longer: INVALID_ARGUMENT). */
  MONITOR_FEEDBACK_COMMENT_MAX_CHARS: z.coerce.number().int().min(1).max(100_000).default(4_000),
};
