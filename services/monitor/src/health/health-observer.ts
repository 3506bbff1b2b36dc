import { createChannel, createClient, type Channel, type Client } from 'nice-grpc';
import { HealthDefinition } from 'nice-grpc-server-health';
import { serviceCatalog } from '@elexirion/kit';
import type { MonitorContext } from '../monitor-area.js';
import type { BreakerObservation, HealthObservations, ServiceCheck } from './health-rules.js';

/** grpc.health.v1 HealthCheckResponse.ServingStatus.SERVING (the enum is not exported by the package's entry). */
const SERVING = 1;

/** Gathers what the health rules look at: the services' health checks and the consumer lag. */
export class HealthObserver {
  readonly #context: MonitorContext;
  /** One channel and health client per address, kept across checks (a channel reconnects by itself). */
  readonly #channels = new Map<string, { channel: Channel; health: Client<typeof HealthDefinition> }>();
  /** Per service: its last answer, and the checks in a row since then that got none. */
  readonly #answers = new Map<string, { last: 'SERVING' | 'NOT_SERVING'; missed: number }>();
  /** The metrics consumer's backlog as the metrics area last read it; undefined before it exists. */
  readonly #consumerLag: () => number | undefined;

  constructor(context: MonitorContext, consumerLag: () => number | undefined) {
    this.#context = context;
    this.#consumerLag = consumerLag;
  }

  async observe(breakers: Record<string, BreakerObservation>, agentRefusals: number[], criticalAlerts: HealthObservations['criticalAlerts'], now: number): Promise<HealthObservations> {
    const names = this.#context.config.MONITOR_HEALTH_SERVICES;
    const checks = await Promise.all(names.map((name) => this.#check(name)));
    const consumerLag = this.#consumerLag();
    return { now, services: Object.fromEntries(names.map((name, index) => [name, checks[index]!])), breakers, agentRefusals, consumerLag, criticalAlerts };
  }

  close(): void {
    for (const { channel } of this.#channels.values()) channel.close();
    this.#channels.clear();
  }

  /** The service's grpc.health.v1 answer at its address; a service hosted in this process serves while the process does. */
  async #check(name: keyof typeof serviceCatalog): Promise<ServiceCheck> {
    const { clients, host, draining, config } = this.#context;
    if (clients.isLocal(name)) return draining.aborted ? 'NOT_SERVING' : 'SERVING';
    const address = host.addresses[name];
    let connection = this.#channels.get(address);
    if (!connection) {
      const channel = createChannel(address);
      connection = { channel, health: createClient(HealthDefinition, channel) };
      this.#channels.set(address, connection);
    }
    try {
      const answer = await connection.health.check(
        { service: serviceCatalog[name].definition.fullName },
        { signal: AbortSignal.timeout(config.MONITOR_HEALTH_CHECK_TIMEOUT_MS) },
      );
      const last = answer.status === SERVING ? 'SERVING' : 'NOT_SERVING';
      this.#answers.set(name, { last, missed: 0 });
      return last;
    } catch {
      // Never answered: unreachable at once. Answered before: its last answer holds until
      // MONITOR_HEALTH_UNREACHABLE_AFTER checks in a row get none.
      const known = this.#answers.get(name);
      if (!known) return 'UNREACHABLE';
      known.missed += 1;
      return known.missed >= config.MONITOR_HEALTH_UNREACHABLE_AFTER ? 'UNREACHABLE' : known.last;
    }
  }
}
