// The OpenAI adapter's own HTTP call (openai.ts: one POST, the answer or its server-sent events
// parsed here, not by the SDK) against a plain Node HTTP server on loopback that writes the bytes
// the way a real server may cut them: a character split between two writes, CRLF line ends,
// comments, an error inside the stream, a body that is not JSON.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { OpenAiAdapter } from '../src/adapters/openai.js';
import type { NormalizedRequest, StreamEvent } from '../src/adapters/types.js';
import { UpstreamError } from '../src/upstream-error.js';

const servers: Server[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

/** A server whose handler gets each request with its parsed JSON body; the adapter pointed at it. */
async function adapterAgainst(handler: (request: IncomingMessage, response: ServerResponse, body: any) => void | Promise<void>, timeoutMs = 5_000): Promise<OpenAiAdapter> {
  const server = createServer((request, response) => {
    let text = '';
    request.on('data', (chunk: Buffer) => (text += chunk.toString()));
    request.on('end', () => void handler(request, response, JSON.parse(text)));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  return new OpenAiAdapter({ apiKey: 'sk-adapter-test', baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/`, timeoutMs });
}

const request: NormalizedRequest = { model: 'gpt-test', system: 'Be brief.', messages: [{ role: 'user', content: 'hi' }], maxTokens: 50, stopSequences: [] };

async function collect(stream: AsyncIterable<StreamEvent>): Promise<StreamEvent[]> {
  const events: StreamEvent[] = [];
  for await (const event of stream) events.push(event);
  return events;
}

const chunk = (content: string | undefined, finish: string | null = null, usage?: object) =>
  JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'gpt-test-0001', choices: content === undefined && !finish ? [] : [{ index: 0, delta: content === undefined ? {} : { content }, finish_reason: finish }], ...(usage ? { usage } : {}) });

describe('the OpenAI adapter', () => {
  it('posts the request JSON with the key, and reads a whole answer', async () => {
    let seen: { url?: string; headers?: IncomingMessage['headers']; body?: any } = {};
    const adapter = await adapterAgainst((incoming, response, body) => {
      seen = { url: incoming.url, headers: incoming.headers, body };
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ id: 'x', object: 'chat.completion', created: 1, model: 'gpt-test-0001', choices: [{ index: 0, message: { role: 'assistant', content: 'hello' }, finish_reason: 'length' }], usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 } }));
    });
    const result = await adapter.complete(request, new AbortController().signal);
    expect(result).toEqual({ text: 'hello', finishReason: 'length', inputTokens: 3, outputTokens: 1, model: 'gpt-test-0001' });
    expect(seen.url).toBe('/v1/chat/completions');
    expect(seen.headers).toMatchObject({ authorization: 'Bearer sk-adapter-test', 'content-type': 'application/json' });
    expect(seen.body).toEqual({ model: 'gpt-test', messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hi' }], max_completion_tokens: 50 });
  });

  it('reads a stream cut anywhere (inside a character, CRLF line ends, comments), up to [DONE]', async () => {
    const adapter = await adapterAgainst(async (_incoming, response, body) => {
      expect(body).toMatchObject({ stream: true, stream_options: { include_usage: true } });
      // No content type, as some compatible servers send.
      response.writeHead(200);
      const wire = Buffer.from(
        [': keep-alive', '', `data: ${chunk('')}`, '', `data: ${chunk('héllo ')}`, '', `data: ${chunk('wörld ✓')}`, '', `data: ${chunk(undefined, 'stop')}`, '', `data: ${chunk(undefined, null, { prompt_tokens: 7, completion_tokens: 3 })}`, '', 'data: [DONE]', '', ''].join('\r\n'),
      );
      // Cut inside "é" and inside "✓", and at every 7 bytes elsewhere.
      const cuts = [wire.indexOf(Buffer.from('é')) + 1, wire.indexOf(Buffer.from('✓')) + 2];
      for (let at = 0; at < wire.length; at += 7) cuts.push(at);
      cuts.sort((a, b) => a - b);
      let from = 0;
      for (const at of [...cuts, wire.length]) {
        if (at <= from) continue;
        response.write(wire.subarray(from, at));
        from = at;
        await delay(1);
      }
      response.end();
    });
    const events = await collect(adapter.stream(request, new AbortController().signal));
    expect(events.filter((event) => event.type === 'delta').map((event) => (event as { text: string }).text)).toEqual(['héllo ', 'wörld ✓']);
    expect(events.at(-1)).toEqual({ type: 'done', result: { text: 'héllo wörld ✓', finishReason: 'stop', inputTokens: 7, outputTokens: 3, model: 'gpt-test-0001' } });
  });

  it('throws an error sent inside the stream as the status its type stands for, and a cut stream as broken', async () => {
    const inStream = await adapterAgainst((_incoming, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.end(`data: ${chunk('par')}\n\ndata: ${JSON.stringify({ error: { type: 'server_error', message: 'the model fell over' } })}\n\n`);
    });
    const deltas: string[] = [];
    const error = await (async () => {
      for await (const event of inStream.stream(request, new AbortController().signal)) if (event.type === 'delta') deltas.push(event.text);
    })().catch((caught: unknown) => caught);
    expect(deltas).toEqual(['par']);
    expect(error).toBeInstanceOf(UpstreamError);
    expect(error).toMatchObject({ kind: 'http', status: 500, message: expect.stringContaining('the model fell over') });

    const cut = await adapterAgainst((_incoming, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.end(`data: ${chunk('half an ans')}\n\n`);
    });
    const broken = await collect(cut.stream(request, new AbortController().signal)).catch((caught: unknown) => caught);
    expect(broken).toMatchObject({ kind: 'connection', message: 'the stream ended before the answer was complete' });
  });

  it('takes a refusal as the SDK does (status, retry-after, the vendor message), and a body that is not JSON as unexpected', async () => {
    const refusing = await adapterAgainst((_incoming, response) => {
      response.writeHead(429, { 'content-type': 'application/json', 'retry-after': '3' });
      response.end(JSON.stringify({ error: { message: 'slow down', type: 'rate_limit_error' } }));
    });
    for (const call of [() => refusing.complete(request, new AbortController().signal), () => collect(refusing.stream(request, new AbortController().signal))]) {
      const error = await call().catch((caught: unknown) => caught);
      expect(error).toMatchObject({ kind: 'http', status: 429, retryAfterMs: 3_000, message: 'slow down' });
    }

    const html = await adapterAgainst((_incoming, response) => {
      response.writeHead(200, { 'content-type': 'text/html' });
      response.end('<html>proxy login</html>');
    });
    const notJson = await html.complete(request, new AbortController().signal).catch((caught: unknown) => caught);
    expect(notJson).toMatchObject({ kind: 'connection', message: 'unexpected failure: the answer is not JSON (HTTP 200, 24 bytes)' });
  });

  it('times out a server that sends no answer, or pauses a stream, longer than its timeout', async () => {
    const silent = await adapterAgainst(() => {}, 300);
    expect(await silent.complete(request, new AbortController().signal).catch((caught: unknown) => caught)).toMatchObject({ kind: 'timeout' });
    const pausing = await adapterAgainst((_incoming, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.write(`data: ${chunk('first')}\n\n`);
    }, 300);
    expect(await collect(pausing.stream(request, new AbortController().signal)).catch((caught: unknown) => caught)).toMatchObject({ kind: 'timeout' });
  });
});
