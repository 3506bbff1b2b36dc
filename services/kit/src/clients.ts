import { AbortError, isAbortError } from 'abort-controller-x';
import {
  ChannelCredentials,
  createChannel,
  createClientFactory,
  type Channel,
  type ChannelOptions,
  type Client,
  type TsProtoServiceDefinition,
} from 'nice-grpc';
import {
  ClientError,
  Metadata,
  ServerError,
  Status,
  composeClientMiddleware,
  type CallContext,
  type CallOptions,
  type ClientMiddleware,
  type MethodDescriptor,
  type ServerMiddleware,
} from 'nice-grpc-common';
import type { DeadlineOptions } from 'nice-grpc-client-middleware-deadline';
import { openTelemetryClientMiddleware } from 'nice-grpc-opentelemetry';
import { serviceCatalog, type ServiceDefinitionOf, type ServiceName } from './catalog.js';
import { clientCallPolicy } from './call-policy.js';
import { DEADLINE_METADATA_KEY, TIMEOUT_METADATA_KEY, mergeDeadline } from './deadline.js';
import type { Metrics } from './metrics.js';
import { spansRecorded, traceContextMiddleware } from './tracing.js';

/** The typed client of a service; the same interface whether the service is local or remote. */
export type ServiceClient<N extends ServiceName> = Client<ServiceDefinitionOf<N>, DeadlineOptions>;

/** A service hosted by this process: its handlers and the server middleware they run under. */
export interface LocalService {
  implementation: object;
  serverMiddleware: ServerMiddleware;
}

const MAX_MESSAGE_BYTES = 32 * 1024 * 1024;

/** Channel options for calls between services: round robin over every DNS address, keepalive, retry on UNAVAILABLE. */
export const internalChannelOptions: ChannelOptions = {
  'grpc.service_config': JSON.stringify({
    loadBalancingConfig: [{ round_robin: {} }],
    methodConfig: [
      {
        name: [{}],
        retryPolicy: {
          maxAttempts: 3,
          initialBackoff: '0.05s',
          maxBackoff: '0.5s',
          backoffMultiplier: 2,
          retryableStatusCodes: ['UNAVAILABLE'],
        },
      },
    ],
  }),
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
};

export interface ServiceClientsOptions {
  /** The calling service, for metrics. */
  caller: string;
  addresses: Record<ServiceName, string>;
  local: ReadonlyMap<ServiceName, LocalService>;
  metrics: Metrics;
  channelFor(address: string): Channel;
}

/**
 * Clients to other services. A service hosted in this process is called in-process (no
 * serialization, no socket) through the same middleware as a remote call; any other over gRPC.
 */
export class ServiceClients {
  private readonly cache = new Map<ServiceName, unknown>();

  constructor(private readonly options: ServiceClientsOptions) {}

  isLocal(name: ServiceName): boolean {
    return this.options.local.has(name);
  }

  get<N extends ServiceName>(name: N): ServiceClient<N> {
    let client = this.cache.get(name) as ServiceClient<N> | undefined;
    if (!client) {
      client = this.create(name);
      this.cache.set(name, client);
    }
    return client;
  }

  private create<N extends ServiceName>(name: N): ServiceClient<N> {
    const definition = serviceCatalog[name].definition as ServiceDefinitionOf<N>;
    const local = this.options.local.get(name);
    const transport = local ? 'in_process' : 'grpc';
    // composeClientMiddleware(inner, outer): the second runs first. Outermost to innermost:
    // tracing (a client span over gRPC; in-process, only the context for the callee's span, and
    // nothing when spans are not recorded), then metrics and deadlines (clientCallPolicy).
    const observed = clientCallPolicy(this.options.caller, transport, this.options.metrics);
    const tracing = local ? (spansRecorded() ? traceContextMiddleware : undefined) : openTelemetryClientMiddleware();
    const middleware = tracing ? composeClientMiddleware(observed, tracing) : observed;
    if (local) return createInProcessClient(definition, local, middleware) as ServiceClient<N>;
    return createClientFactory()
      .use(middleware)
      .create(definition, this.options.channelFor(this.options.addresses[name])) as unknown as ServiceClient<N>;
  }
}

/** One channel per address for the whole process. */
export class ChannelPool {
  private readonly channels = new Map<string, Channel>();

  get(address: string): Channel {
    let channel = this.channels.get(address);
    if (!channel) {
      channel = createChannel(address, ChannelCredentials.createInsecure(), internalChannelOptions);
      this.channels.set(address, channel);
    }
    return channel;
  }

  close(): void {
    for (const channel of this.channels.values()) channel.close();
    this.channels.clear();
  }
}

type AnyMiddleware = (call: any, options: CallOptions & DeadlineOptions) => AsyncGenerator<any, any, undefined>;

/**
 * Builds a client whose calls run the local implementation under its server middleware. It keeps
 * what a remote call guarantees: requests and responses are complete messages (`fromPartial`),
 * failures arrive as ClientError with the server's code, cancellation and deadlines abort the
 * caller at once and reach the handler through `context.signal`.
 */
