import type { TsProtoServiceDefinition } from 'nice-grpc';
import { AgentDefinition } from '../generated/elexirion/v1/agent.js';
import { ExecutorDefinition } from '../generated/elexirion/v1/executor.js';
import { GatewayDefinition } from '../generated/elexirion/v1/gateway.js';
import { MonitorDefinition } from '../generated/elexirion/v1/monitor.js';
import { ProviderDefinition } from '../generated/elexirion/v1/provider.js';

interface CatalogEntry {
  definition: TsProtoServiceDefinition;
  grpcPort: number;
  httpPort: number;
  /** The services it calls: they are created before it in a process that hosts both. */
  calls: readonly string[];
}

/**
 * Every service Elexirion has: its contract, its default ports, and the services it calls.
 * Ports are overridable with `<NAME>_GRPC_PORT` / `<NAME>_HTTP_PORT`; `<NAME>_ADDRESS` says where
 * a remote one is. Adding a service is one entry here: the order a process creates the services
 * it hosts in, and the ports it listens on, follow from `calls`.
 */
export const serviceCatalog = {
  // The executor too: the gateway's way around an overloaded agent (the design's bypass); the
  // provider for Complete and ListModels; the monitor for its calls, which the gateway exposes.
  gateway: { definition: GatewayDefinition, grpcPort: 50051, httpPort: 8080, calls: ['agent', 'executor', 'provider', 'monitor'] },
  // The provider too: the classifier route's one LLM call.
  agent: { definition: AgentDefinition, grpcPort: 50052, httpPort: 8082, calls: ['executor', 'provider'] },
  executor: { definition: ExecutorDefinition, grpcPort: 50053, httpPort: 8083, calls: ['provider'] },
  provider: { definition: ProviderDefinition, grpcPort: 50054, httpPort: 8084, calls: [] },
  // Reads the events stream and KV; checks the other services' health by their addresses; the
  // executor for the prompt registry, whose guarded rollouts it promotes or rolls back.
  monitor: { definition: MonitorDefinition, grpcPort: 50055, httpPort: 8085, calls: ['executor'] },
} as const satisfies Record<string, CatalogEntry>;

export type ServiceName = keyof typeof serviceCatalog;
export type ServiceDefinitionOf<N extends ServiceName> = (typeof serviceCatalog)[N]['definition'];

/** A pipeline name: a file stem in the pipelines folder, so no name can escape it. */
export const PIPELINE_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/;

/**
 * A run id (the executor's) and a job id (the agent's, which is its run's id): one NATS subject
 * token and one KV key, so checkpoints, job records and job events can all be keyed by it.
 */
export const RUN_ID_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;
export const RUN_ID_DESCRIPTION = '1-128 characters of A-Z a-z 0-9 _ - (a UUID)';

/**
 * The agent's route table is `routes.yaml` in the pipelines folder (one folder to edit and to
 * deploy), so no pipeline may have this name.
 */
export const ROUTE_TABLE_NAME = 'routes';

export function isServiceName(value: string): value is ServiceName {
  return Object.hasOwn(serviceCatalog, value);
}

/** The services `name` calls. */
export function callsOf(name: ServiceName): readonly ServiceName[] {
  return serviceCatalog[name].calls as readonly ServiceName[];
}

/**
 * `names` with every service after the services it calls (catalog order among equals); throws
 * naming the services when `calls` has a cycle or names something the catalog does not have.
 */
export function hostingOrder(names: readonly ServiceName[]): ServiceName[] {
  const wanted = new Set(names);
  const order: ServiceName[] = [];
  const placed = new Set<ServiceName>();
  const visit = (name: ServiceName, path: ServiceName[]) => {
    if (placed.has(name)) return;
    if (path.includes(name)) throw new Error(`the service catalog has a cycle: ${[...path, name].join(' -> ')}`);
    for (const callee of serviceCatalog[name].calls) {
      if (!isServiceName(callee)) throw new Error(`service "${name}" calls "${callee}", which the catalog does not have`);
      visit(callee, [...path, name]);
    }
    placed.add(name);
    if (wanted.has(name)) order.push(name);
  };
  for (const name of Object.keys(serviceCatalog) as ServiceName[]) visit(name, []);
  return order;
}

/** Every service, each after the services it calls. */
export const serviceNames: readonly ServiceName[] = hostingOrder(Object.keys(serviceCatalog) as ServiceName[]);

/**
 * The service whose ports a process hosting `names` listens on: the outermost one, that no other
 * hosted service calls (the gateway when it is hosted; the provider when hosted alone).
 */
export function primaryService(names: readonly ServiceName[]): ServiceName {
  const ordered = hostingOrder(names);
  const called = new Set(ordered.flatMap((name) => callsOf(name)));
  const outermost = ordered.filter((name) => !called.has(name));
  return outermost.at(-1) ?? ordered.at(-1)!;
}

/** Parses "gateway,agent" or "all" into hosting order; throws naming the unknown entry. */
export function parseServiceList(text: string): ServiceName[] {
  const wanted = text
    .split(',')
    .map((part) => part.trim())
    .filter(Boolean);
  if (wanted.length === 0) throw new Error('the service list is empty');
  if (wanted.includes('all')) return [...serviceNames];
  for (const name of wanted) {
    if (!isServiceName(name)) {
      throw new Error(`unknown service "${name}" (known: ${serviceNames.join(', ')}, all)`);
    }
  }
  return hostingOrder(wanted as ServiceName[]);
}
