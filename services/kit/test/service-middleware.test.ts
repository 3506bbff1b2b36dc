// A service's own server middleware (ServiceInstance.serverMiddleware: the gateway's keys and
// access log) runs for its calls over gRPC and for in-process calls from services hosted beside
// it, unary and streaming, inside the call policy; the trailer it sets on a refusal reaches the
// caller both ways.
import { afterEach, describe, expect, it } from 'vitest';
import { createChannel, createClient, Metadata, type Channel } from 'nice-grpc';
import type { CallContext, ServerMiddlewareCall } from 'nice-grpc-common';
import { ClientError, ServerError, Status, defineService, proto, startHost, type Host } from '@elexirion/kit';
import { hostEnv, implement } from '@elexirion/testing';

interface WhoContext {
  who?: string;
}

/** Refuses calls without `x-who` (trailer `x-why`), and hands the handler who called. */
async function* requireWho<Request, Response>(call: ServerMiddlewareCall<Request, Response, WhoContext>, context: CallContext) {
  const who = context.metadata.get('x-who');
  if (!who) {
    context.trailer.set('x-why', 'no x-who');
    throw new ServerError(Status.PERMISSION_DENIED, 'who are you?');
  }
  context.trailer.set('x-seen-by', 'middleware');
  return yield* call.next(call.request, { ...context, header: context.header, trailer: context.trailer, who });
}

const providerModule = defineService({
  name: 'provider',
  create: () => ({
    implementation: implement<proto.ProviderServiceImplementation>(proto.ProviderDefinition, {
      async complete(_request, context) {
        return { text: `hello ${(context as CallContext & WhoContext).who}` };
      },
      async *streamComplete(_request, context) {
        yield { delta: `hi ${(context as CallContext & WhoContext).who}` };
        yield { done: { text: 'done' } };
      },
    }),
    serverMiddleware: requireWho,
  }),
});

/** The same provider with the middleware also as a function, which in-process unary calls take. */
const providerWithUnaryModule = defineService({
  name: 'provider',
  create: () => {
    const base = providerModule.create({} as never) as { implementation: proto.ProviderServiceImplementation };
    return {
      implementation: base.implementation,
      serverMiddleware: requireWho,
      unaryServerMiddleware: async (_path, context, handle) => {
        const who = context.metadata.get('x-who');
        if (!who) {
          context.trailer.set('x-why', 'no x-who (function)');
          throw new ServerError(Status.PERMISSION_DENIED, 'who are you?');
        }
        context.trailer.set('x-seen-by', 'function');
        return handle({ ...context, header: context.header, trailer: context.trailer, who } as CallContext);
      },
    };
  },
});

/** Calls the provider in-process with `inputs.who` as x-who, and answers what it got back, trailer included. */
const executorModule = defineService({
  name: 'executor',
  create: ({ clients }) => ({
    implementation: implement<proto.ExecutorServiceImplementation>(proto.ExecutorDefinition, {
      async execute(request) {
        const provider = clients.get('provider');
        const metadata = request.inputs.who ? Metadata({ 'x-who': request.inputs.who }) : Metadata();
        let trailer = '';
        const onTrailer = (received: Metadata) => (trailer = `${received.get('x-why') ?? ''}${received.get('x-seen-by') ?? ''}`);
        if (request.pipeline === 'stream') {
          const deltas: string[] = [];
          for await (const message of provider.streamComplete({ request: { model: 'm' } }, { metadata, onTrailer })) if (message.delta) deltas.push(message.delta);
          return { output: deltas.join(''), pipeline: trailer };
        }
        try {
          const answer = await provider.complete({ model: 'm' }, { metadata, onTrailer });
          return { output: answer.text, pipeline: trailer };
        } catch (error) {
          return { output: `${Status[(error as ClientError).code]}: ${(error as ClientError).details}`, pipeline: trailer };
        }
      },
    }),
  }),
});

let host: Host | undefined;
let channel: Channel | undefined;

afterEach(async () => {
  channel?.close();
  await host?.stop('test over');
  host = undefined;
});

describe("a service's server middleware", () => {
  it('runs for gRPC calls, and its trailer reaches a refused caller', async () => {
    host = await startHost([providerModule], { env: await hostEnv() });
    channel = createChannel(`127.0.0.1:${host.grpcPort}`);
    const provider = createClient(proto.ProviderDefinition, channel);
    expect((await provider.complete({ model: 'm' }, { metadata: Metadata({ 'x-who': 'ann' }) })).text).toBe('hello ann');
    let why: string | undefined;
    const refused = await provider.complete({ model: 'm' }, { onTrailer: (trailer) => (why = trailer.get('x-why')) }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(ClientError);
    expect((refused as ClientError).code).toBe(Status.PERMISSION_DENIED);
    expect(why).toBe('no x-who');
  });

  it('runs for in-process calls, unary and streaming, and its trailer reaches the caller on success and on failure', async () => {
    host = await startHost([providerModule, executorModule], { env: await hostEnv() });
    channel = createChannel(`127.0.0.1:${host.grpcPort}`);
    const executor = createClient(proto.ExecutorDefinition, channel);
    expect(await executor.execute({ pipeline: 'unary', inputs: { who: 'bob' } })).toMatchObject({ output: 'hello bob', pipeline: 'middleware' });
    expect(await executor.execute({ pipeline: 'unary', inputs: {} })).toMatchObject({ output: 'PERMISSION_DENIED: who are you?', pipeline: 'no x-who' });
    expect(await executor.execute({ pipeline: 'stream', inputs: { who: 'cy' } })).toMatchObject({ output: 'hi cy', pipeline: 'middleware' });
  });

  it('takes the function form for in-process unary calls when the service gives one, the generator for streams', async () => {
    host = await startHost([providerWithUnaryModule, executorModule], { env: await hostEnv() });
    channel = createChannel(`127.0.0.1:${host.grpcPort}`);
    const executor = createClient(proto.ExecutorDefinition, channel);
    expect(await executor.execute({ pipeline: 'unary', inputs: { who: 'dee' } })).toMatchObject({ output: 'hello dee', pipeline: 'function' });
    expect(await executor.execute({ pipeline: 'unary', inputs: {} })).toMatchObject({ output: 'PERMISSION_DENIED: who are you?', pipeline: 'no x-who (function)' });
    expect(await executor.execute({ pipeline: 'stream', inputs: { who: 'eve' } })).toMatchObject({ output: 'hi eve', pipeline: 'middleware' });
  });
});
