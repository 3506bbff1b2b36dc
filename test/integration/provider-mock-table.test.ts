import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Status } from 'nice-grpc';
import { startProvider, stopAll, testProviderConfig, userMessage, type ProviderUnderTest } from '@elexirion/testing';

// The mock's status entries through the real provider process: its retries, its status mapping
// and its circuit breaker treat them as a vendor's upstream errors.

let provider: ProviderUnderTest | undefined;
let dir: string | undefined;

afterEach(async () => {
  await provider?.stop();
  provider = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
  await stopAll();
});

const TABLE = `responses:
  - { pattern: ping, response: pong }
  - { pattern: bad request, status: 400 }
  - { pattern: slow down, status: 429, message: too many requests for this key }
  - { pattern: busy, status: 529 }
  - { pattern: busy, context: quiet hours, response: calm now }
`;

function metric(text: string, line: string): number {
  const found = text.split('\n').find((row) => row.startsWith(`${line} `));
  return found ? Number(found.slice(line.length + 1)) : 0;
}

describe('mock provider status entries', () => {
  it('are retried, mapped and counted by the breaker like a vendor failure', async () => {
    dir = mkdtempSync(join(tmpdir(), 'elexirion-mock-table-'));
    const table = join(dir, 'mock-responses.yaml');
    writeFileSync(table, TABLE);
    // Three successes, then six failures: the ninth outcome (the last 529) opens the breaker.
    const breaker = { window_ms: 600_000, min_requests: 9, failure_rate: 0.65, cooldown_ms: 600_000 };
    provider = await startProvider({ vendors: false, config: testProviderConfig({ mock: { breaker } }), env: { PROVIDER_MOCK_RESPONSES: table } });
    const { client } = provider;
    const ask = (text: string, system = '') => client.complete({ messages: [userMessage(text)], system, model: 'mock' }).catch((error: unknown) => error as { code: Status; details: string });

    expect(await ask('ping')).toMatchObject({ text: 'pong', attempts: 1 });
    // A context entry answers where its context is, the status entry elsewhere.
    expect(await ask('busy?', 'It is quiet hours.')).toMatchObject({ text: 'calm now' });

    // A client error ends the call at once (no retry) and does not count against the provider.
    expect(await ask('a bad request')).toMatchObject({ code: Status.INVALID_ARGUMENT, details: 'mock/mock rejected the request: invalid request (400)' });
    // Rate limited: retried up to max_attempts (3), then RESOURCE_EXHAUSTED with the message.
    const limited = await ask('slow down');
    expect(limited).toMatchObject({ code: Status.RESOURCE_EXHAUSTED });
    expect((limited as { details: string }).details).toContain('too many requests for this key (429), 3 attempts');
    // Overloaded: retried, then UNAVAILABLE; its failures open the breaker (6 of 9 outcomes failed).
    const overloaded = await ask('busy');
    expect(overloaded).toMatchObject({ code: Status.UNAVAILABLE });
    expect((overloaded as { details: string }).details).toContain('overloaded (529), 3 attempts');

    const refused = await ask('ping');
    expect(refused).toMatchObject({ code: Status.UNAVAILABLE });
    expect((refused as { details: string }).details).toContain('circuit breaker open');
    const metrics = await provider.metrics();
    expect(metric(metrics, 'elexirion_provider_breaker_state{provider="mock"}')).toBe(2);
    expect(metric(metrics, 'elexirion_provider_attempts_total{provider="mock",outcome="retryable_error"}')).toBe(6);
    expect(metric(metrics, 'elexirion_provider_attempts_total{provider="mock",outcome="error"}')).toBe(1);
    expect(metric(metrics, 'elexirion_provider_attempts_total{provider="mock",outcome="breaker_open"}')).toBe(1);
  });

  it('stop the provider at start-up when the table is wrong, naming the place', async () => {
    dir = mkdtempSync(join(tmpdir(), 'elexirion-mock-table-'));
    const table = join(dir, 'mock-responses.yaml');
    writeFileSync(table, 'responses:\n  - { pattern: busy, status: 529, response: calm }\n');
    const started = await startProvider({ vendors: false, env: { PROVIDER_MOCK_RESPONSES: table } }).then(
      (running) => {
        provider = running;
        return 'started';
      },
      (error: unknown) => String(error),
    );
    expect(started).toContain(`${table}:2:30: responses.0.status: an entry answers with a response or fails with a status, not both`);
  });
});
