import { afterEach, describe, expect, it } from 'vitest';
import { ClientError, Status } from 'nice-grpc';
import { eventually, gate, stopAll, TEST_KEYS, collectStream, startProvider, testProviderConfig, userMessage, waitFor, type ProviderUnderTest } from '@elexirion/testing';

let provider: ProviderUnderTest | undefined;

afterEach(async () => {
  if (provider) {
    const output = provider.process.output();
    await provider.stop();
    provider = undefined;
    // Whatever a test made the provider log, no key may be in it.
    for (const key of Object.values(TEST_KEYS)) expect(output).not.toContain(key);
  }
  await stopAll();
});

describe('retries', () => {
  it('retries 529 overloaded and succeeds, reporting every attempt', async () => {
    provider = await startProvider();
    provider.fakes.anthropic.script({ status: 529 }, { status: 529 }, { text: 'third time lucky' });
    const answer = await provider.client.complete({ messages: [userMessage('hi')], model: 'claude' });
    expect(answer).toMatchObject({ text: 'third time lucky', attempts: 3, provider: 'anthropic', fallbackUsed: false });
    expect(provider.fakes.anthropic.requests).toHaveLength(3);
  });

  it('waits as long as retry-after says before the next attempt', async () => {
    provider = await startProvider();
    provider.fakes.openai.script({ status: 429, headers: { 'retry-after': '1' } }, { text: 'after the wait' });
    const answer = await provider.client.complete({ messages: [userMessage('hi')], model: 'openai' });
    expect(answer.text).toBe('after the wait');
    const [first, second] = provider.fakes.openai.requests;
    expect(second!.receivedAt - first!.receivedAt).toBeGreaterThanOrEqual(950);
  });

  it('reads Gemini retry hints from the error body', async () => {
    provider = await startProvider();
    provider.fakes.gemini.script({ status: 503, headers: { 'retry-after': '1' } }, { text: 'ok' });
    await provider.client.complete({ messages: [userMessage('hi')], model: 'gemini' });
    const [first, second] = provider.fakes.gemini.requests;
    expect(second!.receivedAt - first!.receivedAt).toBeGreaterThanOrEqual(950);
  });

  it.each([
    ['anthropic', 'claude', 400, Status.INVALID_ARGUMENT],
    ['anthropic', 'claude', 401, Status.FAILED_PRECONDITION],
    ['anthropic', 'claude', 403, Status.FAILED_PRECONDITION],
    ['anthropic', 'claude', 404, Status.NOT_FOUND],
    // OpenAI's whole answers are a direct POST (openai.ts): the same mapping as through the SDK.
    ['openai', 'openai', 400, Status.INVALID_ARGUMENT],
    ['openai', 'openai', 401, Status.FAILED_PRECONDITION],
    ['openai', 'openai', 403, Status.FAILED_PRECONDITION],
    ['openai', 'openai', 404, Status.NOT_FOUND],
  ] as const)('%s (model %s): never retries %i, and answers %s with the vendor message', async (vendor, model, status, code) => {
    provider ??= await startProvider();
    provider.fakes[vendor].reset();
    provider.fakes[vendor].script({ status, errorMessage: `the vendor refuses with ${status}` });
    const error = await provider.client.complete({ messages: [userMessage('hi')], model }).catch((caught) => caught);
    expect(error).toBeInstanceOf(ClientError);
    expect(error.code).toBe(code);
    expect(error.details).toContain(`the vendor refuses with ${status}`);
    expect(provider.fakes[vendor].requests).toHaveLength(1);
  });

  it('retries an OpenAI-compatible server that answers 200 with something other than JSON, saying so', async () => {
    provider = await startProvider();
    provider.fakes.openai.script({ rawBody: '<html>bad gateway page</html>' }, { rawBody: '<html>bad gateway page</html>' }, { text: 'a real answer' });
    const answer = await provider.client.complete({ messages: [userMessage('hi')], model: 'openai' });
    expect(answer).toMatchObject({ text: 'a real answer', attempts: 3 });
    provider.fakes.openai.setDefault({ rawBody: 'not json' });
    const error = await provider.client.complete({ messages: [userMessage('hi')], model: 'openai' }).catch((caught) => caught);
    expect(error.code).toBe(Status.UNAVAILABLE);
    expect(error.details).toContain('the answer is not JSON (HTTP 200, 8 bytes)');
  });

  it('retries a dropped connection', async () => {
    provider = await startProvider();
    provider.fakes.openai.script({ dropConnection: true }, { text: 'reconnected' });
    const answer = await provider.client.complete({ messages: [userMessage('hi')], model: 'openai' });
    expect(answer).toMatchObject({ text: 'reconnected', attempts: 2 });
  });

  it('gives up when the next backoff would outlast the caller deadline', async () => {
    provider = await startProvider();
    provider.fakes.anthropic.script({ status: 503, headers: { 'retry-after': '600' } });
    const error = await provider.client.complete({ messages: [userMessage('hi')], model: 'claude' }, { deadline: new Date(Date.now() + 20_000) }).catch((caught) => caught);
    // UNAVAILABLE, not DEADLINE_EXCEEDED: it answered before the deadline instead of waiting for it.
    expect(error.code).toBe(Status.UNAVAILABLE);
    expect(error.details).toContain('anthropic/claude-sonnet-5: ');
    expect(provider.fakes.anthropic.requests).toHaveLength(1);
  });
});

