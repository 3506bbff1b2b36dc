import type { z } from 'zod';
import { durationMs } from '@elexirion/kit';

// Settings of StreamTelemetry, spread into the gateway's config schema.
export const telemetryConfigShape = {
  /**
   * A StreamTelemetry client that takes no event for this long while its buffer is full is
   * ended with RESOURCE_EXHAUSTED (its consumer deleted), rather than held open forever.
   */
  GATEWAY_TELEMETRY_STALL_MS: durationMs().min(1_000, 'expected at least 1000 ms').default(120_000),
} satisfies z.ZodRawShape;