export function createInProcessClient(definition: TsProtoServiceDefinition, local: LocalService, clientMiddleware: ClientMiddleware<any>): object {
  const client: Record<string, unknown> = {};
  const implementation = local.implementation as Record<string, (...args: any[]) => any>;
  const middleware = clientMiddleware as unknown as AnyMiddleware;
  for (const [key, method] of Object.entries(definition.methods)) {
    const path = `/${definition.fullName}/${method.name}`;
    const descriptor: MethodDescriptor = {
      path,
      requestStream: method.requestStream,
      responseStream: method.responseStream,
      options: method.options,
    };
    const found = implementation[key];
    if (method.requestStream || typeof found !== 'function') {
      client[key] = () => {
        throw new ClientError(path, Status.UNIMPLEMENTED, `${path} is not available in-process`);
      };
      continue;
    }
    const handler = found;
    const serve = (request: unknown, context: CallContext) =>
      local.serverMiddleware(
        {
          method: descriptor,
          requestStream: false,
          request,
          responseStream: method.responseStream,
          next: method.responseStream
            ? async function* (req: unknown, ctx: CallContext) {
                yield* handler.call(implementation, req, ctx);
              }
            : async function* (req: unknown, ctx: CallContext) {
                return await handler.call(implementation, req, ctx);
              },
        } as any,
        context,
      ) as AsyncGenerator<unknown, unknown, undefined>;

    if (!method.responseStream) {
      async function* unaryTransport(request: unknown, options: CallOptions): AsyncGenerator<never, unknown, undefined> {
        const call = startServerSide(options);
        try {
          const generator = serve(complete(method.requestType, request), call.context);
          const result = await raceAbort(options.signal, generator.next());
          if (!result.done) throw new ServerError(Status.INTERNAL, `${path}: a unary handler yielded a message`);
          return complete(method.responseType, result.value ?? {});
        } catch (error) {
          throw toClientError(error, path, options.signal);
        } finally {
          call.end();
        }
      }
      client[key] = async (request: unknown, options: CallOptions & DeadlineOptions = {}) => {
        const iterator = middleware({ method: descriptor, requestStream: false, request, responseStream: false, next: unaryTransport }, options);
        const result = await iterator.next();
        if (!result.done) throw new Error(`${path}: a client middleware yielded a message for a unary method`);
        return result.value;
      };
    } else {
      async function* streamTransport(request: unknown, options: CallOptions): AsyncGenerator<unknown, void, undefined> {
        const call = startServerSide(options);
        const generator = serve(complete(method.requestType, request), call.context);
        let finished = false;
        try {
          while (true) {
            const result = await raceAbort(options.signal, generator.next());
            if (result.done) {
              finished = true;
              return;
            }
            yield complete(method.responseType, result.value);
          }
        } catch (error) {
          throw toClientError(error, path, options.signal);
        } finally {
          // A consumer that stops reading cancels the call, as over gRPC.
          call.end(!finished);
          if (!finished) generator.return(undefined).catch(() => {});
        }
      }
      client[key] = (request: unknown, options: CallOptions & DeadlineOptions = {}) =>
        middleware({ method: descriptor, requestStream: false, request, responseStream: true, next: streamTransport }, options);
    }
  }
  return client;
}

/** A complete message from a partial one, with defaults filled in, as decoding would give. */
function complete(type: { fromPartial?: (value: any) => unknown }, value: unknown): unknown {
  return type.fromPartial ? type.fromPartial(value) : value;
}

/** The server half of an in-process call: its context, and a signal tied to the caller's. */
function startServerSide(options: CallOptions): { context: CallContext; end(cancel?: boolean): void } {
  const controller = new AbortController();
  const callerSignal = options.signal;
  const onAbort = () => controller.abort();
  if (callerSignal?.aborted) throw new AbortError();
  callerSignal?.addEventListener('abort', onAbort);
  // What the deadline interceptor does for a remote call.
  const metadata = Metadata(options.metadata);
  const timeout = metadata.get(TIMEOUT_METADATA_KEY);
  metadata.delete(TIMEOUT_METADATA_KEY);
  metadata.delete(DEADLINE_METADATA_KEY);
  const at = mergeDeadline(Infinity, timeout);
  if (Number.isFinite(at)) metadata.set(DEADLINE_METADATA_KEY, String(Math.round(at)));
  // Header and trailer are made on first use: most handlers never touch them.
  let header: Metadata | undefined;
  let trailer: Metadata | undefined;
  const context: CallContext = {
    metadata,
    peer: 'in-process',
    get header() {
      return (header ??= Metadata());
    },
    sendHeader() {},
    get trailer() {
      return (trailer ??= Metadata());
    },
    signal: controller.signal,
  };
  return {
    context,
    end(cancel = false) {
      callerSignal?.removeEventListener('abort', onAbort);
      if (cancel) controller.abort();
    },
  };
}

function raceAbort<T>(signal: AbortSignal | undefined, promise: Promise<T>): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) {
    promise.catch(() => {});
    return Promise.reject(new AbortError());
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      promise.catch(() => {}); // the handler may still settle later; nobody waits for it
      reject(new AbortError());
    };
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

function toClientError(error: unknown, path: string, signal: AbortSignal | undefined): unknown {
  if (signal?.aborted && isAbortError(error)) return error;
  if (error instanceof ClientError) return error;
  if (error instanceof ServerError) return new ClientError(path, error.code, error.details);
  if (isAbortError(error)) return new ClientError(path, Status.CANCELLED, `${path} was cancelled`);
  return new ClientError(path, Status.UNKNOWN, 'Unknown server error occurred');
}
