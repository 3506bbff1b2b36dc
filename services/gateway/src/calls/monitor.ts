import { CALLER_METADATA, CallMetadata, callOptions, isServiceUnreachable, ServerError, Status, type proto } from '@elexirion/kit';
import { callerOf } from '../caller.js';
import type { GatewayDeps } from './gateway-deps.js';


type MonitorCalls = Pick<
  proto.GatewayServiceImplementation,
  'getMetrics' | 'listExecutions' | 'getExecution' | 'recordFeedback' | 'getPromptVersionStats' | 'listAlerts' | 'getSystemHealth' | 'watchSystemHealth'
>;

/**
 * What a caller is told when the monitor is down: which part of the API is out and that the rest
 * is not (chat, pipelines and jobs do not depend on the monitor). The channel's own text, with
 * the monitor's address, goes to the log only (the kit's client policy logs it).
 */
export function monitorUnreachable(method: string): ServerError {
  return new ServerError(Status.UNAVAILABLE, `${method}: the monitor cannot be reached (monitoring calls are unavailable until it is back; the rest of the gateway works)`);
}

/** `error`, or the clear UNAVAILABLE when it says the monitor could not be reached. */
function translated(method: string, error: unknown): unknown {
  return isServiceUnreachable(error) ? monitorUnreachable(method) : error;
}

/**
 * The monitor's calls, which the gateway exposes (with keys, scopes and limits) and forwards as
 * they are: the monitor checks what they ask. Deadline and cancellation go along.
 */
export function monitorCalls(deps: GatewayDeps): MonitorCalls {
  const { monitor } = deps;
  async function forward<T>(method: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      throw translated(method, error);
    }
  }
  return {
    getMetrics: (request, context) => forward('GetMetrics', () => monitor.getMetrics(request, callOptions(context))),
    listExecutions: (request, context) => forward('ListExecutions', () => monitor.listExecutions(request, callOptions(context))),
    getExecution: (request, context) => forward('GetExecution', () => monitor.getExecution(request, callOptions(context))),
    recordFeedback: (request, context) =>
      forward('RecordFeedback', () =>
        monitor.recordFeedback(request, { ...callOptions(context), metadata: new CallMetadata({ [CALLER_METADATA]: callerOf(context)?.name ?? '' }) }),
      ),
    getPromptVersionStats: (request, context) => forward('GetPromptVersionStats', () => monitor.getPromptVersionStats(request, callOptions(context))),
    listAlerts: (request, context) => forward('ListAlerts', () => monitor.listAlerts(request, callOptions(context))),
    getSystemHealth: (request, context) => forward('GetSystemHealth', () => monitor.getSystemHealth(request, callOptions(context))),
    async *watchSystemHealth(request, context) {
      try {
        yield* monitor.watchSystemHealth(request, callOptions(context));
      } catch (error) {
        throw translated('WatchSystemHealth', error);
      }
    },
  };
}
