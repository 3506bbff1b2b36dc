// What the gateway job suites share: the gateway hosted in the test process against a jobs stack's
// real agent, executor and provider processes, its service context (to call the job calls with a
// caller, as the auth middleware would), and a raw Server-Sent Events reader.
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { createChannel, createClient, Metadata, type CallContext } from 'nice-grpc';
import { defineService, proto, startHost, type Host, type ServiceContext } from '@elexirion/kit';
import { hostEnv, type JobsStack } from '@elexirion/testing';
import type { Caller, CallerContext } from '../../services/gateway/src/caller.js';
import type { GatewayConfig } from '../../services/gateway/src/gateway-config.js';
import { gatewayService } from '../../services/gateway/src/gateway-service.js';

export interface GatewayUnderTest {
  host: Host;
  /** The hosted gateway's own context: its clients and telemetry, for calling its modules directly. */
  context: ServiceContext<GatewayConfig>;
  client: ReturnType<typeof createClient<typeof proto.GatewayDefinition>>;
  url(path: string): string;
  stop(): Promise<void>;
}

/** The gateway in this process (its gRPC and HTTP ports), calling the stack's first agent, its executor and provider. */
export async function startGateway(stack: JobsStack): Promise<GatewayUnderTest> {
  let captured: ServiceContext<GatewayConfig> | undefined;
  const gateway = defineService({
    name: 'gateway',
    configSchema: gatewayService.configSchema!,
    create(context: ServiceContext<GatewayConfig>) {
      captured = context;
      return gatewayService.create(context);
    },
  });
  const host = await startHost([gateway], {
    env: await hostEnv({
      AGENT_ADDRESS: `dns:///127.0.0.1:${stack.agents[0]!.grpcPort}`,
      EXECUTOR_ADDRESS: `dns:///127.0.0.1:${stack.executor.grpcPort}`,
      PROVIDER_ADDRESS: `dns:///127.0.0.1:${stack.provider.grpcPort}`,
      NATS_URL: stack.nats.url,
      // Keys are another suite's subject; these calls carry no key.
      GATEWAY_AUTH: 'off',
    }),
  });
  const channel = createChannel(`127.0.0.1:${host.grpcPort}`);
  return {
    host,
    context: captured!,
    client: createClient(proto.GatewayDefinition, channel),
    url: (path) => `http://127.0.0.1:${host.httpPort}${path}`,
    async stop() {
      channel.close();
      await host.stop('test over');
    },
  };
}

/** A CallContext as the gateway's auth middleware hands it to a call: the caller's key on it. */
export function callerContext(caller: Caller | undefined, signal = new AbortController().signal): CallContext & CallerContext {
  return {
    metadata: new Metadata(),
    peer: 'ipv4:127.0.0.1:1',
    header: new Metadata(),
    trailer: new Metadata(),
    sendHeader() {},
    signal,
    ...(caller ? { caller } : {}),
  };
}

export interface SseEvent {
  id?: string;
  event?: string;
  data: string;
}

export interface SseAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  events: SseEvent[];
  /** The whole body as received (the JSON of an error answer). */
  body: string;
  /** The server ended the stream (false when `stopAfter` dropped it). */
  ended: boolean;
}

/**
 * GET `url` as a plain HTTP client (not an EventSource: the test says which Last-Event-ID it
 * sends), parsing the Server-Sent Events as they arrive; `stopAfter` drops the connection once it
 * says so.
 */
export function readEventStream(url: string, headers: Record<string, string> = {}, stopAfter?: (events: SseEvent[]) => boolean): Promise<SseAnswer> {
  return new Promise((resolve, reject) => {
    const events: SseEvent[] = [];
    let body = '';
    let pending = '';
    const request = httpRequest(url, { headers: { accept: 'text/event-stream', ...headers } }, (response) => {
      response.setEncoding('utf8');
      const answer = (ended: boolean) => resolve({ status: response.statusCode!, headers: response.headers, events, body, ended });
      response.on('data', (chunk: string) => {
        body += chunk;
        pending += chunk;
        for (let end = pending.indexOf('\n\n'); end !== -1; end = pending.indexOf('\n\n')) {
          const block = pending.slice(0, end);
          pending = pending.slice(end + 2);
          const event: SseEvent = { data: '' };
          let isEvent = false;
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue; // a comment (keep-alive)
            const colon = line.indexOf(':');
            const field = colon === -1 ? line : line.slice(0, colon);
            const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '');
            if (field === 'id') event.id = value;
            else if (field === 'event') event.event = value;
            else if (field === 'data') event.data = event.data ? `${event.data}\n${value}` : value;
            else continue;
            isEvent = true;
          }
          if (!isEvent) continue;
          events.push(event);
          if (stopAfter?.(events)) {
            request.destroy();
            answer(false);
            return;
          }
        }
      });
      response.on('end', () => answer(true));
      response.on('error', () => answer(false));
    });
    // After a drop the promise has settled already: this rejects only a request that failed.
    request.on('error', reject);
    request.end();
  });
}
