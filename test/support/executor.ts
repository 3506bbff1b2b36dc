import { connectService, type ServiceClient } from '@elexirion/kit';
import { freePort } from './ports.js';
import { onFreshPorts, PortTakenError, spawnNode, waitServing, type Spawned } from './processes.js';

export interface ExecutorUnderTest {
  process: Spawned;
  grpcPort: number;
  httpPort: number;
  client: ServiceClient<'executor'>;
  stop(): Promise<void>;
}

/** The executor service as a real process, calling the provider at `providerPort`. */
export async function startExecutor(options: { providerPort: number; natsUrl: string; env?: NodeJS.ProcessEnv; grpcPort?: number }): Promise<ExecutorUnderTest> {
  const { spawned, grpcPort, httpPort } = await onFreshPorts(async () => {
    const grpcPort = options.grpcPort ?? (await freePort());
    const httpPort = await freePort();
    const spawned = spawnNode('executor', 'services/executor/dist/main.js', {
      BIND_HOST: '127.0.0.1',
      EXECUTOR_GRPC_PORT: String(grpcPort),
      EXECUTOR_HTTP_PORT: String(httpPort),
      PROVIDER_ADDRESS: `dns:///127.0.0.1:${options.providerPort}`,
      NATS_URL: options.natsUrl,
      LOG_LEVEL: 'info',
      ...options.env,
    });
    await waitServing(grpcPort, 'elexirion.v1.Executor', spawned).catch(async (error: unknown) => {
      await spawned.stop();
      // A gRPC port the caller chose is not traded for another.
      throw error instanceof PortTakenError && options.grpcPort !== undefined ? new Error(error.message) : error;
    });
    return { spawned, grpcPort, httpPort };
  });
  // The client services use between them: the deadline is enforced here and sent on.
  const { client, close } = connectService('executor', `127.0.0.1:${grpcPort}`, { caller: 'test' });
  return {
    process: spawned,
    grpcPort,
    httpPort,
    client,
    async stop() {
      close();
      await spawned.stop();
    },
  };
}

/** Waits until the executor's /readyz says its NATS state (checkpoints, prompt registry) is attached. */
export async function waitForState(executor: ExecutorUnderTest, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < until) {
    try {
      const reply = await fetch(`http://127.0.0.1:${executor.httpPort}/readyz`);
      last = await reply.text();
      if ((JSON.parse(last) as { status?: string }).status === 'serving') return;
    } catch (error) {
      last = String(error);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`executor state never attached (last /readyz: ${last}):\n${executor.process.output()}`);
}