describe('fallback', () => {
  it('serves from the second target when the first is exhausted, and says so', async () => {
    provider = await startProvider();
    provider.fakes.anthropic.setDefault({ status: 503 });
    provider.fakes.gemini.script({ text: 'gemini saves the day' });
    const answer = await provider.client.complete({ messages: [userMessage('hi')], model: 'claude_smart' });
    expect(answer).toMatchObject({ text: 'gemini saves the day', provider: 'gemini', model: 'gemini-2.5-pro', fallbackUsed: true, attempts: 4 });
    expect(answer.failedTargets).toEqual([expect.stringMatching(/^anthropic\/claude-sonnet-5: .*\(503\), 3 attempts$/)]);
    expect(await provider.metrics()).toMatch(/elexirion_provider_fallbacks_total\{alias="claude_smart"\} 1/);
  });

  it('falls over before the first token of a stream', async () => {
    provider = await startProvider();
    provider.fakes.anthropic.setDefault({ status: 529 });
    provider.fakes.gemini.script({ chunks: ['from ', 'gemini'] });
    const result = await collectStream(provider.client.streamComplete({ request: { messages: [userMessage('hi')], model: 'claude_smart' } }));
    expect(result.error).toBeUndefined();
    expect(result.text).toBe('from gemini');
    expect(result.done).toMatchObject({ provider: 'gemini', fallbackUsed: true });
  });

  it("falls over when a 200 stream dies before its first delta (Anthropic's event: error)", async () => {
    provider = await startProvider();
    provider.fakes.anthropic.setDefault({ streamError: { afterChunks: 0, status: 529 } });
    provider.fakes.gemini.script({ chunks: ['from ', 'gemini'] });
    const result = await collectStream(provider.client.streamComplete({ request: { messages: [userMessage('hi')], model: 'claude_smart' } }));
    expect(result.error).toBeUndefined();
    expect(result.text).toBe('from gemini');
    expect(result.done).toMatchObject({ provider: 'gemini', fallbackUsed: true, attempts: 4 });
    // Overloaded is worth a retry, as the same error answered with HTTP 529 is.
    expect(result.done!.failedTargets).toEqual(['anthropic/claude-sonnet-5: stream error overloaded_error: Overloaded (529), 3 attempts']);
    expect(provider.fakes.anthropic.requests.map((request) => request.stream)).toEqual([true, true, true]);
  });

  it('takes an in-stream invalid_request_error as the 400 it stands for: no retry, no fallover, INVALID_ARGUMENT', async () => {
    provider = await startProvider();
    provider.fakes.anthropic.setDefault({ streamError: { afterChunks: 0, status: 400, message: 'prompt is too long' } });
    const result = await collectStream(provider.client.streamComplete({ request: { messages: [userMessage('hi')], model: 'claude_smart' } }));
    expect(result.error?.code).toBe(Status.INVALID_ARGUMENT);
    expect(result.error?.details).toBe('anthropic/claude-sonnet-5 rejected the request: stream error invalid_request_error: prompt is too long (400)');
    expect(provider.fakes.anthropic.requests).toHaveLength(1);
    expect(provider.fakes.gemini.requests).toHaveLength(0);
  });

  it('answers UNAVAILABLE naming every target when all of them fail', async () => {
    provider = await startProvider();
    provider.fakes.anthropic.setDefault({ status: 500 });
    provider.fakes.gemini.setDefault({ status: 503 });
    const error = await provider.client.complete({ messages: [userMessage('hi')], model: 'claude_smart' }).catch((caught) => caught);
    expect(error.code).toBe(Status.UNAVAILABLE);
    expect(error.details).toMatch(/^every target of "claude_smart" failed: anthropic\/claude-sonnet-5: .*; gemini\/gemini-2.5-pro: /);
  });
});

