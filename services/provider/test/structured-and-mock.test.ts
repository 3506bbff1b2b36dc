import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { Status } from '@elexirion/kit';
import { JsonSchemaError, MockAdapter, compileSchema, parseProviderConfig, parseStructured, valueFor } from '@elexirion/provider';

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
  const { validator } = compileSchema(JSON.stringify(schema));

  it('accepts JSON that matches the schema, also inside a ```json fence', () => {
    const value = { title: 'Plan', steps: ['a', 'b'], priority: 'high' };
    expect(parseStructured(JSON.stringify(value), validator)).toEqual({ json: JSON.stringify(value), error: '' });
    expect(parseStructured('```json\n' + JSON.stringify(value) + '\n```', validator).json).toBe(JSON.stringify(value));
  });

  it('reports text that is not JSON, and JSON that breaks the schema, with where', () => {
    expect(parseStructured('Sure! Here is the plan: {', validator).error).toMatch(/^the answer is not valid JSON/);
    expect(parseStructured('{"title":"Plan","steps":["a"],"priority":"high"}', validator).error).toBe(
      'the answer does not match the schema: /steps: Array has too few items (1 < 2).',
    );
    expect(parseStructured('{"steps":["a","b"],"priority":"high"}', validator).error).toBe(
      'the answer does not match the schema: (root): Instance does not have required property "title".',
    );
  });

  it('refuses a schema that is not JSON or not a schema, as INVALID_ARGUMENT', () => {
    expect(() => compileSchema('{type: object}')).toThrow(/json_schema: not valid JSON/);
    expect(() => compileSchema('[1,2]')).toThrow('json_schema: expected a JSON Schema object');
    expect(() => compileSchema('{"type": 12}')).toThrow(/^json_schema: not a usable JSON Schema: schema\/type must be/);
    expect(() => compileSchema('{"$schema": "http://example.com/my-draft"}')).toThrow(/json_schema: \$schema "http:\/\/example.com\/my-draft" is not a draft/);
    const error = (() => {
      try {
        compileSchema('{"type": 12}');
      } catch (caught) {
        return caught;
      }
    })();
    expect(error).toBeInstanceOf(JsonSchemaError);
    expect(error).toMatchObject({ code: Status.INVALID_ARGUMENT });
  });

  it.each([
    ['itself', '{"$ref": "#"}'],
    ['itself through a definition and anyOf', '{"allOf": [{"$ref": "#/definitions/a"}], "definitions": {"a": {"anyOf": [{"type": "null"}, {"$ref": "#"}]}}}'],
    ['itself through not', '{"not": {"$ref": "#"}}'],
    ['two definitions that refer to each other', '{"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"if": {"$ref": "#/$defs/a"}}}}'],
  ])('refuses a schema that applies %s to the same value without end', (_name, text) => {
    expect(() => compileSchema(text)).toThrow(JsonSchemaError);
    expect(() => compileSchema(text)).toThrow('json_schema: not a usable JSON Schema: it applies itself to the same value without end (a $ref cycle)');
  });

  it('accepts a recursive schema that moves into the value, and checks every level', () => {
    const { validator: tree } = compileSchema('{"type": "object", "properties": {"value": {"type": "integer"}, "children": {"type": "array", "items": {"$ref": "#"}}}}');
    expect(parseStructured('{"value": 1, "children": [{"value": 2, "children": []}]}', tree).error).toBe('');
    expect(parseStructured('{"value": 1, "children": [{"value": 2.5}]}', tree).error).toBe(
      'the answer does not match the schema: /children/0/value: Instance type "number" is invalid. Expected "integer".',
    );
  });

  it('resolves $ref only within the schema that holds it: an $id of one request never reaches another', () => {
    const { validator: strings } = compileSchema('{"$id": "shared", "type": "string"}');
    // Another caller may use the same $id for its own schema, as often as it likes.
    const { validator: numbers } = compileSchema('{"$id": "shared", "type": "number"}');
    expect(parseStructured('"text"', strings).error).toBe('');
    expect(parseStructured('12', numbers).error).toBe('');
    expect(parseStructured('"text"', numbers).error).toMatch(/^the answer does not match the schema/);
    // A $ref to an $id this schema does not define resolves to nothing, not to someone else's schema.
    expect(() => compileSchema('{"$ref": "shared"}')).toThrow('json_schema: $ref "shared" does not resolve within this schema');
    expect(() => compileSchema('{"properties": {"name": {"$ref": "shared"}}}')).toThrow(JsonSchemaError);
    expect(() => compileSchema('{"properties": {"a": {"$id": "twice"}, "b": {"$id": "twice"}}}')).toThrow(
      'json_schema: not a usable JSON Schema: Duplicate schema URI "twice".',
    );
    // Within one schema, an $id and a $defs pointer resolve.
    const { validator: own } = compileSchema(
      '{"properties": {"name": {"$id": "name", "type": "string"}, "alias": {"$ref": "name"}, "tags": {"$ref": "#/$defs/tags"}}, "$defs": {"tags": {"type": "array"}}}',
    );
    expect(parseStructured('{"name": "a", "alias": "b", "tags": []}', own).error).toBe('');
    expect(parseStructured('{"alias": 3}', own).error).toMatch(/^the answer does not match the schema: \/alias/);
    expect(parseStructured('{"tags": {}}', own).error).toMatch(/^the answer does not match the schema: \/tags/);
  });

  it('reports an answer nested too deeply to check instead of failing the call', () => {
    const { validator: tree } = compileSchema('{"items": {"$ref": "#"}}');
    const deep = '['.repeat(100_000) + ']'.repeat(100_000);
    expect(parseStructured(deep, tree)).toEqual({ json: '', error: 'the answer is nested too deeply to check' });
  });

  it('holds a bounded amount of memory however many distinct schemas arrive', () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const heapMb = () => {
      gc();
      gc();
      return process.memoryUsage().heapUsed / 1024 / 1024;
    };
    const distinct = (index: number) =>
      JSON.stringify({
        type: 'object',
        properties: Object.fromEntries(Array.from({ length: 30 }, (_, field) => [`field_${index}_${field}`, { type: field % 2 ? 'string' : 'array', items: { type: 'string', minLength: 1 } }])),
      });
    const before = heapMb();
    for (let index = 0; index < 2_000; index += 1) {
      const { validator: each } = compileSchema(distinct(index));
      expect(parseStructured('{}', each).error).toBe('');
    }
    // Ajv compiled each schema to code that V8 kept for good: about 80 KB each, 160 MB here.
    expect(heapMb() - before).toBeLessThan(40);
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
    const { validator } = compileSchema(JSON.stringify(schema));
    expect(parseStructured(answer.text, validator).error).toBe('');
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
