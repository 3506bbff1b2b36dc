import type { MonitorArea, MonitorContext } from '../monitor-area.js';
import { unimplemented } from '../unimplemented.js';

/** The performance database: the events consumer, one-minute aggregates in KV, GetMetrics. */
export async function metricsArea(_context: MonitorContext): Promise<MonitorArea<'getMetrics'>> {
  return {
    implementation: { getMetrics: async () => unimplemented('GetMetrics') },
    close: async () => {},
  };
}