describe('mid-stream failure', () => {
  it('ends the stream with an error the client sees, never a stream that looks complete', async () => {
    provider = await startProvider();
    provider.fakes.anthropic.script({ chunks: ['The answer ', 'is ', 'forty-two.'], breakAfterChunks: 1 });
    const result = await collectStream(provider.client.streamComplete({ request: { messages: [userMessage('hi')], model: 'claude_smart' } }));
    expect(result.text).toBe('The answer ');
    expect(result.done).toBeUndefined();
    expect(result.error).toBeInstanceOf(ClientError);
    expect(result.error.code).toBe(Status.UNAVAILABLE);
    expect(result.error.details).toMatch(/^the stream from anthropic\/claude-sonnet-5 broke after 11 characters/);
    // No second provider was asked to start over mid-answer.
    expect(provider.fakes.gemini.requests).toHaveLength(0);
  });

  it("ends the stream with a clear error when Anthropic's event: error comes after the first delta", async () => {
    provider = await startProvider();
    provider.fakes.anthropic.script({ chunks: ['The answer ', 'is ', 'forty-two.'], streamError: { afterChunks: 1, status: 529 } });
    const result = await collectStream(provider.client.streamComplete({ request: { messages: [userMessage('hi')], model: 'claude_smart' } }));
    expect(result.text).toBe('The answer ');
    expect(result.done).toBeUndefined();
    expect(result.error).toBeInstanceOf(ClientError);
    expect(result.error.code).toBe(Status.UNAVAILABLE);
    expect(result.error.details).toBe('the stream from anthropic/claude-sonnet-5 broke after 11 characters: stream error overloaded_error: Overloaded (529)');
    expect(provider.fakes.gemini.requests).toHaveLength(0);
  });

  it.each([
    ['gemini', 'gemini/gemini-2.5-flash', 'The model is overloaded. Please try again later.'],
    ['openai', 'openai/gpt-4o-mini', 'stream error server_error: The server is overloaded or not ready yet. (500)'],
  ] as const)("ends %s's stream with a clear error on its in-stream error after the first delta", async (vendor, target, reason) => {
    provider = await startProvider();
    provider.fakes[vendor].script({ chunks: ['part one, ', 'part two'], streamError: { afterChunks: 1, status: 503 } });
    const result = await collectStream(provider.client.streamComplete({ request: { messages: [userMessage('hi')], model: vendor } }));
    expect(result.text).toBe('part one, ');
    expect(result.done).toBeUndefined();
    expect(result.error?.code).toBe(Status.UNAVAILABLE);
    expect(result.error?.details).toMatch(new RegExp(`^the stream from ${target} broke after 10 characters: `));
    expect(result.error?.details).toContain(reason);
  });

  it.each(['gemini', 'openai'] as const)('does the same for %s', async (vendor) => {
    provider = await startProvider();
    provider.fakes[vendor].script({ chunks: ['part one, ', 'part two'], breakAfterChunks: 1 });
    const result = await collectStream(provider.client.streamComplete({ request: { messages: [userMessage('hi')], model: vendor } }));
    expect(result.done).toBeUndefined();
    expect(result.error?.code).toBe(Status.UNAVAILABLE);
  });
});

describe('a streaming server that does not say text/event-stream', () => {
  it('still streams: the first delta reaches the caller while the server is still sending', async () => {
    provider = await startProvider();
    // An OpenAI-compatible server that sends its events without a Content-Type, slowly.
    provider.fakes.openai.script({ chunks: ['first ', 'second'], chunkDelayMs: 25_000, streamContentType: null });
    for await (const message of provider.client.streamComplete({ request: { messages: [userMessage('hi')], model: 'openai' } })) {
      expect(message.delta).toBe('first ');
      // Buffered, the first delta would only come once the server had finished.
      expect(provider.fakes.openai.requests[0]!.finishedAt).toBeUndefined();
      break;
    }
    await provider.fakes.openai.waitForAbort(0, 5_000);
  });
});

