import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { proto } from '@elexirion/kit';
import { freePort, waitFor } from '@elexirion/testing';
import { cleanupAfterEach, recordingLogger } from '@elexirion/testing/fixtures';
import { WebhookSender, checkWebhook, type WebhookSenderOptions } from '../src/jobs/webhook.js';
import { NonPublicAddressError, isNonPublicAddress, publicOnlyLookup } from '../src/jobs/webhook-address.js';

const later = cleanupAfterEach();
const SECRET = 'whsec_0123456789abcdef';

interface Delivery {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/**
 * A webhook receiver on loopback. `answer(n)` says how to answer the n-th request (from 1): a
 * status, a status with headers, or 'hang' (never answer).
 */
async function receiver(answer: (n: number) => number | 'hang' | { status: number; headers: Record<string, string> }): Promise<{ url: string; deliveries: Delivery[] }> {
  const deliveries: Delivery[] = [];
  const server = createServer((request, response: ServerResponse) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      deliveries.push({ path: request.url ?? '', headers: request.headers, body: Buffer.concat(chunks).toString('utf8') });
      const reply = answer(deliveries.length);
      if (reply === 'hang') return;
      const { status, headers } = typeof reply === 'number' ? { status: reply, headers: {} } : reply;
      response.writeHead(status, headers).end('{"ok":true}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  later(() => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(resolve));
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/elexirion`, deliveries };
}

function finishedJob(): proto.Job {
  const jobId = randomUUID();
  return proto.Job.fromPartial({
    jobId,
    status: proto.JobStatus.JOB_STATUS_SUCCEEDED,
    origin: 'submitted',
    pipeline: 'general',
    inputs: { message: 'hello' },
    createdAt: new Date('2026-03-01T10:00:00Z'),
    finishedAt: new Date('2026-03-01T10:00:05Z'),
    output: 'Hi there',
    steps: [{ name: 'answer', type: 'llm', output: 'Hi there', status: 'completed' }],
    usage: { inputTokens: 12, outputTokens: 3 },
    webhookUrl: 'http://example.test/hook',
    webhookStatus: 'pending',
    lastSequence: 7,
  });
}

/** A sender that retries at once (tests wait for conditions, not backoff), allowed to reach the loopback receivers. */
function sender(options: Partial<WebhookSenderOptions> = {}) {
  const { logger, logs } = recordingLogger();
  return { sender: new WebhookSender({ logger, baseMs: 1, maxMs: 5, allowPrivate: true, ...options }), logs };
}

/** Checks a delivery's signature as a receiver would: HMAC-SHA256(secret, "<t>.<body>"), hex. */
function signatureVerifies(delivery: Delivery, secret: string): boolean {
  const header = String(delivery.headers['elexirion-signature']);
  const match = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header);
  if (!match) return false;
  const expected = createHmac('sha256', secret).update(`${match[1]}.${delivery.body}`).digest();
  return timingSafeEqual(expected, Buffer.from(match[2]!, 'hex'));
}

describe('WebhookSender', () => {
  it('POSTs the job as proto3 JSON with a signature the receiver verifies and the job id for deduplication', async () => {
    const { url, deliveries } = await receiver(() => 200);
    const job = finishedJob();
    const { sender: webhooks } = sender();

    const before = Math.floor(Date.now() / 1000);
    expect(await webhooks.deliver(job, { url, secret: SECRET })).toBe('delivered');
    const after = Math.floor(Date.now() / 1000);

    expect(deliveries).toHaveLength(1);
    const [delivery] = deliveries as [Delivery];
    expect(delivery.path).toBe('/hooks/elexirion');
    expect(delivery.headers['content-type']).toBe('application/json');
    expect(delivery.headers['elexirion-job-id']).toBe(job.jobId);
    expect(delivery.headers['webhook-id']).toBe(job.jobId);
    expect(signatureVerifies(delivery, SECRET)).toBe(true);
    expect(signatureVerifies(delivery, `${SECRET}x`)).toBe(false);
    // The timestamp is now's, in seconds: receivers refuse old ones.
    const signedAt = Number(/^t=(\d+),/.exec(String(delivery.headers['elexirion-signature']))![1]);
    expect(signedAt).toBeGreaterThanOrEqual(before);
    expect(signedAt).toBeLessThanOrEqual(after);
    expect(JSON.parse(delivery.body)).toEqual(proto.Job.toJSON(job));
    expect(proto.Job.fromJSON(JSON.parse(delivery.body))).toEqual(job);
  });

  it('retries 503, 408, 429 and 500 with the same webhook-id, each attempt signed, until one succeeds', async () => {
    const answers = [503, 408, { status: 429, headers: { 'retry-after': '0' } }, 500, 200];
    const { url, deliveries } = await receiver((n) => answers[n - 1]!);
    const job = finishedJob();
    const { sender: webhooks, logs } = sender();

    expect(await webhooks.deliver(job, { url, secret: SECRET })).toBe('delivered');

    expect(deliveries).toHaveLength(5);
    expect(new Set(deliveries.map((delivery) => delivery.headers['webhook-id']))).toEqual(new Set([job.jobId]));
    expect(deliveries.every((delivery) => signatureVerifies(delivery, SECRET))).toBe(true);
    expect(logs.filter((log) => log.message === 'webhook delivery failed; retrying').map((log) => log.fields.reason)).toEqual(['HTTP 503', 'HTTP 408', 'HTTP 429', 'HTTP 500']);
  });

  it('does not retry a 4xx other than 408 and 429, nor follow a redirect', async () => {
    const rejecting = await receiver(() => 400);
    const { sender: webhooks } = sender();
    expect(await webhooks.deliver(finishedJob(), { url: rejecting.url, secret: SECRET })).toBe('failed: HTTP 400 (1 attempt)');
    expect(rejecting.deliveries).toHaveLength(1);

    const redirecting = await receiver((n) => (n === 1 ? { status: 307, headers: { location: '/elsewhere' } } : 200));
    expect(await webhooks.deliver(finishedJob(), { url: redirecting.url, secret: SECRET })).toBe('failed: HTTP 307 (redirects are not followed) (1 attempt)');
    expect(redirecting.deliveries.map((delivery) => delivery.path)).toEqual(['/hooks/elexirion']);
  });

  it('gives up after its attempts, saying why', async () => {
    const { url, deliveries } = await receiver(() => 503);
    const { sender: webhooks } = sender({ attempts: 3 });
    expect(await webhooks.deliver(finishedJob(), { url, secret: SECRET })).toBe('failed: HTTP 503 (3 attempts)');
    expect(deliveries).toHaveLength(3);
  });

  it('times out an attempt that gets no answer, and retries it', async () => {
    const { url, deliveries } = await receiver((n) => (n < 3 ? 'hang' : 200));
    const { sender: webhooks } = sender({ timeoutMs: 200, attempts: 3 });
    expect(await webhooks.deliver(finishedJob(), { url, secret: SECRET })).toBe('delivered');
    expect(deliveries).toHaveLength(3);

    const silent = await receiver(() => 'hang');
    const { sender: impatient } = sender({ timeoutMs: 200, attempts: 2 });
    expect(await impatient.deliver(finishedJob(), { url: silent.url, secret: SECRET })).toBe('failed: no answer within 200 ms (2 attempts)');
    expect(silent.deliveries).toHaveLength(2);
  });

  it('retries a receiver that refuses connections', async () => {
    const port = await freePort();
    const { sender: webhooks } = sender({ attempts: 2 });
    expect(await webhooks.deliver(finishedJob(), { url: `http://127.0.0.1:${port}/hook`, secret: SECRET })).toBe('failed: could not reach the receiver (ECONNREFUSED) (2 attempts)');
  });

  it('keeps the secret, and the URL\'s path, out of every log line and status', async () => {
    const answers: Record<string, (n: number) => number | 'hang'> = { ok: () => 200, rejected: () => 400, flaky: (n) => (n === 1 ? 503 : 200), down: () => 503, silent: () => 'hang' };
    const { sender: webhooks, logs } = sender({ timeoutMs: 200, attempts: 2 });
    const statuses: string[] = [];
    for (const answer of Object.values(answers)) {
      const { url } = await receiver(answer);
      // A path that holds a token, as many receivers' URLs do.
      statuses.push(await webhooks.deliver(finishedJob(), { url: url.replace('/hooks/elexirion', '/hooks/tok_pathtoken9876'), secret: SECRET }));
    }
    statuses.push(await webhooks.deliver(finishedJob(), { url: `http://127.0.0.1:${await freePort()}/hooks/tok_pathtoken9876`, secret: SECRET }));

    expect(statuses).toEqual(['delivered', 'failed: HTTP 400 (1 attempt)', 'delivered', 'failed: HTTP 503 (2 attempts)', 'failed: no answer within 200 ms (2 attempts)', 'failed: could not reach the receiver (ECONNREFUSED) (2 attempts)']);
    const written = JSON.stringify({ logs, statuses });
    expect(logs.length).toBeGreaterThan(6);
    expect(written).not.toContain(SECRET);
    expect(written).not.toContain('tok_pathtoken9876');
    expect(logs.every((log) => typeof log.fields.receiver === 'string' && /^http:\/\/127\.0\.0\.1:\d+$/.test(log.fields.receiver))).toBe(true);
  });

  it('stops retrying when its signal aborts', async () => {
    const { url, deliveries } = await receiver(() => 503);
    const controller = new AbortController();
    const { sender: webhooks } = sender({ attempts: Infinity, baseMs: 50, maxMs: 50, signal: controller.signal });
    const delivering = webhooks.deliver(finishedJob(), { url, secret: SECRET });
    await waitFor('two attempts', () => deliveries.length >= 2);
    controller.abort();
    expect(await delivering).toMatch(/^failed: stopped: the agent is shutting down \(\d+ attempts\)$/);
  });
});

