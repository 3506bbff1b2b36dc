import { connectService, proto, type ServiceClient } from '@elexirion/kit';
import { freePort } from './ports.js';
import { onFreshPorts, spawnNode, waitServing, type Spawned } from './processes.js';
import { eventually } from './wait.js';

export interface AgentUnderTest {
  /** AGENT_REPLICA_NAME: what its jobs' records name as their replica. */
  name: string;
  process: Spawned;
  grpcPort: number;
  httpPort: number;
  client: ServiceClient<'agent'>;
  stop(): Promise<void>;
}

/**
 * An agent replica as a real process, calling the executor at `executorPort`, with its jobs
 * attached to NATS (its /readyz says serving) before this resolves.
 */
export async function startAgent(options: { name: string; executorPort: number; natsUrl: string; env?: NodeJS.ProcessEnv }): Promise<AgentUnderTest> {
  const { spawned, grpcPort, httpPort } = await onFreshPorts(async () => {
    const grpcPort = await freePort();
    const httpPort = await freePort();
    const spawned = spawnNode(options.name, 'services/agent/dist/main.js', {
      BIND_HOST: '127.0.0.1',
      AGENT_GRPC_PORT: String(grpcPort),
      AGENT_HTTP_PORT: String(httpPort),
      AGENT_REPLICA_NAME: options.name,
      EXECUTOR_ADDRESS: `dns:///127.0.0.1:${options.executorPort}`,
      NATS_URL: options.natsUrl,
      TELEMETRY_EVENTS: 'false',
      LOG_LEVEL: 'info',
      ...options.env,
    });
    await waitServing(grpcPort, 'elexirion.v1.Agent', spawned).catch(async (error: unknown) => {
      await spawned.stop();
      throw error;
    });
    return { spawned, grpcPort, httpPort };
  });
  await eventually(`${options.name}'s jobs to attach to NATS`, async () => {
    const reply = await fetch(`http://127.0.0.1:${httpPort}/readyz`).catch(() => undefined);
    return reply && ((await reply.json()) as { status?: string }).status === 'serving' ? true : undefined;
  }, 20_000);
  const { client, close } = connectService('agent', `127.0.0.1:${grpcPort}`, { caller: 'test' });
  return {
    name: options.name,
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

/** The job once it has ended (neither queued nor running), as `agent` answers GetJob. */
export function jobEnded(agent: Pick<AgentUnderTest, 'client'>, jobId: string, timeoutMs = 30_000): Promise<proto.Job> {
  return eventually(
    `job ${jobId} to end`,
    async () => {
      const { job } = await agent.client.getJob({ jobId });
      return job && job.status !== proto.JobStatus.JOB_STATUS_QUEUED && job.status !== proto.JobStatus.JOB_STATUS_RUNNING ? job : undefined;
    },
    timeoutMs,
  );
}

/** Every event of the job from its first, to the one reporting its end (WatchJob's stream). */
export async function jobEvents(agent: Pick<AgentUnderTest, 'client'>, jobId: string): Promise<proto.JobEvent[]> {
  const events: proto.JobEvent[] = [];
  for await (const { event } of agent.client.watchJob({ jobId, afterSequence: 0 })) events.push(event!);
  return events;
}
