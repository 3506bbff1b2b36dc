import type { MonitorArea, MonitorContext } from '../monitor-area.js';
import { unimplemented } from '../unimplemented.js';

/** System health (healthy / degraded / critical), its watch stream, and the recovery actions. */
export async function healthArea(_context: MonitorContext): Promise<MonitorArea<'getSystemHealth' | 'watchSystemHealth'>> {
  return {
    implementation: {
      getSystemHealth: async () => unimplemented('GetSystemHealth'),
      // eslint-disable-next-line require-yield
      watchSystemHealth: async function* () {
        unimplemented('WatchSystemHealth');
      },
    },
    close: async () => {},
  };
}