describe('checkWebhook', () => {
  it('accepts an http or https URL with a secret', () => {
    expect(checkWebhook({ url: 'https://hooks.example.com/elexirion?team=7', secret: 's' })).toBeUndefined();
    expect(checkWebhook({ url: 'http://127.0.0.1:8080/hook', secret: SECRET }, true)).toBeUndefined();
    expect(checkWebhook({ url: 'http://8.8.8.8/hook', secret: SECRET })).toBeUndefined();
    expect(checkWebhook({ url: 'http://[2001:4860:4860::8888]/hook', secret: SECRET })).toBeUndefined();
  });

  it('refuses loopback, private and link-local receivers unless allowed, naming webhook.url', () => {
    for (const [url, host] of [
      ['http://127.0.0.1:8080/hook', '127.0.0.1'],
      ['http://localhost/hook', 'localhost'],
      ['http://api.localhost./hook', 'api.localhost'],
      ['http://[::1]/hook', '::1'],
      ['http://169.254.169.254/latest/meta-data', '169.254.169.254'],
      ['http://10.1.2.3/hook', '10.1.2.3'],
      ['http://172.20.0.5/hook', '172.20.0.5'],
      ['http://192.168.1.1/hook', '192.168.1.1'],
      ['http://100.64.0.1/hook', '100.64.0.1'],
      ['http://0.0.0.0:9000/hook', '0.0.0.0'],
      // Spellings URL parsing turns into loopback.
      ['http://2130706433/hook', '127.0.0.1'],
      ['http://0x7f.1/hook', '127.0.0.1'],
      ['http://[::ffff:127.0.0.1]/hook', '::ffff:7f00:1'],
      ['http://[fe80::1]/hook', 'fe80::1'],
      ['http://[fd00::5]/hook', 'fd00::5'],
    ] as const) {
      expect(checkWebhook({ url, secret: SECRET }), url).toBe(`webhook.url: ${host} is a loopback, private or link-local address; webhooks go to public receivers (AGENT_WEBHOOK_ALLOW_PRIVATE=true allows others, for development)`);
      expect(checkWebhook({ url, secret: SECRET }, true), url).toBeUndefined();
    }
  });

  it('classifies addresses: non-public ranges, IPv4-mapped IPv6 by the IPv4 address', () => {
    for (const address of ['127.0.0.53', '10.0.0.1', '172.31.255.255', '192.168.0.1', '169.254.0.1', '::1', '::ffff:10.0.0.1', '::ffff:a00:1', 'fe80::abcd', 'fc00::1', '224.0.0.1', '255.255.255.255']) {
      expect(isNonPublicAddress(address), address).toBe(true);
    }
    for (const address of ['8.8.8.8', '172.32.0.1', '1.1.1.1', '2606:4700:4700::1111', '::ffff:8.8.8.8', 'not-an-address']) {
      expect(isNonPublicAddress(address), address).toBe(false);
    }
  });

  it('checks the addresses a name resolves to where a delivery connects, so a name rebound to a private address is refused', async () => {
    const lookupOf = (hostname: string, all: boolean) =>
      new Promise<{ error: Error | null; address: unknown }>((resolve) => publicOnlyLookup(hostname, { all }, (error, address) => resolve({ error, address })));
    for (const all of [false, true]) {
      const refused = await lookupOf('localhost', all);
      expect(refused.error).toBeInstanceOf(NonPublicAddressError);
      expect(refused.error!.message).toMatch(/^webhook\.url: localhost resolves to (127\.0\.0\.1|::1), which is a loopback, private or link-local address/);
    }
    expect(await lookupOf('8.8.8.8', false)).toEqual({ error: null, address: '8.8.8.8' });
    expect(await lookupOf('8.8.8.8', true)).toEqual({ error: null, address: [{ address: '8.8.8.8', family: 4 }] });
  });

  it('deliver() without allowPrivate sends nothing to a loopback receiver and says why', async () => {
    const { url, deliveries } = await receiver(() => 200);
    const { sender: webhooks } = sender({ allowPrivate: false });
    expect(await webhooks.deliver(finishedJob(), { url, secret: SECRET })).toMatch(/^failed: webhook\.url: 127\.0\.0\.1 is a loopback, private or link-local address/);
    expect(deliveries).toEqual([]);
  });

  it('says what is wrong, naming the field, without echoing credentials', () => {
    expect(checkWebhook({ url: '', secret: SECRET })).toBe('webhook.url: required (an http or https URL)');
    expect(checkWebhook({ url: 'hooks.example.com/x', secret: SECRET })).toBe('webhook.url: not a URL (expected http://host/path or https://host/path)');
    expect(checkWebhook({ url: 'ftp://hooks.example.com/x', secret: SECRET })).toBe('webhook.url: expected an http or https URL, not "ftp:"');
    expect(checkWebhook({ url: 'file:///etc/passwd', secret: SECRET })).toBe('webhook.url: expected an http or https URL, not "file:"');
    expect(checkWebhook({ url: `https://${'a'.repeat(2050)}.example.com/`, secret: SECRET })).toBe('webhook.url: longer than 2048 characters');
    const withCredentials = checkWebhook({ url: 'https://bot:hunter2hunter2@hooks.example.com/x', secret: SECRET });
    expect(withCredentials).toMatch(/^webhook\.url: must not carry credentials/);
    expect(withCredentials).not.toContain('hunter2');
    expect(checkWebhook({ url: 'https://hooks.example.com/x', secret: '' })).toBe('webhook.secret: required (it signs every delivery)');
  });

  it('is what deliver() answers for a webhook it cannot use, without sending anything', async () => {
    const { sender: webhooks } = sender();
    expect(await webhooks.deliver(finishedJob(), { url: 'https://hooks.example.com/x', secret: '' })).toBe('failed: webhook.secret: required (it signs every delivery)');
  });
});
