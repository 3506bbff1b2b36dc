import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ClientError, Status } from 'nice-grpc';
import { stopAll, TEST_KEYS, collectStream, startProvider, userMessage, type ProviderUnderTest } from '@elexirion/testing';

let provider: ProviderUnderTest;

beforeAll(async () => {
  provider = await startProvider();
});

afterAll(async () => {
  await provider?.stop();
  await stopAll();
});

beforeEach(() => {
  for (const fake of Object.values(provider.fakes)) fake.reset();
});

const vendors = [
  { alias: 'claude', vendor: 'anthropic', model: 'claude-sonnet-5', price: { input: 3, output: 15 } },
  { alias: 'gemini', vendor: 'gemini', model: 'gemini-2.5-flash', price: { input: 0.3, output: 2.5 } },
  { alias: 'openai', vendor: 'openai', model: 'gpt-4o-mini', price: { input: 0.15, output: 0.6 } },
] as const;

describe.each(vendors)('the $vendor adapter against a fake speaking its wire format', ({ alias, vendor, model, price }) => {
  it('completes, reporting who served it, usage and cost from the price table', async () => {
    const fake = provider.fakes[vendor];
    fake.script({ text: `answer from ${vendor}`, usage: { inputTokens: 1_200, outputTokens: 3_400 } });
    const answer = await provider.client.complete({
      messages: [userMessage('What is a circuit breaker?')],
      system: 'Be brief.',
      model: alias,
      temperature: 0.25,
      maxTokens: 300,
      stopSequences: ['END'],
    });
    expect(answer).toMatchObject({
      text: `answer from ${vendor}`,
      finishReason: 'stop',
      provider: vendor,
      model,
      attempts: 1,
      fallbackUsed: false,
      alias,
      usage: { inputTokens: 1_200, outputTokens: 3_400 },
    });
    expect(answer.usage!.costUsd).toBeCloseTo((1_200 * price.input + 3_400 * price.output) / 1_000_000, 10);
    expect(fake.requests).toHaveLength(1);
    const sent = fake.requests[0]!.url + JSON.stringify(fake.requests[0]!.body);
    expect(sent).toContain('What is a circuit breaker?');
    expect(sent).toContain('Be brief.');
    expect(sent).toContain('END');
    expect(sent).toContain(model);
  });

  it('streams text deltas, then one final message with usage and cost', async () => {
    const fake = provider.fakes[vendor];
    fake.script({ chunks: ['Streams ', 'arrive ', 'in pieces.'], usage: { inputTokens: 10, outputTokens: 20 } });
    const result = await collectStream(provider.client.streamComplete({ request: { messages: [userMessage('stream please')], model: alias } }));
    expect(result.error).toBeUndefined();
    expect(result.text).toBe('Streams arrive in pieces.');
    expect(result.deltas.length).toBeGreaterThanOrEqual(3);
    expect(result.done).toMatchObject({ text: 'Streams arrive in pieces.', provider: vendor, usage: { inputTokens: 10, outputTokens: 20 } });
    expect(result.done!.usage!.costUsd).toBeCloseTo((10 * price.input + 20 * price.output) / 1_000_000, 12);
    expect(fake.requests[0]!.stream).toBe(true);
  });
});

describe('the mock provider', () => {
  it('serves the mock alias, unary and streamed, with zero cost', async () => {
    const answer = await provider.client.complete({ messages: [userMessage('ping')], model: 'mock' });
    expect(answer).toMatchObject({ text: 'pong', provider: 'mock', usage: { costUsd: 0 } });
    const streamed = await collectStream(provider.client.streamComplete({ request: { messages: [userMessage('ping')], model: 'mock' } }));
    expect(streamed.text).toBe('pong');
    expect(streamed.done?.provider).toBe('mock');
  });
});