describe('circuit breaker', () => {
  const config = (cooldownMs: number) =>
    testProviderConfig({
      anthropic: { max_attempts: 1, breaker: { window_ms: 10_000, min_requests: 4, failure_rate: 0.5, cooldown_ms: cooldownMs } },
    });

  /** Four failed calls: enough to open the breaker. */
  async function openTheBreaker(under: ProviderUnderTest): Promise<void> {
    under.fakes.anthropic.setDefault({ status: 503 });
    for (let i = 0; i < 4; i += 1) {
      const error = await under.client.complete({ messages: [userMessage('hi')], model: 'claude' }).catch((caught) => caught);
      expect(error.code).toBe(Status.UNAVAILABLE);
    }
    expect(under.fakes.anthropic.requests).toHaveLength(4);
  }

  it('opens after enough failures, fails fast without calling the vendor, and sends claude_smart to its next target', async () => {
    // A cooldown longer than the test: the breaker stays open however slowly the test runs.
    provider = await startProvider({ config: config(600_000) });
    await openTheBreaker(provider);
    const listing = await provider.client.listModels({});
    expect(listing.providers.find((entry) => entry.name === 'anthropic')).toMatchObject({ breakerState: 'open', failureRate: 1 });
    expect(await provider.metrics()).toMatch(/elexirion_provider_breaker_state\{provider="anthropic"\} 2/);

    const fast = await provider.client.complete({ messages: [userMessage('hi')], model: 'claude' }).catch((caught) => caught);
    expect(fast.details).toMatch(/circuit breaker open/);
    expect(provider.fakes.anthropic.requests).toHaveLength(4);

    provider.fakes.gemini.script({ text: 'breaker bypassed' });
    const rerouted = await provider.client.complete({ messages: [userMessage('hi')], model: 'claude_smart' });
    expect(rerouted).toMatchObject({ provider: 'gemini', fallbackUsed: true });
    expect(provider.fakes.anthropic.requests).toHaveLength(4);
  });

  it('closes after a good probe once the cooldown is over', async () => {
    provider = await startProvider({ config: config(300) });
    await openTheBreaker(provider);
    provider.fakes.anthropic.setDefault({ text: 'recovered' });
    // Until the cooldown is over the breaker fails fast; then a probe goes through and closes it.
    const probe = await eventually('the breaker to let a probe through', async () => provider!.client.complete({ messages: [userMessage('hi')], model: 'claude' }));
    expect(probe.text).toBe('recovered');
    expect((await provider.client.listModels({})).providers[0]!.breakerState).toBe('closed');
    expect(await provider.metrics()).toMatch(/elexirion_provider_breaker_state\{provider="anthropic"\} 0/);
  });
});

describe('cancellation and deadlines', () => {
  it('aborts the vendor request when the caller cancels', async () => {
    provider = await startProvider();
    provider.fakes.openai.script({ hang: true });
    const controller = new AbortController();
    const call = provider.client.complete({ messages: [userMessage('hi')], model: 'openai' }, { signal: controller.signal }).catch((caught) => caught);
    await eventuallyRequested(provider, 'openai');
    controller.abort();
    expect((await call).name).toBe('AbortError');
    await provider.fakes.openai.waitForAbort(0, 5_000);
  });

  it.each([
    ['anthropic', 'claude'],
    ['openai', 'openai'],
  ] as const)('aborts a streaming %s request when the caller stops reading', async (vendor, model) => {
    provider ??= await startProvider();
    provider.fakes[vendor].reset();
    provider.fakes[vendor].script({ chunks: ['a', 'b', 'c', 'd'], chunkDelayMs: 500 });
    for await (const message of provider.client.streamComplete({ request: { messages: [userMessage('hi')], model } })) {
      expect(message.delta).toBe('a');
      break;
    }
    await provider.fakes[vendor].waitForAbort(0, 5_000);
  });

  it('answers DEADLINE_EXCEEDED at the caller deadline and aborts the vendor request', async () => {
    provider = await startProvider();
    provider.fakes.gemini.script({ hang: true });
    const error = await provider.client.complete({ messages: [userMessage('hi')], model: 'gemini' }, { deadline: new Date(Date.now() + 400) }).catch((caught) => caught);
    expect(error.code).toBe(Status.DEADLINE_EXCEEDED);
    await provider.fakes.gemini.waitForAbort(0, 5_000);
  });
});

