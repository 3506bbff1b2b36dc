import { defineService } from '@elexirion/kit';
import { alertsArea } from './alerts/alerts-area.js';
import { executionsArea } from './executions/executions-area.js';
import { healthArea } from './health/health-area.js';
import { metricsArea } from './metrics/metrics-area.js';
import type { MonitorContext, MonitorImplementation } from './monitor-area.js';
import { monitorConfigSchema } from './monitor-config.js';

/**
 * The monitor: the performance database, executions and feedback, alerts and system health,
 * each an area of its own (see monitor-area.ts). Stateless like every service: what it keeps is
 * in JetStream, so any replica answers any call.
 */
async function createMonitor(context: MonitorContext) {
  const metrics = await metricsArea(context);
  // The metrics consumer's backlog as its area last read it: one reader of the consumer's info.
  const consumerLag = () => metrics.consumerLag()?.total;
  const alerts = await alertsArea(context, consumerLag);
  const areas = [metrics, await executionsArea(context), alerts, await healthArea(context, { consumerLag, criticalAlerts: () => alerts.criticalAlerts() })];
  const implementation = Object.assign({}, ...areas.map((area) => area.implementation)) as MonitorImplementation;
  return {
    implementation,
    async close() {
      await Promise.allSettled(areas.map((area) => area.close()));
    },
  };
}

export const monitorService = defineService({
  name: 'monitor',
  configSchema: monitorConfigSchema,
  create: createMonitor,
});
