#!/usr/bin/env node
// One process hosting any set of services (the Mimir `-target` model):
//   elexirion --services gateway,agent      or   ELEXIRION_SERVICES=all elexirion
// Services hosted together call each other in-process; the rest over gRPC at <NAME>_ADDRESS.
import { parseArgs } from 'node:util';
import { parseServiceList, runHost, type ServiceModule, type ServiceName } from '@elexirion/kit';
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

let selected: ServiceName[];
try {
  const { values } = parseArgs({ options: { services: { type: 'string', short: 's' } }, strict: true });
  selected = parseServiceList(values.services ?? process.env.ELEXIRION_SERVICES ?? 'all');
} catch (error) {
  console.error(`elexirion: ${(error as Error).message}\nusage: elexirion [--services gateway,agent,executor,provider|all]`);
  process.exit(64); // EX_USAGE
}

await runHost(selected.map((name) => modules[name]));
