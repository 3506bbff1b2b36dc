import { defineService } from '@elexirion/kit';
import { alertsArea } from './alerts/alerts-area.js';
import { executionsArea } from './executions/executions-area.js';
import { healthArea } from './health/health-area.js';
import { metricsArea } from './metrics/metrics-area.js';
import { rolloutsArea } from './rollouts/rollouts-area.js';
import type { MonitorContext, MonitorImplementation } from './monitor-area.js';
import { monitorConfigSchema } from './monitor-config.js';

/**
 * The monitor: the performance database, executions and feedback, alerts, system health and
 * guarded prompt rollouts, each an area of its own (see monitor-area.ts). Stateless like every service: what it keeps is
 * in JetStream, so any replica answers any call.
 */
async function createMonitor(context: MonitorContext) {
  const metrics = await metricsArea(context);
  // The metrics consumer's backlog as its area last read it: one reader of the consumer's info.
  const consumerLag = () => metrics.consumerLag()?.total;
  const alerts = await alertsArea(context, consumerLag);
  const executions = await executionsArea(context);
  const areas = [
    metrics,
    executions,
    alerts,
    await healthArea(context, { consumerLag, criticalAlerts: () => alerts.criticalAlerts() }),
    await rolloutsArea(context, { executions: () => executions.store(), alerts }),
  ];
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