describe('aliases and presets', () => {
  it('takes max tokens and temperature from the preset unless the request sets them', async () => {
    await provider.client.complete({ messages: [userMessage('a')], model: 'claude_smart', preset: 'analysis' });
    expect(provider.fakes.anthropic.requests[0]!.body).toMatchObject({ max_tokens: 1024, temperature: 0.1, model: 'claude-sonnet-5' });
    await provider.client.complete({ messages: [userMessage('b')], model: 'claude_smart', preset: 'analysis', maxTokens: 50 });
    expect(provider.fakes.anthropic.requests[1]!.body).toMatchObject({ max_tokens: 50, temperature: 0.1 });
    await provider.client.complete({ messages: [userMessage('c')] });
    expect(provider.fakes.anthropic.requests[2]!.body).toMatchObject({ max_tokens: 256, temperature: 0.5 });
  });

  it('lists aliases and every provider with its health and breaker state', async () => {
    const listing = await provider.client.listModels({});
    expect(listing.offline).toBe(false);
    expect(listing.aliases.find((alias) => alias.name === 'claude_smart')).toEqual({
      name: 'claude_smart',
      targets: ['anthropic/claude-sonnet-5', 'gemini/gemini-2.5-pro'],
      presets: ['chat', 'analysis', 'production', 'development'],
    });
    expect(listing.providers.map((entry) => [entry.name, entry.configured, entry.breakerState])).toEqual([
      ['anthropic', true, 'closed'],
      ['gemini', true, 'closed'],
      ['openai', true, 'closed'],
      ['mock', true, 'closed'],
    ]);
    expect(listing.providers[0]!.baseUrl).toBe(provider.fakes.anthropic.url);
  });
});

describe('structured output', () => {
  const schema = JSON.stringify({
    type: 'object',
    required: ['steps'],
    properties: { steps: { type: 'array', items: { type: 'string' }, minItems: 1 } },
  });

  it('asks Gemini for JSON with the schema and returns the parsed value', async () => {
    provider.fakes.gemini.script({ text: '{"steps": ["read", "write"]}' });
    const answer = await provider.client.complete({ messages: [userMessage('plan')], model: 'gemini', jsonSchema: schema });
    expect(answer.json).toBe('{"steps":["read","write"]}');
    expect(answer.jsonError).toBe('');
    expect(provider.fakes.gemini.requests[0]!.body.generationConfig).toMatchObject({ responseMimeType: 'application/json' });
  });

  it('asks OpenAI with response_format json_schema', async () => {
    provider.fakes.openai.script({ text: '{"steps": ["one"]}' });
    const answer = await provider.client.complete({ messages: [userMessage('plan')], model: 'openai', jsonSchema: schema });
    expect(answer.json).toBe('{"steps":["one"]}');
    expect(provider.fakes.openai.requests[0]!.body.response_format).toMatchObject({ type: 'json_schema' });
  });

  it('reports an answer that is not valid JSON instead of passing it off as structured', async () => {
    provider.fakes.anthropic.script({ text: 'Sure, here are the steps: read, write.' });
    const answer = await provider.client.complete({ messages: [userMessage('plan')], model: 'claude', jsonSchema: schema });
    expect(answer.json).toBe('');
    expect(answer.jsonError).toMatch(/^the answer is not valid JSON/);
    expect(answer.text).toBe('Sure, here are the steps: read, write.');
    expect(JSON.stringify(provider.fakes.anthropic.requests[0]!.body.system)).toContain('JSON Schema');
  });

  it('reports JSON that does not match the schema', async () => {
    provider.fakes.openai.script({ text: '{"steps": []}' });
    const answer = await provider.client.complete({ messages: [userMessage('plan')], model: 'openai', jsonSchema: schema });
    expect(answer.jsonError).toBe('the answer does not match the schema: /steps: Array has too few items (0 < 1).');
  });
});

