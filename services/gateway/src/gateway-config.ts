import { z } from 'zod';
import { degradationConfigShape } from './calls/degradation-config.js';
import { httpConfigShape } from './http/http-config.js';
import { keysConfigShape } from './keys/keys-config.js';
import { telemetryConfigShape } from './calls/telemetry-config.js';

/** The gateway's settings (environment variables), one shape per area. */
export const gatewayConfigSchema = z.object({
  ...keysConfigShape,
  ...httpConfigShape,
  ...degradationConfigShape,
  ...telemetryConfigShape,
});
export type GatewayConfig = z.infer<typeof gatewayConfigSchema>;
