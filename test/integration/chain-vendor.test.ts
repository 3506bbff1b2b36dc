import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeAnthropic, type FakeUpstream, startNats, type NatsServer, stopAll, startStack, type Stack } from '@elexirion/testing';

const KEY = 'fake-anthropic-chain-test-0a1b2c3d4e5f';

describe('the whole chain with ANTHROPIC_BASE_URL pointed at a Messages-API server', () => {
  let nats: NatsServer;
  let anthropic: FakeUpstream;
  let stack: Stack;

  beforeAll(async () => {
    nats = await startNats();
    anthropic = await startFakeAnthropic({ apiKey: KEY });
    stack = await startStack('one-process-per-service', nats.url, { ANTHROPIC_API_KEY: KEY, ANTHROPIC_BASE_URL: anthropic.url });
  });

  afterAll(async () => {
    await stack?.stop();
    await anthropic?.close();
    await nats?.stop();
    await stopAll();
  });

  it('answers a chat with the upstream model, the chat preset and the pipeline system prompt', async () => {
    anthropic.script({ text: 'A real answer from Claude.', usage: { inputTokens: 100, outputTokens: 50 } });
    const response = await stack.gateway.chat({ message: 'Explain retries.' });
    expect(response.response).toBe('A real answer from Claude.');
    expect(response.pipelineUsed).toBe('general');
    expect(response.usage).toMatchObject({ inputTokens: 100, outputTokens: 50 });
    expect(response.usage!.costUsd).toBeCloseTo((100 * 3 + 50 * 15) / 1_000_000, 12);
    const sent = anthropic.requests[0]!.body;
    expect(sent).toMatchObject({ model: 'claude-sonnet-5', max_tokens: 2048, temperature: 0.7 });
    expect(JSON.stringify(sent.system)).toContain('You are Elexirion');
    expect(sent.messages).toEqual([{ role: 'user', content: 'Explain retries.' }]);
  });

  it('keeps the key out of every log line of every service', async () => {
    // A call of its own, so the check does not depend on the test before it.
    anthropic.script({ text: 'logged?' });
    expect((await stack.gateway.chat({ message: 'Log this call.' })).response).toBe('logged?');
    for (const spawned of Object.values(stack.processes)) expect(spawned.output()).not.toContain(KEY);
  });
});
