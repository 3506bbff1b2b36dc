import { AgentDefinition } from './generated/elexirion/v1/agent.js';
import { ExecutorDefinition } from './generated/elexirion/v1/executor.js';
import { GatewayDefinition } from './generated/elexirion/v1/gateway.js';
import { ProviderDefinition } from './generated/elexirion/v1/provider.js';

/**
 * Every service Elexirion has, with its contract and default ports. Ports are overridable with
 * `<NAME>_GRPC_PORT` / `<NAME>_HTTP_PORT`; `<NAME>_ADDRESS` says where a remote one is.
 * Order is dependency order: a service only calls services listed before it.
 */
export const serviceCatalog = {
  provider: { definition: ProviderDefinition, grpcPort: 50054, httpPort: 8084 },
  executor: { definition: ExecutorDefinition, grpcPort: 50053, httpPort: 8083 },
  agent: { definition: AgentDefinition, grpcPort: 50052, httpPort: 8082 },
  gateway: { definition: GatewayDefinition, grpcPort: 50051, httpPort: 8080 },
} as const;

export type ServiceName = keyof typeof serviceCatalog;
export type ServiceDefinitionOf<N extends ServiceName> = (typeof serviceCatalog)[N]['definition'];

/** A pipeline name: a file stem in the pipelines folder, so no name can escape it. */
export const PIPELINE_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/;

export const serviceNames = Object.keys(serviceCatalog) as ServiceName[];

export function isServiceName(value: string): value is ServiceName {
  return Object.hasOwn(serviceCatalog, value);
}

/** Parses "gateway,agent" or "all" into catalog order; throws naming the unknown entry. */
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
  return serviceNames.filter((name) => wanted.includes(name));
}
