import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectService, proto, type ServiceClient } from '@elexirion/kit';
import { startExecutor, type ExecutorUnderTest } from './executor.js';
import { startNats, type NatsServer } from './nats.js';
import { freePort } from './ports.js';
import { onFreshPorts, spawnNode, waitServing, type Spawned } from './processes.js';
import { startProvider, type ProviderUnderTest } from './provider.js';
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

/** A client with WatchJob: the agent's, or the gateway's (the same call, the same messages). */
export interface JobWatcher {
  watchJob(request: { jobId: string; afterSequence: number }, options: { signal: AbortSignal }): AsyncIterable<proto.WatchJobResponse>;
}

/**
 * Watches a job's events after `afterSequence`; `stopAfter` drops the stream (as a client going
 * away does) once it says so. `ended`: the stream ended by itself (the job ended).
 */
export async function watchJobEvents(
  client: JobWatcher,
  jobId: string,
  afterSequence: number,
  stopAfter?: (seen: proto.JobEvent[]) => boolean,
): Promise<{ events: proto.JobEvent[]; ended: boolean }> {
  const controller = new AbortController();
  const events: proto.JobEvent[] = [];
  try {
    for await (const { event } of client.watchJob({ jobId, afterSequence }, { signal: controller.signal })) {
      events.push(event!);
      if (stopAfter?.(events)) {
        controller.abort();
        return { events, ended: false };
      }
    }
  } catch (error) {
    if (!controller.signal.aborted) throw error;
    return { events, ended: false };
  }
  return { events, ended: true };
}

function eventKind(event: proto.JobEvent): string {
  if (event.statusChanged) return `status:${proto.jobStatusToJSON(event.statusChanged.status)}`;
  if (event.stepStarted) return `started:${event.stepStarted.step}`;
  if (event.textDelta) return `delta:${event.textDelta.step}`;
  if (event.stepFinished) return `finished:${event.stepFinished.name}`;
  return 'failed';
}

/** The events' kinds, with runs of text deltas of one step collapsed into one (how many there are depends on timing). */
export function jobEventShape(events: proto.JobEvent[]): string[] {
  return events.map(eventKind).filter((item, index, all) => !(item.startsWith('delta:') && all[index - 1] === item));
}

/** NATS, a provider (fake upstreams), an executor on its own pipelines folder, and agent replicas: what the jobs suites run against. */
export interface JobsStack {
  nats: NatsServer;
  provider: ProviderUnderTest;
  executor: ExecutorUnderTest;
  agents: AgentUnderTest[];
  /** The executor's pipelines folder (a temporary one, removed by stop). */
  pipelines: string;
  /** Stops every process and removes the folder. */
  stop(): Promise<void>;
}

/**
 * Starts a jobs stack: `pipelines` (name -> YAML) written to a fresh folder, and one agent
 * replica per name in `agents`, each with `agentEnv` (telemetry events off everywhere).
 */
export async function startJobsStack(options: {
  pipelines: Record<string, string>;
  agents: string[];
  agentEnv?: NodeJS.ProcessEnv;
  provider?: Parameters<typeof startProvider>[0];
}): Promise<JobsStack> {
  const pipelines = mkdtempSync(join(tmpdir(), 'elexirion-jobs-pipelines-'));
  for (const [name, text] of Object.entries(options.pipelines)) writeFileSync(join(pipelines, `${name}.yaml`), text);
  const nats = await startNats();
  const provider = await startProvider(options.provider);
  const executor = await startExecutor({ providerPort: provider.grpcPort, natsUrl: nats.url, env: { PIPELINES_DIR: pipelines, TELEMETRY_EVENTS: 'false' } });
  const agents = await Promise.all(options.agents.map((name) => startAgent({ name, executorPort: executor.grpcPort, natsUrl: nats.url, env: options.agentEnv })));
  return {
    nats,
    provider,
    executor,
    agents,
    pipelines,
    async stop() {
      for (const agent of agents) await agent.stop();
      await executor.stop();
      await provider.stop();
      await nats.stop();
      rmSync(pipelines, { recursive: true, force: true });
    },
  };
}
