import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../telemetry/logger.js';
import { retry, type RetryPolicy } from '../reliability/retry.js';
import { redactSecrets } from '../secrets.js';

/** Connecting the first time (and after a connection closed for good): every second or so, for ever. */
const CONNECT_RETRY: RetryPolicy = { maxAttempts: Infinity, baseMs: 250, maxMs: 2_000 };
/** A use whose attach failed tries again on the same policy. */
const ATTACH_RETRY: RetryPolicy = { maxAttempts: Infinity, baseMs: 250, maxMs: 5_000 };

export type NatsState = 'off' | 'connecting' | 'connected' | 'reconnecting' | 'closed';

/** A service's need for NATS: what it is for, and whether it has what it needs yet. */
export interface NatsUseState {
  purpose: string;
  service: string;
  attached: boolean;
  /** Why it is not attached (the last failure), while it is not. */
  problem?: string;
}

/** What `/readyz` says of NATS. */
export interface NatsReadiness {
  state: NatsState;
  uses: NatsUseState[];
}

export type NatsStatusListener = (state: 'connected' | 'disconnected') => void;

/**
 * A service's handle on its process's NATS connection. A service that needs NATS says so with
 * `use`; it runs degraded until its attach has succeeded (and `/readyz` and the logs say so),
 * and never blocks start-up on NATS.
 */
export interface ServiceNats {
  /** The process's connection, once there is one (it reconnects by itself); undefined before. */
  readonly connection: NatsConnection | undefined;
  /** Connected right now (not before the first connect, not while reconnecting). */
  readonly connected: boolean;
  /**
   * Declares a need: `attach` runs as soon as the process is connected, and again, with
   * backoff, until it succeeds; and again on the new connection if the old one closed for good.
   * `signal` aborts when the host stops.
   */
  use(purpose: string, attach: (connection: NatsConnection, signal: AbortSignal) => Promise<void>): void;
  /** Told of every disconnect and reconnect; returns a function that stops telling. */
  onStatus(listener: NatsStatusListener): () => void;
}

interface Use extends NatsUseState {
  attach(connection: NatsConnection, signal: AbortSignal): Promise<void>;
  /** The connection this use is attached to, or being attached to. */
  connection: NatsConnection | undefined;
}

/**
 * The one NATS connection of a process, owned by its host and handed to its services. It
 * connects in the background at the first use (never blocking start-up), reconnects by itself,
 * runs each use's attach once connected, and is drained when the host stops.
 */
export class SharedNatsConnection {
  private current: NatsConnection | undefined;
  private state: NatsState = 'off';
  private readonly uses: Use[] = [];
  private readonly listeners = new Set<NatsStatusListener>();
  private readonly stopping = new AbortController();
  private connecting: Promise<void> | undefined;
  private outageLogged = false;

  constructor(private readonly options: { url: string; name: string; logger: Logger }) {}

  get connection(): NatsConnection | undefined {
    return this.current;
  }

  get connected(): boolean {
    return this.state === 'connected';
  }

  readiness(): NatsReadiness {
    return { state: this.state, uses: this.uses.map(({ purpose, service, attached, problem }) => ({ purpose, service, attached, ...(problem ? { problem } : {}) })) };
  }

  /** Whether every use has attached (true when nothing uses NATS). */
  get ready(): boolean {
    return this.uses.every((use) => use.attached);
  }

  /** Something needs NATS and does not have it now: a use not attached yet, or NATS away. */
  get degraded(): boolean {
    return this.uses.length > 0 && (!this.ready || this.state !== 'connected');
  }

  /** The handle a service gets: its uses are reported under its name. */
  forService(service: string): ServiceNats {
    const shared = this;
    return {
      get connection() {
        return shared.current;
      },
      get connected() {
        return shared.connected;
      },
      use: (purpose, attach) => this.use(service, purpose, attach),
      onStatus: (listener) => this.onStatus(listener),
    };
  }

  use(service: string, purpose: string, attach: Use['attach']): void {
    if (this.stopping.signal.aborted) return;
    const use: Use = { service, purpose, attach, attached: false, problem: 'not connected to NATS yet', connection: undefined };
    this.uses.push(use);
    if (this.current) void this.attach(use, this.current);
    else this.start();
  }

