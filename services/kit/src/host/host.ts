import { setMaxListeners } from 'node:events';
import { createServer, type ServiceImplementation } from 'nice-grpc';
import { composeServerMiddleware, type ServerMiddleware } from 'nice-grpc-common';
import { openTelemetryServerMiddleware } from 'nice-grpc-opentelemetry';
import { HealthDefinition, HealthServiceImpl, HealthState } from 'nice-grpc-server-health';
import { ServerReflectionService } from 'nice-grpc-server-reflection';
import { pino, type DestinationStream } from 'pino';
import type { z } from 'zod';
import { callsOf, hostingOrder, primaryService, serviceCatalog, type ServiceDefinitionOf, type ServiceName } from './catalog.js';
import { ChannelPool, ServiceClients, type LocalService, type UnaryServerMiddleware } from '../rpc/clients.js';
import { ConfigError, loadHostConfig, parseEnv, type HostConfig } from './config.js';
import { createHttpServer, registerRoutes, registeredRoutes, type HttpRoutes, type HttpServerOptions } from './http.js';
import { ServerReflectionV1AlphaService, reflection } from './reflection.js';
import { SharedNatsConnection, type ServiceNats } from './shared-nats-connection.js';
import { deadlineServerInterceptor } from '../rpc/deadline.js';
import { serverCallPolicy } from '../rpc/call-policy.js';
import { rejectUndecodableRequests, withGuardedDecoding } from '../rpc/undecodable-requests.js';
import { EventPublisher, serviceEvents, type ServiceEvents } from '../telemetry/event-publisher.js';
import { createLogger, type Logger } from '../telemetry/logger.js';
import { Metrics } from '../telemetry/metrics.js';
import { initTracing, spansRecorded, traceContextServerMiddleware } from '../telemetry/tracing.js';

/** What a service gets from the host it runs in. */
export interface ServiceContext<Config> {
  name: ServiceName;
  config: Config;
  host: HostConfig;
  /** The environment the host was started with (for variables a service reads itself, such as keys). */
  env: NodeJS.ProcessEnv;
  logger: Logger;
  clients: ServiceClients;
  events: ServiceEvents;
  metrics: Metrics;
  /** The process's one NATS connection; a service that needs NATS says so with `nats.use`. */
  nats: ServiceNats;
  /**
   * Aborts when the process starts draining: calls that would otherwise never end (live streams)
   * end then, so the drain does not wait out its grace period for them.
   */
  draining: AbortSignal;
}

export interface ServiceInstance<N extends ServiceName> {
  implementation: ServiceImplementation<ServiceDefinitionOf<N>>;
  /** HTTP routes on the process's HTTP port, each an encapsulated plugin under its prefix. */
  http?: HttpRoutes[];
  /** What the service asks of the process's HTTP server (body limit, CORS, access log). */
  httpServer?: HttpServerOptions;
  /**
   * The largest request (encoded bytes) each call accepts, by the definition's method key. A
   * larger one is refused with RESOURCE_EXHAUSTED before it is decoded, and the process's gRPC
   * receive limit is the largest of these, so grpc-js refuses bigger ones from the length prefix
   * before buffering them. Unset: DEFAULT_MAX_REQUEST_BYTES for every call.
   */
  maxRequestBytes?: (methodKey: string) => number;
  /**
   * Server middleware around this service's handlers, inside the call policy (so what it throws is
   * answered and counted as any handler failure): auth, access logs. In-process calls to the
   * service run under it too.
   */
  serverMiddleware?: ServerMiddleware<any, any>;
  /**
   * `serverMiddleware` as a plain async function, for in-process unary calls (no generator frame
   * per call in flight, as the call policy's own `unary`); without it they run the generator.
   */
  unaryServerMiddleware?: UnaryServerMiddleware;
  /** Runs after in-flight calls have finished during a drain. */
  close?(): Promise<void>;
  /**
   * Why the service is serving degraded right now (a service it depends on is down and it serves
   * without it), or undefined when it is not; `/readyz` reports it.
   */
  degradation?(): string | undefined;
}

/** A service as a unit a host can run: its name, its own environment variables, its factory. */
export interface ServiceModule<N extends ServiceName = ServiceName, Config = unknown> {
  name: N;
  configSchema?: z.ZodType<Config>;
  create(context: ServiceContext<Config>): ServiceInstance<N> | Promise<ServiceInstance<N>>;
}

export function defineService<N extends ServiceName, Config>(module: ServiceModule<N, Config>): ServiceModule<N, Config> {
  return module;
}

