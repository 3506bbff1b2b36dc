import { z } from 'zod';
import { alertsConfigShape } from './alerts/alerts-config.js';
import { executionsConfigShape } from './executions/executions-config.js';
import { healthConfigShape } from './health/health-config.js';
import { metricsConfigShape } from './metrics/metrics-config.js';
import { rolloutsConfigShape } from './rollouts/rollouts-config.js';

/** The monitor's settings (environment variables), one shape per area. */
export const monitorConfigSchema = z.object({
  ...alertsConfigShape,
  ...executionsConfigShape,
  ...healthConfigShape,
  ...metricsConfigShape,
  ...rolloutsConfigShape,
});
export type MonitorConfig = z.infer<typeof monitorConfigSchema>;
