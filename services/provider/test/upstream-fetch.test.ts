// The fetch the vendors' SDKs use (undici's request API with the provider's own keep-alive
// connections), against a plain Node HTTP server on loopback that counts its connections.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { UpstreamConnections, createUpstreamFetch } from '../src/adapters/upstream-fetch.js';

interface Upstream {
  url: string;
  connections: number;
  server: Server;
}

const servers: Server[] = [];
const dispatchers: UpstreamConnections[] = [];

async function upstream(handler: (request: IncomingMessage, response: ServerResponse, body: string) => void): Promise<Upstream> {
  const server = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk: Buffer) => (body += chunk.toString()));
    request.on('end', () => handler(request, response, body));
  });
  const state: Upstream = { url: '', connections: 0, server };
  server.on('connection', () => (state.connections += 1));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  servers.push(server);
  return state;
}

function upstreamFetch(options: { streaming?: boolean } = {}) {
  const dispatcher = new UpstreamConnections();
  dispatchers.push(dispatcher);
  return createUpstreamFetch({ ...options, dispatcher });
}

afterEach(async () => {
  await Promise.all(dispatchers.splice(0).map((dispatcher) => dispatcher.destroy()));
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    server.close();
  }
});

describe('createUpstreamFetch', () => {
  it('sends method, headers and body, and gives back status, headers and the body', async () => {
    const server = await upstream((request, response, body) => {
      response.writeHead(201, { 'content-type': 'application/json', 'x-seen': `${request.method} ${request.headers['x-api-key']}` });
      response.end(JSON.stringify({ echoed: JSON.parse(body) }));
    });
    const fetch = upstreamFetch();
    const response = await fetch(`${server.url}/v1/messages`, {
      method: 'POST',
      headers: new Headers({ 'content-type': 'application/json', 'X-Api-Key': 'k-1' }),
      body: JSON.stringify({ hello: 'world' }),
    });
    expect(response.status).toBe(201);
    expect(response.headers.get('x-seen')).toBe('POST k-1');
    expect(await response.json()).toEqual({ echoed: { hello: 'world' } });
  });

  it('gives a whole body that reads once, as a Response, through text(), json(), arrayBuffer(), body or a clone', async () => {
    const server = await upstream((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end('{"answer":"héllo"}');
    });
    const fetch = upstreamFetch();
    const first = await fetch(`${server.url}/a`);
    expect(first).toBeInstanceOf(Response);
    expect(first.ok).toBe(true);
    expect(first.bodyUsed).toBe(false);
    expect(await first.text()).toBe('{"answer":"héllo"}');
    expect(first.bodyUsed).toBe(true);
    await expect(first.json()).rejects.toThrow(TypeError);

    const second = await fetch(`${server.url}/b`);
    expect(new TextDecoder().decode(await second.arrayBuffer())).toBe('{"answer":"héllo"}');

    const third = await fetch(`${server.url}/c`);
    const copy = third.clone();
    expect(await third.json()).toEqual({ answer: 'héllo' });
    expect(await copy.text()).toBe('{"answer":"héllo"}');

    const fourth = await fetch(`${server.url}/d`);
    const chunks: Uint8Array[] = [];
    for await (const chunk of fourth.body!) chunks.push(chunk);
    expect(Buffer.concat(chunks).toString()).toBe('{"answer":"héllo"}');
    expect(fourth.bodyUsed).toBe(true);
    await expect(fourth.text()).rejects.toThrow(TypeError);
  });

  it('keeps connections alive: sequential calls share one, concurrent calls open one each and reuse them', async () => {
    // In a burst every answer waits until all 8 requests have arrived: they are in flight at once.
    let burstSize = 0;
    const held: ServerResponse[] = [];
    const server = await upstream((_request, response) => {
      if (burstSize === 0) return response.end('ok');
      held.push(response);
      if (held.length === burstSize) for (const waiting of held.splice(0)) waiting.end('ok');
    });
    const fetch = upstreamFetch();
    for (let index = 0; index < 10; index += 1) expect(await (await fetch(server.url)).text()).toBe('ok');
    burstSize = 8;
    expect(server.connections).toBe(1);
    const burst = () => Promise.all(Array.from({ length: 8 }, async () => (await fetch(server.url)).text()));
    expect(await burst()).toEqual(Array(8).fill('ok'));
    expect(server.connections).toBe(8);
    expect(await burst()).toEqual(Array(8).fill('ok'));
    expect(server.connections).toBe(8);
  });

  it('opens a new connection when the server closed an idle one', async () => {
    const server = await upstream((_request, response) => response.end('ok'));
    server.server.keepAliveTimeout = 50;
    const fetch = upstreamFetch();
    expect(await (await fetch(server.url)).text()).toBe('ok');
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await (await fetch(server.url)).text()).toBe('ok');
    expect(server.connections).toBe(2);
  });

  it('streams server-sent events as they arrive', async () => {
    let finish: (() => void) | undefined;
    const server = await upstream((_request, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.write('data: first\n\n');
      finish = () => response.end('data: last\n\n');
    });
    const fetch = upstreamFetch();
    const response = await fetch(server.url);
    const reader = response.body!.getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toBe('data: first\n\n'); // before the server finished
    finish!();
    let rest = '';
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) rest += new TextDecoder().decode(chunk.value);
    expect(rest).toBe('data: last\n\n');
  });

  it.each([
    ['no content type', {}],
    ['a JSON content type', { 'content-type': 'application/json' }],
  ])('streams the answer to a streaming call as it arrives, with %s', async (_name, headers: Record<string, string>) => {
    let finish: (() => void) | undefined;
    const server = await upstream((_request, response) => {
      response.writeHead(200, headers);
      response.write('data: first\n\n');
      finish = () => response.end('data: last\n\n');
    });
    const response = await upstreamFetch({ streaming: true })(server.url, { method: 'POST', body: '{"stream":true}' });
    const reader = response.body!.getReader();
    expect(new TextDecoder().decode((await reader.read()).value)).toBe('data: first\n\n'); // before the server finished
    finish!();
    let rest = '';
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) rest += new TextDecoder().decode(chunk.value);
    expect(rest).toBe('data: last\n\n');
  });

  it('gives a null body for 204, and rejects with an AbortError when the signal aborts', async () => {
    const server = await upstream((request, response) => {
      if (request.url === '/empty') {
        response.writeHead(204);
        response.end();
      }
      // other paths never answer
    });
    const fetch = upstreamFetch();
    const empty = await fetch(`${server.url}/empty`);
    expect(empty.status).toBe(204);
    expect(empty.body).toBeNull();
    const controller = new AbortController();
    const pending = fetch(`${server.url}/slow`, { signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
  });

  it('fails with a connection error the SDKs recognise when nothing listens', async () => {
    const server = await upstream((_request, response) => response.end('ok'));
    const url = server.url;
    await new Promise<void>((resolve) => server.server.close(() => resolve()));
    const fetch = upstreamFetch();
    await expect(fetch(url)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });
});
