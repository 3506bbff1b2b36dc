import { freePort } from './ports.js';
import { onFreshPorts, spawnNode, waitServing, type Spawned } from './processes.js';

export interface MonitorProcess {
  process: Spawned;
  grpcPort: number;
  httpPort: number;
}

/**
 * A monitor process (`services/monitor`, its four areas) on free loopback ports, serving, on the
 * NATS at `natsUrl`; `env` adds to (or overrides) what it is given. Again on fresh ports when
 * another process took one first. The caller stops it (`process.stop()`).
 */
export async function startMonitorProcess(natsUrl: string, env: NodeJS.ProcessEnv = {}, name = 'monitor'): Promise<MonitorProcess> {
  return onFreshPorts(async () => {
    const grpcPort = await freePort();
    const httpPort = await freePort();
    const process = spawnNode(name, 'services/monitor/dist/main.js', {
      BIND_HOST: '127.0.0.1',
      NATS_URL: natsUrl,
      MONITOR_GRPC_PORT: String(grpcPort),
      MONITOR_HTTP_PORT: String(httpPort),
      ...env,
    });
    try {
      await waitServing(grpcPort, 'elexirion.v1.Monitor', process);
    } catch (error) {
      await process.stop();
      throw error;
    }
    return { process, grpcPort, httpPort };
  });
}