describe('schemas of different callers', () => {
  it('keeps each request\'s $id to itself: the same $id serves two schemas, and no other request can $ref it', async () => {
    const ask = (jsonSchema: string) => provider.client.complete({ messages: [userMessage('plan')], model: 'openai', jsonSchema });
    provider.fakes.openai.script({ text: '"a string"' }, { text: '42' });
    expect(await ask('{"$id": "shared", "type": "string"}')).toMatchObject({ json: '"a string"', jsonError: '' });
    expect(await ask('{"$id": "shared", "type": "number"}')).toMatchObject({ json: '42', jsonError: '' });
    const error = await ask('{"type": "object", "properties": {"plan": {"$ref": "shared"}}}').catch((caught) => caught);
    expect(error).toBeInstanceOf(ClientError);
    expect(error.code).toBe(Status.INVALID_ARGUMENT);
    expect(error.details).toBe('json_schema: $ref "shared" does not resolve within this schema');
    expect(provider.fakes.openai.requests).toHaveLength(2);
  });
});

describe('bad requests', () => {
  const cases: [string, Parameters<ProviderUnderTest['client']['complete']>[0], string][] = [
    ['no messages', { messages: [] }, 'messages: at least one message is required'],
    ['no user message', { messages: [{ role: 3, content: 'sys' }] }, 'messages: at least one user message is required'],
    ['an unknown alias', { messages: [userMessage('x')], model: 'gpt9' }, 'model: "gpt9" is neither an alias'],
    ['an unknown preset', { messages: [userMessage('x')], model: 'claude_smart', preset: 'turbo' }, 'preset: alias "claude_smart" has no preset "turbo" (known: chat, analysis, production, development)'],
    ['a bad target', { messages: [userMessage('x')], model: 'acme/model-1' }, 'model: "acme/model-1" is not "<provider>/<model>"'],
    ['a schema that is not JSON', { messages: [userMessage('x')], jsonSchema: '{nope' }, 'json_schema: not valid JSON'],
    ['a schema that refers to itself without end', { messages: [userMessage('x')], jsonSchema: '{"$ref": "#"}' }, 'json_schema: not a usable JSON Schema: it applies itself to the same value without end'],
    ['a $ref to no schema of its own', { messages: [userMessage('x')], jsonSchema: '{"$ref": "shared"}' }, 'json_schema: $ref "shared" does not resolve within this schema'],
    ['a temperature out of range', { messages: [userMessage('x')], temperature: 7 }, 'temperature: 7 is not between 0 and 2'],
  ];

  it.each(cases)('answers INVALID_ARGUMENT for %s, and calls no vendor', async (_name, request, message) => {
    const error = await provider.client.complete(request).catch((caught) => caught);
    expect(error).toBeInstanceOf(ClientError);
    expect(error.code).toBe(Status.INVALID_ARGUMENT);
    expect(error.details).toContain(message);
    expect(Object.values(provider.fakes).every((fake) => fake.requests.length === 0)).toBe(true);
  });
});

describe('metrics', () => {
  it('exports GenAI token usage, duration and cost under their Prometheus names', async () => {
    provider.fakes.anthropic.script({ usage: { inputTokens: 1_000_000, outputTokens: 0 } });
    await provider.client.complete({ messages: [userMessage('cost me')], model: 'claude' });
    const text = await provider.metrics();
    expect(text).toMatch(/gen_ai_client_token_usage_count\{gen_ai_operation_name="chat",gen_ai_provider_name="anthropic",gen_ai_request_model="claude-sonnet-5",gen_ai_response_model="claude-sonnet-5",gen_ai_token_type="input"\} \d+/);
    expect(text).toMatch(/gen_ai_client_operation_duration_seconds_count\{[^}]*gen_ai_provider_name="anthropic"[^}]*\} \d+/);
    const cost = /elexirion_provider_cost_usd_total\{provider="anthropic",model="claude-sonnet-5"\} ([\d.]+)/.exec(text);
    expect(Number(cost?.[1])).toBeGreaterThanOrEqual(3);
  });

  it('never shows a provider key in its logs', async () => {
    // A retried call of its own: the retry is logged (debug) with the upstream's error.
    provider.fakes.anthropic.script({ status: 503 }, { text: 'after a retry' });
    expect((await provider.client.complete({ messages: [userMessage('log me')], model: 'claude' })).text).toBe('after a retry');
    const output = provider.process.output();
    expect(output.length).toBeGreaterThan(0);
    for (const key of Object.values(TEST_KEYS)) expect(output).not.toContain(key);
  });
});
