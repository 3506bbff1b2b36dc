import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { MockAdapter, UpstreamError, dspyRequest, loadMockResponses, parseMockResponses, type MockResponseEntry } from '@elexirion/provider';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const knobs = { latencyMs: 0, errorRate: 0, errorStatus: 503, streamChunkDelayMs: 0, streamChunkChars: 5 };
type Message = { role: 'user' | 'assistant'; content: string };
const request = (messages: Message[], system = '') => ({ model: 'mock', system, messages, maxTokens: 4000, stopSequences: [] });
const user = (content: string): Message => ({ role: 'user', content });
const assistant = (content: string): Message => ({ role: 'assistant', content });
const answerOf = (mock: MockAdapter, messages: Message[], system = '') => mock.answer(request(messages, system)).text;

describe('mock pattern table: context', () => {
  const mock = new MockAdapter(
    [
      { pattern: 'tides', response: 'no context' },
      { pattern: 'tides', context: 'Oceanographer', response: 'with context' },
    ],
    knobs,
  );

  it('answers a context entry when its context is in the system text, case-insensitively', () => {
    expect(answerOf(mock, [user('Explain the TIDES')], 'You are an oceanographer.')).toBe('with context');
  });

  it('answers a context entry when its context is in a message before the last user message (a demo)', () => {
    expect(answerOf(mock, [user('Who studies the sea?'), assistant('An OCEANOGRAPHER does.'), user('Explain the tides')])).toBe('with context');
    expect(answerOf(mock, [user('Ask the oceanographer'), assistant('Sure.'), user('Explain the tides')])).toBe('with context');
  });

  it('does not take the context from the last user message itself, nor answer when it is absent', () => {
    expect(answerOf(mock, [user('As an oceanographer, explain the tides')])).toBe('no context');
    expect(answerOf(mock, [user('Explain the tides')], 'You are a poet.')).toBe('no context');
  });

  it('needs the pattern in the last user message: a pattern only in a demo matches nothing', () => {
    const text = answerOf(mock, [user('Explain the tides'), assistant('Gravity.'), user('And the waves?')], 'You are an oceanographer.');
    expect(text).toMatch(/^\[mock answer\] You asked about: "And the waves\?"/);
  });
});

describe('mock pattern table: ranking', () => {
  it('prefers a context entry, then the longer context, then the longer pattern, then the earlier entry', () => {
    const entries: MockResponseEntry[] = [
      { pattern: 'the sky is blue', response: 'longest pattern, no context' },
      { pattern: 'sky', context: 'poet', response: 'short context' },
      { pattern: 'sky', context: 'painter', response: 'longer context' },
      { pattern: 'sky is', context: 'poet', response: 'short context, longer pattern' },
      { pattern: 'blue', response: 'first of two equal' },
      { pattern: 'bleu', response: 'unrelated' },
      { pattern: 'blue', response: 'second of two equal' },
    ];
    const mock = new MockAdapter(entries, knobs);
    const why = 'Why is the sky blue?';
    const sure = 'Are you sure the sky is blue?';
    expect(answerOf(mock, [user(why)])).toBe('first of two equal');
    expect(answerOf(mock, [user(sure)])).toBe('longest pattern, no context');
    expect(answerOf(mock, [user(why)], 'a poet')).toBe('short context');
    expect(answerOf(mock, [user(sure)], 'a poet')).toBe('short context, longer pattern');
    expect(answerOf(mock, [user(sure)], 'a poet and a painter')).toBe('longer context');
    // Whatever order the file lists them in.
    const reversed = new MockAdapter([...entries].reverse(), knobs);
    expect(answerOf(reversed, [user(sure)], 'a poet and a painter')).toBe('longer context');
    expect(answerOf(reversed, [user(sure)], 'a poet')).toBe('short context, longer pattern');
    expect(answerOf(reversed, [user(why)])).toBe('second of two equal');
  });

  it('keeps the behaviour of a table without contexts: the longest pattern wins', () => {
    const mock = new MockAdapter(loadMockResponses(`${root}config/mock-responses.yaml`), knobs);
    expect(answerOf(mock, [user('ping')])).toBe('pong');
    expect(answerOf(mock, [user('Hello, what is Elexirion?')])).toMatch(/^Elexirion runs LLM pipelines/);
  });
});

describe('mock pattern table: status entries', () => {
  const mock = new MockAdapter(
    [
      { pattern: 'busy', status: 529 },
      { pattern: 'slow down', status: 429, message: 'too many requests for this key' },
      { pattern: 'bad', status: 400 },
      { pattern: 'broken', status: 503, message: 'backend unavailable' },
      { pattern: 'broken', context: 'healthy', response: 'fine' },
    ],
    knobs,
  );
  const failure = (text: string, system = '') => mock.complete(request([user(text)], system), new AbortController().signal).then(() => undefined, (error: unknown) => error);

  it('fails with an upstream error of the status, classified like a vendor failure', async () => {
    const overloaded = await failure('the server is busy');
    expect(overloaded).toBeInstanceOf(UpstreamError);
    expect(overloaded).toMatchObject({ provider: 'mock', kind: 'http', status: 529, message: 'overloaded', retryable: true, countsAgainstProvider: true });
    expect(await failure('slow down please')).toMatchObject({ status: 429, message: 'too many requests for this key', retryable: true });
    expect(await failure('bad request')).toMatchObject({ status: 400, message: 'invalid request', retryable: false, countsAgainstProvider: false });
    expect(await failure('it is broken')).toMatchObject({ status: 503, message: 'backend unavailable', retryable: true });
  });

  it('fails the stream the same way, and a context entry can answer instead', async () => {
    const stream = mock.stream(request([user('busy')]), new AbortController().signal)[Symbol.asyncIterator]();
    await expect(stream.next()).rejects.toMatchObject({ status: 529 });
    expect(await failure('it is broken', 'a healthy system')).toBeUndefined();
  });
});

