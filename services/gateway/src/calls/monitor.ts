import { CallMetadata, callOptions, type proto } from '@elexirion/kit';
import { callerOf } from '../caller.js';
import type { GatewayDeps } from './gateway-deps.js';

/** The metadata that tells the monitor which key recorded feedback (its name; "" with keys off). */
export const CALLER_METADATA = 'x-elexirion-caller';

type MonitorCalls = Pick<
  proto.GatewayServiceImplementation,
  'getMetrics' | 'listExecutions' | 'getExecution' | 'recordFeedback' | 'getPromptVersionStats' | 'listAlerts' | 'getSystemHealth' | 'watchSystemHealth'
>;

/**
 * The monitor's calls, which the gateway exposes (with keys, scopes and limits) and forwards as
 * they are: the monitor checks what they ask. Deadline and cancellation go along.
 */
export function monitorCalls(deps: GatewayDeps): MonitorCalls {
  const { monitor } = deps;
  return {
    getMetrics: (request, context) => monitor.getMetrics(request, callOptions(context)),
    listExecutions: (request, context) => monitor.listExecutions(request, callOptions(context)),
    getExecution: (request, context) => monitor.getExecution(request, callOptions(context)),
    recordFeedback: (request, context) =>
      monitor.recordFeedback(request, { ...callOptions(context), metadata: new CallMetadata({ [CALLER_METADATA]: callerOf(context)?.name ?? '' }) }),
    getPromptVersionStats: (request, context) => monitor.getPromptVersionStats(request, callOptions(context)),
    listAlerts: (request, context) => monitor.listAlerts(request, callOptions(context)),
    getSystemHealth: (request, context) => monitor.getSystemHealth(request, callOptions(context)),
    async *watchSystemHealth(request, context) {
      yield* monitor.watchSystemHealth(request, callOptions(context));
    },
  };
}
