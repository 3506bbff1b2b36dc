import { JetStreamApiCodes, JetStreamApiError, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
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
  #manager: Promise<JetStreamManager> | undefined;

  constructor(context: MonitorContext) {
    this.#context = context;
  }

  attach(connection: NatsConnection): void {
    this.#manager = jetstreamManager(connection);
  }

  async observe(breakers: Record<string, BreakerObservation>, agentRefusals: number[], criticalAlerts: HealthObservations['criticalAlerts'], now: number): Promise<HealthObservations> {
    const names = this.#context.config.MONITOR_HEALTH_SERVICES;
    const [checks, consumerLag] = await Promise.all([Promise.all(names.map((name) => this.#check(name))), this.#consumerLag()]);
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
      return answer.status === SERVING ? 'SERVING' : 'NOT_SERVING';
    } catch {
      return 'UNREACHABLE';
    }
  }

  /** Events in the stream the metrics consumer has not been handed yet; undefined when it does not exist. */
  async #consumerLag(): Promise<number | undefined> {
    if (!this.#manager) return undefined;
    try {
      // The metrics area's durable consumer of the events stream (MONITOR_METRICS_CONSUMER).
      const info = await (await this.#manager).consumers.info(this.#context.host.TELEMETRY_STREAM, this.#context.config.MONITOR_METRICS_CONSUMER);
      // Not yet delivered, plus delivered and not yet acknowledged: both are still to be processed.
      return info.num_pending + info.num_ack_pending;
    } catch (error) {
      if (error instanceof JetStreamApiError && (error.code === JetStreamApiCodes.ConsumerNotFound || error.code === JetStreamApiCodes.StreamNotFound)) return undefined;
      throw error;
    }
  }
}
