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
  /** Per service: its last answer (or what the stored health said before one), and the checks in a row since then that got none. */
  readonly #answers = new Map<string, { last: ServiceCheck; missed: number }>();
  /** When this observer was made: the start-up grace counts from it. */
  readonly #startedAt = Date.now();
  /** The metrics consumer's backlog as the metrics area last read it; undefined before it exists. */
  readonly #consumerLag: () => number | undefined;

  constructor(context: MonitorContext, consumerLag: () => number | undefined) {
    this.#context = context;
    this.#consumerLag = consumerLag;
  }

  /**
   * `stored`: the services as the health record last said (any replica's): the starting point for
   * a service this process has not heard from yet, so a replica starting late does not flip it.
   */
  async observe(
    breakers: Record<string, BreakerObservation>,
    agentRefusals: number[],
    criticalAlerts: HealthObservations['criticalAlerts'],
    now: number,
    stored: Readonly<Record<string, ServiceCheck>> = {},
  ): Promise<HealthObservations> {
    const names = this.#context.config.MONITOR_HEALTH_SERVICES;
    const checks = await Promise.all(names.map((name) => this.#check(name, stored[name])));
    const consumerLag = this.#consumerLag();
    return { now, services: Object.fromEntries(names.map((name, index) => [name, checks[index]!])), breakers, agentRefusals, consumerLag, criticalAlerts };
  }

  close(): void {
    for (const { channel } of this.#channels.values()) channel.close();
    this.#channels.clear();
  }

  /** The service's grpc.health.v1 answer at its address; a service hosted in this process serves while the process does. */
  async #check(name: keyof typeof serviceCatalog, stored: ServiceCheck | undefined): Promise<ServiceCheck> {
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
      // Its last answer (or, before any, what the stored health said) holds until
      // MONITOR_HEALTH_UNREACHABLE_AFTER checks in a row get none. Never heard of: UNKNOWN during
      // the start-up grace, UNREACHABLE after it.
      let known = this.#answers.get(name);
      if (!known) {
        const recorded = stored === 'UNKNOWN' ? undefined : stored;
        if (!recorded) return Date.now() - this.#startedAt < config.MONITOR_HEALTH_STARTUP_GRACE_MS ? 'UNKNOWN' : 'UNREACHABLE';
        known = { last: recorded, missed: 0 };
        this.#answers.set(name, known);
      }
      known.missed += 1;
      return known.missed >= config.MONITOR_HEALTH_UNREACHABLE_AFTER ? 'UNREACHABLE' : known.last;
    }
  }
}
