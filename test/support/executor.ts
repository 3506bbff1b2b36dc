import { createChannel, createClientFactory, type Channel } from 'nice-grpc';
import { deadlineMiddleware } from 'nice-grpc-client-middleware-deadline';
import { deadlinePropagationMiddleware, proto } from '@elexirion/kit';
import { freePort } from './ports.js';
import { spawnNode, waitServing, type Spawned } from './processes.js';

export interface ExecutorUnderTest {
  process: Spawned;
  grpcPort: number;
  client: ReturnType<typeof executorClient>['client'];
  stop(): Promise<void>;
}

export function executorClient(port: number): { client: ReturnType<typeof createExecutorClient>; channel: Channel } {
  const channel = createChannel(`127.0.0.1:${port}`);
  return { client: createExecutorClient(channel), channel };
}

function createExecutorClient(channel: Channel) {
  return createClientFactory().use(deadlineMiddleware).use(deadlinePropagationMiddleware).create(proto.ExecutorDefinition, channel);
}

/** The executor service as a real process, calling the provider at `providerPort`. */
export async function startExecutor(options: { providerPort: number; natsUrl: string; env?: NodeJS.ProcessEnv; grpcPort?: number }): Promise<ExecutorUnderTest> {
  const grpcPort = options.grpcPort ?? (await freePort());
  const spawned = spawnNode('executor', 'services/executor/dist/main.js', {
    BIND_HOST: '127.0.0.1',
    EXECUTOR_GRPC_PORT: String(grpcPort),
    EXECUTOR_HTTP_PORT: String(await freePort()),
    PROVIDER_ADDRESS: `dns:///127.0.0.1:${options.providerPort}`,
    NATS_URL: options.natsUrl,
    LOG_LEVEL: 'info',
    ...options.env,
  });
  await waitServing(grpcPort, 'elexirion.v1.Executor', spawned);
  const { client, channel } = executorClient(grpcPort);
  return {
    process: spawned,
    grpcPort,
    client,
    async stop() {
      channel.close();
      await spawned.stop();
    },
  };
}

/** Waits until the executor says its NATS state (checkpoints, prompt registry) is attached. */
export async function waitForState(executor: ExecutorUnderTest, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!executor.process.output().includes('executor state attached to NATS')) {
    if (Date.now() > until) throw new Error(`executor state never attached:\n${executor.process.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
