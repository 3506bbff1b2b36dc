#!/usr/bin/env node
// One process hosting any set of services (the Mimir `-target` model):
//   elexirion --services gateway,agent      or   ELEXIRION_SERVICES=all elexirion
// Services hosted together call each other in-process; the rest over gRPC at <NAME>_ADDRESS.
import { parseCommandLine, parseServiceList, runHost, serviceNames, type ServiceModule, type ServiceName } from '@elexirion/kit';
import { agentService } from '@elexirion/agent';
import { executorService } from '@elexirion/executor';
import { gatewayService } from '@elexirion/gateway';
import { providerService } from '@elexirion/provider';

const modules: Record<ServiceName, ServiceModule<ServiceName, any>> = {
  gateway: gatewayService,
  agent: agentService,
  executor: executorService,
  provider: providerService,
};

const usage = `[--services ${serviceNames.join(',')}|all] [--help]`;
const { values } = parseCommandLine({
  name: 'elexirion',
  usage,
  summary:
    'Runs the listed Elexirion services in this one process (default: all, or ELEXIRION_SERVICES). Services hosted together call each other in-process; the others are reached over gRPC at <NAME>_ADDRESS. The process listens on the ports of its outermost service (the gateway when it is hosted). SIGTERM drains it.',
  options: { services: { type: 'string', short: 's' } },
  details: `Options:\n  -s, --services LIST   services to host, comma-separated: ${serviceNames.join(', ')}, or all\n  -h, --help            this help`,
  services: Object.values(modules),
});

let selected: ServiceName[];
try {
  selected = parseServiceList(values.services ?? process.env.ELEXIRION_SERVICES ?? 'all');
} catch (error) {
  console.error(`elexirion: ${(error as Error).message}\nusage: elexirion ${usage}`);
  process.exit(64); // EX_USAGE
}

await runHost(selected.map((name) => modules[name]));