  onStatus(listener: NatsStatusListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Connects in the background (once); returns at once. */
  start(): void {
    if (this.connecting || this.stopping.signal.aborted) return;
    this.state = 'connecting';
    this.connecting = this.connectLoop().finally(() => {
      this.connecting = undefined;
    });
  }

  private async connectLoop(): Promise<void> {
    const { logger, url, name } = this.options;
    let connection: NatsConnection;
    try {
      connection = await retry(
        // noAsyncTraces: otherwise nats.js builds an Error (a stack trace) before every request, a
        // JetStream publish included, in case it fails: 3.5% of the CPU of a pipeline run with
        // checkpoints (bench:profile --pipeline). Our errors name what failed without it.
        () => connect({ servers: url, name, maxReconnectAttempts: -1, reconnectTimeWait: 1_000, noAsyncTraces: true }),
        {
          ...CONNECT_RETRY,
          signal: this.stopping.signal,
          unref: true,
          onRetry: ({ attempt, error }) => {
            if (attempt === 1) this.logOutage(`NATS unreachable: ${String(error)}; retrying`);
          },
        },
      );
    } catch {
      return; // stopped before it connected
    }
    if (this.stopping.signal.aborted) {
      await connection.close().catch(() => {});
      return;
    }
    this.current = connection;
    this.setState('connected');
    this.outageLogged = false;
    logger.info({ nats: url, uses: this.uses.map((use) => `${use.service}: ${use.purpose}`) }, 'connected to NATS');
    for (const use of this.uses) void this.attach(use, connection);
    void this.followStatus(connection);
    void connection.closed().then((error) => {
      if (this.stopping.signal.aborted || this.current !== connection) return;
      // Closed for good (not a reconnect): connect anew and attach every use again.
      logger.warn({ err: error }, 'NATS connection closed; connecting again');
      this.current = undefined;
      for (const use of this.uses) {
        use.attached = false;
        use.problem = 'the NATS connection closed';
      }
      this.setState('connecting');
      this.start();
    });
  }

  private async followStatus(connection: NatsConnection): Promise<void> {
    for await (const status of connection.status()) {
      if (this.current !== connection) return;
      if (status.type === 'disconnect') {
        this.setState('reconnecting');
        this.logOutage(`lost NATS; reconnecting (degraded meanwhile: ${this.uses.map((use) => `${use.service} ${use.purpose}`).join(', ') || 'nothing uses it'})`);
      } else if (status.type === 'reconnect') {
        this.setState('connected');
        this.outageLogged = false;
        this.options.logger.info({ nats: String(status.server) }, 'reconnected to NATS');
      }
    }
  }

  private setState(state: NatsState): void {
    const was = this.state;
    this.state = state;
    if (state === 'connected' && was !== 'connected') this.notify('connected');
    else if (state !== 'connected' && was === 'connected') this.notify('disconnected');
  }

  private notify(state: 'connected' | 'disconnected'): void {
    for (const listener of this.listeners) {
      try {
        listener(state);
      } catch (error) {
        this.options.logger.error({ err: error }, 'a NATS status listener failed');
      }
    }
  }

  private logOutage(message: string): void {
    if (this.outageLogged) return;
    this.outageLogged = true;
    this.options.logger.warn({ nats: this.options.url, degraded: this.uses.map((use) => `${use.service}: ${use.purpose}`) }, message);
  }

  private async attach(use: Use, connection: NatsConnection): Promise<void> {
    if (use.connection === connection) return;
    use.connection = connection;
    try {
      await retry(
        async () => {
          if (this.current !== connection) throw new Error('superseded by a new connection');
          await use.attach(connection, this.stopping.signal);
        },
        {
          ...ATTACH_RETRY,
          signal: this.stopping.signal,
          unref: true,
          retryable: () => this.current === connection,
          onRetry: ({ attempt, error, delayMs }) => {
            use.problem = redactSecrets(error instanceof Error ? error.message : String(error));
            const record = { service: use.service, purpose: use.purpose, attempt, retryInMs: delayMs, problem: use.problem };
            if (attempt === 1) this.options.logger.warn(record, `${use.purpose} unavailable: degraded until NATS answers; retrying`);
            else this.options.logger.debug(record, `${use.purpose} still unavailable`);
          },
        },
      );
    } catch {
      if (use.connection === connection) use.connection = undefined;
      return; // stopped, or a new connection took over
    }
    if (this.current !== connection) return;
    use.attached = true;
    delete use.problem;
    this.options.logger.info({ service: use.service, purpose: use.purpose }, `${use.purpose} attached to NATS`);
  }

  /** Stops connecting and attaching, and drains the connection within `timeoutMs`. */
  async stop(timeoutMs = 2_000): Promise<void> {
    this.stopping.abort();
    const connection = this.current;
    this.current = undefined;
    this.state = 'closed';
    // A connect still in progress (an unreachable server can take its whole timeout) is not
    // waited for: the loop closes what it gets once it sees the stop.
    if (!connection) return;
    const timer = new Promise<void>((resolve) => setTimeout(resolve, timeoutMs).unref());
    await Promise.race([connection.drain().catch(() => connection.close()), timer]);
    if (!connection.isClosed()) await connection.close().catch(() => {});
  }
}