describe('mock pattern table: validation', () => {
  const problems = (text: string) => {
    try {
      parseMockResponses('mock.yaml', text);
    } catch (error) {
      return (error as Error).message;
    }
    return 'no error';
  };

  it('reads the new fields and takes an empty file as an empty table', () => {
    expect(parseMockResponses('mock.yaml', 'responses:\n  - { pattern: a, context: b, response: c }\n  - { pattern: d, status: 529, message: busy }\n')).toEqual([
      { pattern: 'a', context: 'b', response: 'c' },
      { pattern: 'd', status: 529, message: 'busy' },
    ]);
    expect(parseMockResponses('mock.yaml', '# nothing yet\n')).toEqual([]);
  });

  it('names the file, the place and the field of each mistake', () => {
    expect(problems('responses:\n  - { pattern: a }\n')).toBe('invalid mock responses: mock.yaml:2:5: responses.0: needs a response (or a status, to fail with that upstream error)');
    expect(problems('responses:\n  - pattern: a\n    response: b\n    status: 503\n')).toBe('invalid mock responses: mock.yaml:4:13: responses.0.status: an entry answers with a response or fails with a status, not both');
    expect(problems('responses:\n  - { pattern: a, status: 200 }\n')).toMatch(/^invalid mock responses: mock.yaml:2:27: responses.0.status: must be an HTTP error status \(400-599\)/);
    expect(problems('responses:\n  - { pattern: a, response: b, message: why }\n')).toMatch(/responses.0.message: is the error message of a status entry; this entry has no status$/);
    expect(problems('responses:\n  - { pattern: a, contxt: b, response: c }\n')).toMatch(/^invalid mock responses: mock.yaml:2:19: responses.0: unknown field "contxt"; did you mean "context"\?/);
    expect(problems('responses:\n  - { pattern: "", context: "", response: c }\n')).toBe(
      'invalid mock responses: mock.yaml:2:16: responses.0.pattern: must not be empty; mock.yaml:2:29: responses.0.context: must not be empty (leave it out to match any context)',
    );
    expect(problems('responses: [\n')).toMatch(/^invalid mock responses: mock.yaml:\d+:\d+: malformed YAML/);
  });

  it('names the file it cannot read', () => {
    expect(() => loadMockResponses('/nonexistent/mock.yaml')).toThrow(/^cannot read mock responses \/nonexistent\/mock.yaml: ENOENT/);
  });
});

// Messages DSPy 3.4's ChatAdapter and JSONAdapter really send (fixtures/dspy/make_fixtures.py).
interface DspyCase {
  name: string;
  adapter: 'chat' | 'json';
  signature: string;
  messages: { role: 'system' | 'user' | 'assistant'; content: string }[];
}
const fixtures = JSON.parse(readFileSync(new URL('./fixtures/dspy/messages.json', import.meta.url), 'utf8')) as { dspy_version: string; cases: DspyCase[] };
const fixture = (name: string) => fixtures.cases.find((entry) => entry.name === name)!;

/** The request a DSPy call arrives as: its system message as the system text. */
function fromDspy(entry: DspyCase) {
  const system = entry.messages.filter((message) => message.role === 'system').map((message) => message.content).join('\n');
  return request(entry.messages.filter((message): message is Message => message.role !== 'system'), system);
}

