import { describe, expect, it } from 'vitest';
import { MockAdapter, compileSchema, parseProviderConfig, parseStructured, valueFor } from '@elexirion/provider';

const schema = {
  type: 'object',
  required: ['title', 'steps', 'priority'],
  properties: {
    title: { type: 'string', minLength: 3 },
    steps: { type: 'array', items: { type: 'string' }, minItems: 2 },
    priority: { enum: ['low', 'high'] },
    estimate: { type: 'integer', minimum: 1, maximum: 5 },
  },
};

describe('structured output', () => {
  const { validate } = compileSchema(JSON.stringify(schema));

  it('accepts JSON that matches the schema, also inside a ```json fence', () => {
    const value = { title: 'Plan', steps: ['a', 'b'], priority: 'high' };
    expect(parseStructured(JSON.stringify(value), validate)).toEqual({ json: JSON.stringify(value), error: '' });
    expect(parseStructured('```json\n' + JSON.stringify(value) + '\n```', validate).json).toBe(JSON.stringify(value));
  });

  it('reports text that is not JSON, and JSON that breaks the schema, with where', () => {
    expect(parseStructured('Sure! Here is the plan: {', validate).error).toMatch(/^the answer is not valid JSON/);
    expect(parseStructured('{"title":"Plan","steps":["a"],"priority":"high"}', validate).error).toBe(
      'the answer does not match the schema: /steps must NOT have fewer than 2 items',
    );
  });

  it('refuses a schema that is not JSON or not a schema', () => {
    expect(() => compileSchema('{type: object}')).toThrow(/json_schema: not valid JSON/);
    expect(() => compileSchema('[1,2]')).toThrow('json_schema: expected a JSON Schema object');
    expect(() => compileSchema('{"type": 12}')).toThrow(/json_schema: not a usable JSON Schema/);
  });
});

describe('mock adapter', () => {
  const knobs = { latencyMs: 0, errorRate: 0, errorStatus: 503, streamChunkDelayMs: 0, streamChunkChars: 5 };
  const request = (content: string, extra = {}) => ({ model: 'mock', system: '', messages: [{ role: 'user' as const, content }], maxTokens: 1000, stopSequences: [], ...extra });
  const mock = new MockAdapter(
    [
      { pattern: 'refactor', response: 'short match' },
      { pattern: 'refactor this code', response: 'long match' },
    ],
    knobs,
  );

  it('answers with the longest matching pattern, case-insensitively', async () => {
    expect((await mock.complete(request('Please REFACTOR THIS CODE now'), new AbortController().signal)).text).toBe('long match');
    expect((await mock.complete(request('refactor it'), new AbortController().signal)).text).toBe('short match');
  });

  it('labels a synthetic answer and derives it from the prompt, the same every time', async () => {
    const first = await mock.complete(request('tell me about tides'), new AbortController().signal);
    const second = await mock.complete(request('tell me about tides'), new AbortController().signal);
    expect(first.text).toMatch(/^\[mock answer\] You asked about: "tell me about tides"/);
    expect(second).toEqual(first);
    expect(first.outputTokens).toBeGreaterThan(0);
  });

  it('returns JSON that satisfies the schema for a structured request', async () => {
    const answer = await mock.complete(request('plan the work', { jsonSchema: schema }), new AbortController().signal);
    const { validate } = compileSchema(JSON.stringify(schema));
    expect(parseStructured(answer.text, validate).error).toBe('');
    expect(valueFor({ type: 'string', minLength: 40 }, 'x')).toHaveLength(40);
  });

  it('streams the answer in chunks of the configured size, then the result', async () => {
    const parts: string[] = [];
    let done: unknown;
    for await (const event of mock.stream(request('refactor this code'), new AbortController().signal)) {
      if (event.type === 'delta') parts.push(event.text);
      else done = event.result;
    }
    expect(parts).toEqual(['long ', 'match']);
    expect(done).toMatchObject({ text: 'long match', finishReason: 'stop' });
  });

  it('fails exactly the configured fraction of requests with the configured status', async () => {
    const flaky = new MockAdapter([], { ...knobs, errorRate: 0.25, errorStatus: 529 });
    const outcomes: string[] = [];
    for (let i = 0; i < 8; i += 1) {
      outcomes.push(await flaky.complete(request('x'), new AbortController().signal).then(() => 'ok', (error) => String(error.status)));
    }
    expect(outcomes.filter((outcome) => outcome === '529')).toHaveLength(2);
  });
});

describe('provider config', () => {
  it('names the place of a mistake', () => {
    expect(() => parseProviderConfig('default_alias: nope\naliases: {}\nproviders: {}', 'p.yaml')).toThrow(/^p.yaml: providers.anthropic:/);
    expect(() => parseProviderConfig('aliases: [', 'p.yaml')).toThrow(/^p.yaml: malformed YAML/);
  });
});