export interface HostOptions {
  env?: NodeJS.ProcessEnv;
  /** Where logs go (stdout by default); tests capture them here. */
  logDestination?: DestinationStream;
}

/** A running process hosting one or more services. */
export interface Host {
  services: ServiceName[];
  grpcPort: number;
  httpPort: number;
  config: HostConfig;
  logger: Logger;
  metrics: Metrics;
  events: EventPublisher;
  nats: SharedNatsConnection;
  /** Every HTTP route registered (method, URL), for checks that each is documented. */
  httpRoutes(): readonly { method: string; url: string }[];
  /** Drains (NOT_SERVING, finish in-flight calls, force after the grace period) and releases everything. */
  stop(reason?: string): Promise<void>;
}

/** The gRPC receive limit for a service that states none (what every server took before). */
export const DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024;

/**
 * Starts one gRPC server (with health and reflection) and one HTTP server (metrics, health, and
 * the routes services add) for the given services, and the process's one NATS connection.
 * Services hosted together call each other in-process; the others are reached at `<NAME>_ADDRESS`.
 */
export async function startHost(modules: ServiceModule<ServiceName, any>[], options: HostOptions = {}): Promise<Host> {
  const env = options.env ?? process.env;
  if (modules.length === 0) throw new ConfigError(['no services to host']);
  const listed = modules.map((module) => module.name);
  if (new Set(listed).size !== listed.length) throw new ConfigError([`a service is listed twice: ${listed.join(', ')}`]);
  // Each service is created after the services it calls (the catalog's `calls`).
  const names = hostingOrder(listed);
  const ordered = names.map((name) => modules.find((module) => module.name === name)!);

  const { config, serviceConfigs } = loadAllConfig(ordered, env);
  const processName = names.length === 1 ? names[0]! : 'elexirion';
  const logger = createLogger({ level: config.LOG_LEVEL, name: processName, ...(options.logDestination ? { destination: options.logDestination } : {}) });
  const tracing = initTracing({
    serviceName: config.OTEL_SERVICE_NAME ?? (names.length === 1 ? `elexirion-${names[0]}` : 'elexirion'),
    otlpEndpoint: config.OTEL_EXPORTER_OTLP_ENDPOINT,
  });
  const metrics = new Metrics();
  const nats = new SharedNatsConnection({ url: config.NATS_URL, name: `elexirion-${processName}-${process.pid}`, logger });
  const events = new EventPublisher({
    enabled: config.TELEMETRY_EVENTS,
    queueMax: config.TELEMETRY_QUEUE_MAX,
    flushIntervalMs: config.TELEMETRY_FLUSH_MS,
    streamName: config.TELEMETRY_STREAM,
    streamMaxAgeHours: config.TELEMETRY_STREAM_MAX_AGE_HOURS,
    logger,
    metrics,
  });
  events.start(nats.forService(processName));

  const channels = new ChannelPool();
  const local = new Map<ServiceName, LocalService>();
  const instances: { name: ServiceName; instance: ServiceInstance<any>; middleware: ServerMiddleware }[] = [];
  const primary = primaryService(names);
  // Both servers are made once the services exist: their sizes and HTTP options come from them.
  let servers: { grpc: ReturnType<typeof createServer>; http: ReturnType<typeof createHttpServer> } | undefined;
  const health = HealthState();
  let draining = false;
  const drainStarted = new AbortController();
  // Every live stream listens to it: no "possible leak" warning past ten.
  setMaxListeners(0, drainStarted.signal);

  try {
    for (const module of ordered) {
      const serviceLogger = logger.child({ service: module.name });
      const policy = serverCallPolicy(module.name, metrics, serviceLogger);
      const middleware = composeServerMiddleware(spansRecorded() ? openTelemetryServerMiddleware() : traceContextServerMiddleware, policy.middleware);
      const clients = new ServiceClients({
        caller: module.name,
        calls: [...callsOf(module.name), module.name],
        addresses: config.addresses,
        local,
        metrics,
        logger: serviceLogger,
        channelFor: (address) => channels.get(address),
      });
      const instance = await module.create({
        name: module.name,
        config: serviceConfigs.get(module.name),
        host: config,
        env,
        logger: serviceLogger,
        clients,
        events: serviceEvents(events, module.name),
        metrics,
        nats: nats.forService(module.name),
        draining: drainStarted.signal,
      });
      const own = instance.serverMiddleware as ServerMiddleware | undefined;
      const ownUnary = instance.unaryServerMiddleware;
      const callMiddleware = own ? composeServerMiddleware(middleware, own) : middleware;
      // In-process calls need a server span only when spans are recorded (see spansRecorded). A
      // service with middleware of its own keeps the unary fast path when it gives it as a function too.
      local.set(
        module.name,
        spansRecorded()
          ? { implementation: instance.implementation, serverMiddleware: callMiddleware }
          : own
            ? {
                implementation: instance.implementation,
                serverMiddleware: composeServerMiddleware(policy.middleware, own),
                ...(ownUnary ? { unaryServerPolicy: (path, context, handle) => policy.unary(path, context, () => ownUnary(path, context, handle)) } : {}),
              }
            : { implementation: instance.implementation, serverMiddleware: policy.middleware, unaryServerPolicy: policy.unary },
      );
      instances.push({ name: module.name, instance, middleware: callMiddleware });
    }

    // A request's size is known from its length prefix: grpc-js refuses one over the receive
    // limit (RESOURCE_EXHAUSTED) before buffering it, so the limit bounds the memory a burst of
    // big requests can take. It is the largest request any hosted call accepts.
    const largestRequest = Math.max(
      ...instances.map(({ name, instance }) => {
        const limitOf = instance.maxRequestBytes;
        return limitOf ? Math.max(...Object.keys(serviceCatalog[name].definition.methods).map((key) => limitOf(key))) : DEFAULT_MAX_REQUEST_BYTES;
      }),
    );
    const grpc = createServer({
      interceptors: [deadlineServerInterceptor],
      'grpc.max_connection_age_ms': config.GRPC_MAX_CONNECTION_AGE_MS,
      'grpc.max_connection_age_grace_ms': config.DRAIN_GRACE_MS,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.http2.min_ping_interval_without_data_ms': 10_000,
      'grpc.max_receive_message_length': largestRequest,
    });
    const httpOptions: HttpServerOptions = Object.assign({}, ...instances.map(({ instance }) => instance.httpServer ?? {}));
    const http = createHttpServer({ logger, title: `Elexirion ${names.join(', ')}`, ...httpOptions });
    servers = { grpc, http };
    for (const { name, instance, middleware } of instances) {
      // Undecodable requests (and ones over the call's size) reach the call policy, which answers them.
      grpc.with(middleware).add(withGuardedDecoding(serviceCatalog[name].definition, instance.maxRequestBytes), instance.implementation);
    }

    const fullNames = names.map((name) => serviceCatalog[name].definition.fullName);
    grpc.with(rejectUndecodableRequests).add(withGuardedDecoding(HealthDefinition), HealthServiceImpl(health));
    const reflectionImplementation = reflection(fullNames);
    grpc.with(rejectUndecodableRequests).add(withGuardedDecoding(ServerReflectionService), reflectionImplementation);
    grpc.with(rejectUndecodableRequests).add(withGuardedDecoding(ServerReflectionV1AlphaService), reflectionImplementation);

    http.get('/metrics', { schema: { hide: true } }, async (_request, reply) => {
      reply.header('content-type', metrics.registry.contentType);
      return metrics.registry.metrics();
    });
    http.get('/healthz', { schema: { hide: true } }, async () => ({ status: 'ok' }));
    // Ready while serving, degraded or not: a replica whose NATS is away still answers (without
    // what needs NATS), and taking every replica out of its Service would be a full outage.
    http.get('/readyz', { schema: { hide: true } }, async (_request, reply) => {
      const natsReadiness = nats.readiness();
      const degraded = instances.flatMap(({ name, instance }) => {
        const cause = instance.degradation?.();
        return cause ? [{ service: name, cause }] : [];
      });
      const status = draining ? 'draining' : nats.degraded || degraded.length > 0 ? 'degraded' : 'serving';
      reply.code(draining ? 503 : 200);
      return { status, services: names, nats: natsReadiness, ...(degraded.length > 0 ? { degraded } : {}) };
    });
    await registerRoutes(http, instances.flatMap(({ instance }) => instance.http ?? []));

    const portVariable = primary.toUpperCase();
    const grpcPort = await listenOn(`${portVariable}_GRPC_PORT`, config.BIND_HOST, config.ports[primary].grpc, () =>
      grpc.listen(`${config.BIND_HOST}:${config.ports[primary].grpc}`),
    );
    await listenOn(`${portVariable}_HTTP_PORT`, config.BIND_HOST, config.ports[primary].http, () =>
      http.listen({ host: config.BIND_HOST, port: config.ports[primary].http }),
    );
    const address = http.server.address();
    const httpPort = typeof address === 'object' && address ? address.port : config.ports[primary].http;

    for (const fullName of ['', ...fullNames]) health.setStatus('healthy', fullName);
    const usesNats = nats.readiness().uses.length > 0;
    logger.info({ services: names, grpc: `${config.BIND_HOST}:${grpcPort}`, http: `${config.BIND_HOST}:${httpPort}`, nats: usesNats ? config.NATS_URL : 'off' }, 'serving');

    let stopping: Promise<void> | undefined;
    const stop = (reason = 'stop requested') => {
      stopping ??= (async () => {
        draining = true;
        for (const fullName of ['', ...fullNames]) health.setStatus('unhealthy', fullName);
        logger.info({ reason, delayMs: config.DRAIN_DELAY_MS, graceMs: config.DRAIN_GRACE_MS }, 'draining: health NOT_SERVING');
        if (config.DRAIN_DELAY_MS > 0) await sleep(config.DRAIN_DELAY_MS);
        drainStarted.abort();
        const force = setTimeout(() => {
          logger.warn('drain grace period over: cancelling calls still in flight');
          grpc.forceShutdown();
          http.server.closeAllConnections();
        }, config.DRAIN_GRACE_MS);
        await Promise.allSettled([grpc.shutdown(), http.close()]);
        clearTimeout(force);
        for (const { name, instance } of [...instances].reverse()) {
          await instance.close?.().catch((error: unknown) => logger.error({ err: error, service: name }, 'service close failed'));
        }
        channels.close();
        await events.close();
        // Draining the connection sends what the services and the telemetry left buffered.
        await nats.stop();
        await tracing.shutdown();
        logger.info('stopped');
      })();
      return stopping;
    };

    return { services: names, grpcPort, httpPort, config, logger, metrics, events, nats, httpRoutes: () => registeredRoutes(http), stop };
  } catch (error) {
    servers?.grpc.forceShutdown();
    await servers?.http.close().catch(() => {});
    for (const { instance } of [...instances].reverse()) await instance.close?.().catch(() => {});
    channels.close();
    await events.close();
    await nats.stop(0);
    await tracing.shutdown();
    throw error;
  }
}