describe('mock provider: DSPy adapter formats', () => {
  const shipped = new MockAdapter(loadMockResponses(`${root}config/mock-responses.yaml`), knobs);
  const answers = Object.fromEntries(fixtures.cases.map((entry) => [entry.name, shipped.answer(fromDspy(entry)).text]));

  it('reads the output fields each adapter asks for, with their types', () => {
    expect(dspyRequest(fromDspy(fixture('predict')).messages.at(-1)!.content)).toEqual({ format: 'chat', fields: [{ name: 'label', type: 'str' }] });
    expect(dspyRequest(fromDspy(fixture('cot')).messages.at(-1)!.content)?.fields.map((field) => field.name)).toEqual(['reasoning', 'label']);
    const typed = [
      { name: 'priority', type: 'int' },
      { name: 'score', type: 'float' },
      { name: 'urgent', type: 'bool' },
      { name: 'tags', type: 'list[str]' },
      { name: 'category', type: 'str' },
    ];
    expect(dspyRequest(fromDspy(fixture('typed')).messages.at(-1)!.content)).toEqual({ format: 'chat', fields: typed });
    expect(dspyRequest(fromDspy(fixture('json_typed')).messages.at(-1)!.content)).toEqual({ format: 'json', fields: typed });
    expect(dspyRequest(fromDspy(fixture('json_cot')).messages.at(-1)!.content)?.format).toBe('json');
    expect(dspyRequest('Classify the sentiment of this product review: superb')).toBeUndefined();
  });

  it("answers in the ChatAdapter's format, the table's answer in the last field that is not reasoning", () => {
    expect(answers.predict_demos).toBe('[[ ## label ## ]]\npositive\n\n[[ ## completed ## ]]');
    expect(answers.cot_demos).toBe("[[ ## reasoning ## ]]\n[mock reasoning] The answer comes from the mock provider's pattern table.\n\n[[ ## label ## ]]\npositive\n\n[[ ## completed ## ]]");
    // The same review without demos: no context, so no entry; the synthetic answer in the field.
    expect(answers.predict).toMatch(/^\[\[ ## label ## \]\]\n\[mock answer\] You asked about: "\[\[ ## review ## \]\] The headphones sound superb/);
    expect(answers.predict).toMatch(/\n\n\[\[ ## completed ## \]\]$/);
    expect(answers.cot).toMatch(/^\[\[ ## reasoning ## \]\]\n\[mock reasoning\] No pattern .*\n\n\[\[ ## label ## \]\]\n\[mock answer\]/);
    // Instructions that call the reviews sarcastic: the longer context, the inverted label.
    expect(answers.sarcastic_demos).toBe('[[ ## label ## ]]\nnegative\n\n[[ ## completed ## ]]');
    expect(answers.typed).toMatch(/^\[\[ ## priority ## \]\]\n0\n\n\[\[ ## score ## \]\]\n0\n\n\[\[ ## urgent ## \]\]\nfalse\n\n\[\[ ## tags ## \]\]\n\[\]\n\n\[\[ ## category ## \]\]\n\[mock answer\]/);
  });

  it('puts a text answer in the last field that can hold it, and a value of its type in a later typed field', () => {
    const answer = 'Elexirion runs LLM pipelines described in YAML across Claude, Gemini and OpenAI-compatible models, and improves their prompts from real executions.';
    expect(answers.answer_confidence).toBe(`[[ ## answer ## ]]\n${answer}\n\n[[ ## confidence ## ]]\n0\n\n[[ ## completed ## ]]`);
    expect(JSON.parse(answers.json_answer_confidence!)).toEqual({ answer, confidence: 0 });
    // With the JSON Schema DSPy asks for, other fields take their value from it.
    const request = { ...fromDspy(fixture('json_answer_confidence')), jsonSchema: { type: 'object', properties: { answer: { type: 'string' }, confidence: { type: 'number', minimum: 0.5 } } } };
    expect(JSON.parse(shipped.answer(request).text)).toEqual({ answer, confidence: 1 });
  });

  it("answers the JSONAdapter's fallback with one JSON object of its fields", () => {
    const cot = JSON.parse(answers.json_cot!);
    expect(Object.keys(cot)).toEqual(['reasoning', 'label']);
    expect(cot.label).toMatch(/^\[mock answer\]/);
    expect(JSON.parse(answers.json_typed!)).toMatchObject({ priority: 0, score: 0, urgent: false, tags: [] });
  });

  const python = `${root}optimizer-py/.venv/bin/python`;
  it(`gives answers the installed DSPy (${fixtures.dspy_version}) parses, every field`, () => {
    expect(existsSync(python), 'optimizer-py/.venv (bash scripts/setup-python.sh)').toBe(true);
    const items = fixtures.cases.map((entry) => ({ adapter: entry.adapter, signature: entry.signature, completion: answers[entry.name] }));
    const output = execFileSync(python, [fileURLToPath(new URL('./fixtures/dspy/parse_answers.py', import.meta.url))], { input: JSON.stringify(items), encoding: 'utf8', timeout: 120_000 });
    const parsed = JSON.parse(output) as ({ fields: Record<string, unknown> } | { error: string })[];
    const byName = Object.fromEntries(fixtures.cases.map((entry, index) => [entry.name, parsed[index]!]));
    for (const [name, result] of Object.entries(byName)) expect(result, name).toHaveProperty('fields');
    expect(byName.predict_demos).toEqual({ fields: { label: 'positive' } });
    expect(byName.sarcastic_demos).toEqual({ fields: { label: 'negative' } });
    expect(byName.cot_demos).toMatchObject({ fields: { label: 'positive' } });
    expect(byName.typed).toMatchObject({ fields: { priority: 0, score: 0, urgent: false, tags: [] } });
    expect(byName.json_typed).toMatchObject({ fields: { priority: 0, score: 0, urgent: false, tags: [] } });
    expect(byName.answer_confidence).toMatchObject({ fields: { answer: expect.stringMatching(/^Elexirion runs/), confidence: 0 } });
    expect(byName.json_answer_confidence).toMatchObject({ fields: { answer: expect.stringMatching(/^Elexirion runs/), confidence: 0 } });
  });
});
