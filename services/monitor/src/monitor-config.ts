import { z } from 'zod';
import { healthConfigShape } from './health/health-config.js';

/** The monitor's settings (environment variables), one shape per area. */
export const monitorConfigSchema = z.object({ ...healthConfigShape });
export type MonitorConfig = z.infer<typeof monitorConfigSchema>;
