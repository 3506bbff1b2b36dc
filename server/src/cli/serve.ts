import { parseArgs } from 'node:util';
import { parseCommandLine, parseServiceList, runHost, serviceNames, type ServiceModule, type ServiceName } from '@elexirion/kit';
import { agentService } from '@elexirion/agent';
import { executorService } from '@elexirion/executor';
import { gatewayService } from '@elexirion/gateway';
import { monitorService } from '@elexirion/monitor';
import { providerService } from '@elexirion/provider';
import { UsageError } from './args.js';

// `elexirion serve`: one process hosting any set of services (the Mimir `-target` model). Loaded
// only for serving, so client commands do not pay for importing four services.

const modules: Record<ServiceName, ServiceModule<ServiceName, any>> = {
  gateway: gatewayService,
  agent: agentService,
  executor: executorService,
  provider: providerService,
  monitor: monitorService,
};

export const serveUsage = `serve [--services ${serviceNames.join(',')}|all] [--help]`;

const options = { services: { type: 'string', short: 's' }, help: { type: 'boolean', short: 'h' } } as const;

/** Runs the services `args` name (ELEXIRION_SERVICES, or all, when none); returns once they run. */
export async function serve(args: string[]): Promise<void> {
  let values: { services?: string; help?: boolean };
  try {
    ({ values } = parseArgs({ args, options, strict: true, allowPositionals: false }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) {
    // The kit's help lists the environment every hosted service reads; it exits 0.
    parseCommandLine(
      {
        name: 'elexirion',
        usage: serveUsage,
        summary:
          'Runs the listed Elexirion services in this one process (default: all, or ELEXIRION_SERVICES). Services hosted together call each other in-process; the others are reached over gRPC at <NAME>_ADDRESS. The process listens on the ports of its outermost service (the gateway when it is hosted). SIGTERM drains it. The older form without `serve` (elexirion --services LIST) still works.',
        options: { services: { type: 'string', short: 's' } },
        details: `Options:\n  -s, --services LIST   services to host, comma-separated: ${serviceNames.join(', ')}, or all\n  -h, --help            this help`,
        services: Object.values(modules),
      },
      ['--help'],
    );
  }
  let selected: ServiceName[];
  try {
    selected = parseServiceList(values.services ?? process.env.ELEXIRION_SERVICES ?? 'all');
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  await runHost(selected.map((name) => modules[name]));
}