function loadAllConfig(modules: ServiceModule<ServiceName, any>[], env: NodeJS.ProcessEnv) {
  const issues: string[] = [];
  let config: HostConfig | undefined;
  const serviceConfigs = new Map<ServiceName, unknown>();
  try {
    config = loadHostConfig(env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    issues.push(...error.issues);
  }
  for (const module of modules) {
    if (!module.configSchema) continue;
    try {
      serviceConfigs.set(module.name, parseEnv(module.configSchema, env));
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      issues.push(...error.issues);
    }
  }
  if (issues.length > 0 || !config) throw new ConfigError(issues);
  return { config, serviceConfigs };
}

/**
 * `listen()`, with a port already in use reported at once as a ConfigError naming the port and the
 * variable that sets it (grpc-js words it "No address added out of total 1 resolved errors:
 * [listen EADDRINUSE ...]").
 */
async function listenOn<T>(variable: string, host: string, port: number, listen: () => Promise<T>): Promise<T> {
  try {
    return await listen();
  } catch (error) {
    const inUse = (error as NodeJS.ErrnoException | undefined)?.code === 'EADDRINUSE' || (error instanceof Error && error.message.includes('EADDRINUSE'));
    if (!inUse) throw error;
    throw new ConfigError([`${variable}: port ${port} on ${host} is already in use: stop what listens there, or set ${variable} to a free port`]);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Process entry point: starts the host, drains on SIGTERM/SIGINT (a second signal exits at once),
 * and exits 78 with a message naming each bad variable when the configuration is invalid.
 */
export async function runHost(modules: ServiceModule<ServiceName, any>[], options: HostOptions = {}): Promise<void> {
  let host: Host;
  try {
    host = await startHost(modules, options);
  } catch (error) {
    const fallback = createLogger({ level: 'info', name: 'elexirion', destination: pino.destination(2) });
    if (error instanceof ConfigError) {
      fallback.fatal({ issues: error.issues }, error.message);
      process.exitCode = 78; // EX_CONFIG
    } else {
      fallback.fatal({ err: error }, 'could not start');
      process.exitCode = 1;
    }
    fallback.flush();
    setTimeout(() => process.exit(), 50).unref();
    return;
  }
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) {
      host.logger.warn({ signal }, 'second signal: exiting without waiting');
      process.exit(1);
    }
    signalled = true;
    host.stop(signal).then(
      () => process.exit(0),
      (error: unknown) => {
        host.logger.error({ err: error }, 'drain failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('uncaughtException', (error) => {
    host.logger.fatal({ err: error }, 'uncaught exception');
    process.exit(1);
  });
  process.on('unhandledRejection', (reason) => {
    host.logger.error({ err: reason }, 'unhandled promise rejection');
  });
}
