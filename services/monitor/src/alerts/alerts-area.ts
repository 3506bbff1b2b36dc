import type { MonitorArea, MonitorContext } from '../monitor-area.js';
import { unimplemented } from '../unimplemented.js';

/** Alert rules (YAML), their evaluation, notifications on elexirion.alerts.* and webhooks. */
export async function alertsArea(_context: MonitorContext): Promise<MonitorArea<'listAlerts'>> {
  return {
    implementation: { listAlerts: async () => unimplemented('ListAlerts') },
    close: async () => {},
  };
}
