import { z } from 'zod';

/** The monitor's settings (environment variables), one shape per area. */
export const monitorConfigSchema = z.object({});
export type MonitorConfig = z.infer<typeof monitorConfigSchema>;