describe('limits', () => {
  it('answers RESOURCE_EXHAUSTED beyond the concurrency limit and its queue', async () => {
    provider = await startProvider({ config: testProviderConfig({ openai: { max_concurrency: 1, max_queue: 1 } }) });
    // The vendor holds every answer until one call has been refused: one runs, one waits, one is refused.
    const refused = gate();
    provider.fakes.openai.setDefault({ until: refused.promise });
    const outcomes: string[] = [];
    const calls = [0, 1, 2].map(() =>
      provider!.client
        .complete({ messages: [userMessage('hi')], model: 'openai' })
        .then(() => 'ok', (error) => String(Status[error.code]))
        .then((outcome) => (outcomes.push(outcome), outcome)),
    );
    await waitFor('a call to be refused', () => outcomes.length > 0);
    refused.open();
    expect((await Promise.all(calls)).sort()).toEqual(['RESOURCE_EXHAUSTED', 'ok', 'ok']);
  });
});

describe('credentials', () => {
  it('reads keys from a mounted secrets folder and keeps them out of logs and errors', async () => {
    const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'elexirion-secrets-'));
    // A wrong key: the fake answers 401, whose message the SDK and our logs must not echo.
    writeFileSync(join(dir, 'OPENAI_API_KEY'), 'sk-wrong-key-that-must-stay-secret-1234\n');
    try {
      provider = await startProvider({ env: { OPENAI_API_KEY: '', PROVIDER_SECRETS_DIR: dir, OPENAI_ORG_ID: 'org-elexirion-test', OPENAI_PROJECT_ID: 'proj_elexirion' } });
      const error = await provider.client.complete({ messages: [userMessage('hi')], model: 'openai' }).catch((caught) => caught);
      expect(error.code).toBe(Status.FAILED_PRECONDITION);
      expect(error.details).not.toContain('sk-wrong-key');
      const header = provider.fakes.openai.requests[0]!.headers.authorization;
      expect(header).toBe('Bearer sk-wrong-key-that-must-stay-secret-1234');
      // The organization and project the SDK reads from the environment go along, as the SDK sends them.
      expect(provider.fakes.openai.requests[0]!.headers).toMatchObject({ 'openai-organization': 'org-elexirion-test', 'openai-project': 'proj_elexirion' });
      expect(provider.process.output()).not.toContain('sk-wrong-key-that-must-stay-secret-1234');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('hides the password of a base URL in its logs and in ListModels, and still calls it', async () => {
    const withPassword = (url: string) => url.replace('http://', 'http://proxy-user:base-url-pass-0042@');
    provider = await startProvider({ env: (fakes) => ({ ANTHROPIC_BASE_URL: withPassword(fakes.anthropic.url), OPENAI_BASE_URL: withPassword(fakes.openai.url) }) });
    const shown = (url: string) => url.replace('http://', 'http://proxy-user:***@');
    const listing = await provider.client.listModels({});
    expect(listing.providers.find((entry) => entry.name === 'anthropic')!.baseUrl).toBe(shown(provider.fakes.anthropic.url));
    expect(listing.providers.find((entry) => entry.name === 'openai')!.baseUrl).toBe(shown(provider.fakes.openai.url));
    expect(provider.process.output()).toContain(shown(provider.fakes.anthropic.url));
    const answer = await provider.client.complete({ messages: [userMessage('hi')], model: 'claude' });
    expect(answer.provider).toBe('anthropic');
    expect(JSON.stringify(listing)).not.toContain('base-url-pass-0042');
    expect(provider.process.output()).not.toContain('base-url-pass-0042');
  });

  it('serves everything from the mock when no vendor is configured, and says so', async () => {
    provider = await startProvider({ vendors: false });
    const answer = await provider.client.complete({ messages: [userMessage('ping')], model: 'claude_smart', preset: 'analysis' });
    expect(answer).toMatchObject({ provider: 'mock', text: 'pong' });
    expect((await provider.client.listModels({})).offline).toBe(true);
    expect(provider.process.output()).toContain('no provider API key set: every model is served by the offline mock provider');
  });
});

async function eventuallyRequested(under: ProviderUnderTest, vendor: 'anthropic' | 'gemini' | 'openai'): Promise<void> {
  await waitFor(`a request at the ${vendor} fake`, () => under.fakes[vendor].requests.length > 0);
}
