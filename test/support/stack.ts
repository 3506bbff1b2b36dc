import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createChannel, createClient, type Channel } from 'nice-grpc';
import { proto } from '@elexirion/kit';
import { freePort } from './ports.js';
import { onFreshPorts, repoRoot, spawnNode, waitServing, type Spawned } from './processes.js';

export type StackShape = 'one-process-per-service' | 'all-in-one';

export interface Stack {
  shape: StackShape;
  env: NodeJS.ProcessEnv;
  ports: { gatewayGrpc: number; gatewayHttp: number; agent: number; executor: number; provider: number; monitor: number; monitorHttp: number };
  processes: Record<string, Spawned>;
  gateway: ReturnType<typeof createClient<typeof proto.GatewayDefinition>>;
  channel: Channel;
  stop(): Promise<void>;
}

const SERVICE_ORDER = ['provider', 'executor', 'agent', 'monitor', 'gateway'] as const;

/** The monitor came with issue 14: a baseline checkout from before it (the benchmark's) has none. */
function hasMonitor(root: string): boolean {
  return existsSync(join(root, 'services', 'monitor'));
}

/**
 * Starts the services (the monitor too, when the checkout has it) as real processes (one each, or one hosting all) on free ports, from
 * this repository's build, or from the build of another checkout at `root`; again on fresh ports
 * when another process took one first.
 */
export async function startStack(shape: StackShape, natsUrl: string, extraEnv: NodeJS.ProcessEnv = {}, root = repoRoot, options: StackOptions = {}): Promise<Stack> {
  return onFreshPorts(() => startStackOnce(shape, natsUrl, extraEnv, root, options));
}

export interface StackOptions {
  /**
   * Whether the stack runs the monitor (default: when the checkout has one): a process of its own
   * in the split shape, one of the services of the all-in-one process. A test that runs monitors
   * of its own (replicas it kills, other settings) says false and points the gateway at them with
   * MONITOR_ADDRESS; the benchmark says false so that its chain is the four request-path services.
   */
  monitor?: boolean;
}

async function startStackOnce(shape: StackShape, natsUrl: string, extraEnv: NodeJS.ProcessEnv, root: string, options: StackOptions): Promise<Stack> {
  const ports = {
    gatewayGrpc: await freePort(),
    gatewayHttp: await freePort(),
    agent: await freePort(),
    executor: await freePort(),
    provider: await freePort(),
    monitor: await freePort(),
    monitorHttp: await freePort(),
  };
  const env: NodeJS.ProcessEnv = {
    BIND_HOST: '127.0.0.1',
    LOG_LEVEL: 'info',
    NATS_URL: natsUrl,
    GATEWAY_GRPC_PORT: String(ports.gatewayGrpc),
    GATEWAY_HTTP_PORT: String(ports.gatewayHttp),
    AGENT_GRPC_PORT: String(ports.agent),
    AGENT_HTTP_PORT: String(await freePort()),
    EXECUTOR_GRPC_PORT: String(ports.executor),
    EXECUTOR_HTTP_PORT: String(await freePort()),
    PROVIDER_GRPC_PORT: String(ports.provider),
    PROVIDER_HTTP_PORT: String(await freePort()),
    // Where the monitor listens, and so where the gateway finds it (MONITOR_ADDRESS follows).
    MONITOR_GRPC_PORT: String(ports.monitor),
    MONITOR_HTTP_PORT: String(ports.monitorHttp),
    // The gateway asks for API keys unless told otherwise; tests of keys turn them on.
    GATEWAY_AUTH: 'off',
    ...extraEnv,
  };
  const processes: Record<string, Spawned> = {};
  try {
    if (shape === 'all-in-one') {
      // Without the monitor: the four request-path services (`all` includes the monitor).
      const services = options.monitor === false ? 'gateway,agent,executor,provider' : 'all';
      processes.all = spawnNode('elexirion (all)', 'server/dist/main.js', env, ['--services', services], root);
      await waitServing(ports.gatewayGrpc, 'elexirion.v1.Gateway', processes.all);
    } else {
      const withMonitor = options.monitor ?? hasMonitor(root);
      const services = SERVICE_ORDER.filter((name) => name !== 'monitor' || withMonitor);
      for (const name of services) processes[name] = spawnNode(name, `services/${name}/dist/main.js`, env, [], root);
      const portOf = { provider: ports.provider, executor: ports.executor, agent: ports.agent, monitor: ports.monitor, gateway: ports.gatewayGrpc };
      for (const name of services) {
        const fullName = `elexirion.v1.${name[0]!.toUpperCase()}${name.slice(1)}`;
        await waitServing(portOf[name], fullName, processes[name]);
      }
    }
  } catch (error) {
    await Promise.all(Object.values(processes).map((spawned) => spawned.stop()));
    throw error;
  }
  const channel = createChannel(`127.0.0.1:${ports.gatewayGrpc}`);
  const gateway = createClient(proto.GatewayDefinition, channel);
  return {
    shape,
    env,
    ports,
    processes,
    gateway,
    channel,
    async stop() {
      channel.close();
      await Promise.all(Object.values(processes).map((spawned) => spawned.stop()));
    },
  };
}

/** Everything the stack's processes printed, for a failing test's message. */
export function stackOutput(stack: Stack): string {
  return Object.entries(stack.processes)
    .map(([name, spawned]) => `--- ${name}\n${spawned.output()}`)
    .join('\n');
}
