import type { proto } from '@elexirion/kit';
import type { GatewayDeps } from './gateway-deps.js';
import { unimplemented } from './unimplemented.js';

/** SubmitJob, GetJob, WatchJob, CancelJob, ListJobs: the agent's jobs, scoped to the caller's key. */
export function jobCalls(_deps: GatewayDeps): Pick<proto.GatewayServiceImplementation, 'submitJob' | 'getJob' | 'watchJob' | 'cancelJob' | 'listJobs'> {
  return {
    async submitJob() {
      unimplemented('SubmitJob');
    },
    async getJob() {
      unimplemented('GetJob');
    },
    async *watchJob() {
      unimplemented('WatchJob');
    },
    async cancelJob() {
      unimplemented('CancelJob');
    },
    async listJobs() {
      unimplemented('ListJobs');
    },
  };
}
