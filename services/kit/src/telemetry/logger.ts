import { trace } from '@opentelemetry/api';
import { pino, type DestinationStream, type Logger } from 'pino';
import { redactSecrets, redactUrlCredentials, REDACTED } from '../secrets.js';

export type { Logger } from 'pino';

/** Header and field names that carry credentials, wherever they appear in a log record. */
const REDACT_PATHS = [
  'authorization',
  'apiKey',
  'api_key',
  'password',
  '*.authorization',
  '*.apiKey',
  '*.api_key',
  '*.password',
  '*.headers.authorization',
  '*.headers["x-api-key"]',
  '*.headers["x-goog-api-key"]',
];

export interface LoggerOptions {
  level: string;
  /** Name of the process ("agent", or "elexirion" when it hosts several); each hosted service logs through a child with its own `service`. */
  name: string;
  destination?: DestinationStream;
}

/**
 * Structured JSON logs: service name, trace and span id of the active span, credentials
 * redacted by path and every registered secret value scrubbed from any string.
 */
export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      level: options.level,
      base: { process: options.name, pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT_PATHS, censor: REDACTED },
      formatters: {
        level: (label) => ({ level: label }),
      },
      // The last step before a line is written: whatever path a secret took into the record
      // (message, error, nested field), it leaves as [redacted], and a URL's password as ***.
      hooks: { streamWrite: (line) => redactUrlCredentials(redactSecrets(line)) },
      mixin() {
        const span = trace.getActiveSpan();
        if (!span) return {};
        const { traceId, spanId } = span.spanContext();
        return { trace_id: traceId, span_id: spanId };
      },
    },
    options.destination,
  );
}
