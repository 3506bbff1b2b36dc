// The gateway's HTTP/JSON API refusing bad requests in the project's error shape,
// {"error":{"code":"...","message":"..."}}, with the field and the reason: bodies whose fields
// have the wrong type, and requests Node's HTTP parser refuses before any route sees them.
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNats, startStack, stopAll, type NatsServer, type Stack } from '@elexirion/testing';

let nats: NatsServer;
let stack: Stack;

beforeAll(async () => {
  nats = await startNats();
  stack = await startStack('all-in-one', nats.url);
});

afterAll(async () => {
  await stack?.stop();
  await nats?.stop();
  await stopAll();
});

const url = (path: string) => `http://127.0.0.1:${stack.ports.gatewayHttp}${path}`;

/** Sends raw bytes and reads the whole answer (the server closes the connection after a refusal). */
function rawRequest(bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(stack.ports.gatewayHttp, '127.0.0.1');
    let answer = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (answer += chunk));
    socket.on('end', () => resolve(answer));
    socket.on('error', reject);
    socket.write(bytes);
  });
}

describe('the HTTP API', () => {
  it('refuses chat fields that are not strings instead of sending "[object Object]" to the model', async () => {
    for (const [body, field, received] of [
      [{ message: { a: 1 } }, 'message', 'object'],
      [{ message: ['hi'] }, 'message', 'array'],
      [{ message: 42 }, 'message', 'number'],
      [{ message: 'hi', sessionId: { id: 1 } }, 'sessionId', 'object'],
      [{ message: 'hi', pipeline: true }, 'pipeline', 'boolean'],
    ] as const) {
      const reply = await fetch(url('/v1/chat'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      expect(reply.status).toBe(400);
      expect(await reply.json()).toEqual({ error: { code: 'INVALID_ARGUMENT', message: `body.${field}: Invalid input: expected string, received ${received}` } });
    }
  });

  it('answers headers over the limit with 431 in the project\'s error shape', async () => {
    const reply = await fetch(url('/v1/chat'), { method: 'POST', headers: { 'content-type': 'application/json', 'x-padding': 'a'.repeat(20_000) }, body: '{"message":"hi"}' });
    expect(reply.status).toBe(431);
    expect(reply.headers.get('content-type')).toBe('application/json');
    expect(await reply.json()).toEqual({ error: { code: 'INVALID_ARGUMENT', message: expect.stringMatching(/^headers: over the \d+ bytes this server accepts$/) } });
  });

  it('answers a malformed request with 400 in the project\'s error shape', async () => {
    const answer = await rawRequest('NOT A REQUEST\r\n\r\n');
    const [head, body] = answer.split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    expect(JSON.parse(body!)).toEqual({ error: { code: 'INVALID_ARGUMENT', message: 'malformed HTTP request' } });
  });
});
