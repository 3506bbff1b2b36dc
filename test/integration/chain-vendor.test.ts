import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeAnthropic, startFakeGemini, type FakeUpstream, startNats, type NatsServer, stopAll, startStack, type Stack } from '@elexirion/testing';

const KEY = 'fake-anthropic-chain-test-0a1b2c3d4e5f';
const GEMINI_KEY = 'fake-gemini-chain-test-9f8e7d6c5b4a';

describe('the whole chain with ANTHROPIC_BASE_URL pointed at a Messages-API server', () => {
  let nats: NatsServer;
  let anthropic: FakeUpstream;
  let gemini: FakeUpstream;
  let stack: Stack;

  beforeAll(async () => {
    nats = await startNats();
    anthropic = await startFakeAnthropic({ apiKey: KEY });
    gemini = await startFakeGemini({ apiKey: GEMINI_KEY });
    stack = await startStack('one-process-per-service', nats.url, {
      ANTHROPIC_API_KEY: KEY,
      ANTHROPIC_BASE_URL: anthropic.url,
      GEMINI_API_KEY: GEMINI_KEY,
      GEMINI_BASE_URL: gemini.url,
    });
  });

  afterAll(async () => {
    await stack?.stop();
    await anthropic?.close();
    await gemini?.close();
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

  it('says a fallback served, who served and what failed, at every level', async () => {
    anthropic.setDefault({ status: 529, errorMessage: 'Overloaded' });
    try {
      gemini.script({ text: 'Gemini served this chat.' }, { text: 'Gemini served this run.' });
      const chat = await stack.gateway.chat({ message: 'Anyone there?' });
      expect(chat.response).toBe('Gemini served this chat.');
      expect(chat.fallbackUsed).toBe(true);

      const run = await stack.gateway.executePipeline({ pipeline: 'general', inputs: { message: 'Anyone there?' } });
      expect(run.steps[0]).toMatchObject({ provider: 'gemini', fallbackUsed: true });
      expect(run.steps[0]!.failedTargets).toHaveLength(1);
      expect(run.steps[0]!.failedTargets[0]).toMatch(/^anthropic\/claude-sonnet-5: /);
    } finally {
      anthropic.setDefault({});
    }
    gemini.reset();
    // Served by its first choice again: no fallback reported.
    anthropic.script({ text: 'Claude is back.' });
    const back = await stack.gateway.chat({ message: 'And now?' });
    expect(back).toMatchObject({ response: 'Claude is back.', fallbackUsed: false });
  });
});
