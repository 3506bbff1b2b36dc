// The shipped optimizer example's promise, checked on the mock itself: every review of
// optimizer-py/examples/review-sentiment.jsonl holds exactly one keyword of the table; the
// pipeline's prompt alone gets a wrong (synthetic) answer, a prompt with labelled demos the right
// label, sarcastic instructions the inverted one; in the executor's request shape and in DSPy's.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { MockAdapter, loadMockResponses } from '@elexirion/provider';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const knobs = { latencyMs: 0, errorRate: 0, errorStatus: 503, streamChunkDelayMs: 0, streamChunkChars: 24 };
const table = loadMockResponses(`${root}config/mock-responses.yaml`);
const mock = new MockAdapter(table, knobs);
const examples = readFileSync(`${root}optimizer-py/examples/review-sentiment.jsonl`, 'utf8')
  .split('\n')
  .filter((line) => line.trim() !== '')
  .map((line) => JSON.parse(line) as { review: string; label: string });
const pipeline = parse(readFileSync(`${root}pipelines/review-sentiment.yaml`, 'utf8')) as { workflow: { steps: { name: string; prompt: string; model: string }[] } };
const step = pipeline.workflow.steps[0]!;
const render = (review: string) => step.prompt.replace('{{inputs.review}}', review);
const inverted = (label: string) => (label === 'positive' ? 'negative' : 'positive');

type Message = { role: 'user' | 'assistant'; content: string };
const ask = (messages: Message[], system = '') => mock.answer({ model: 'mock', system, messages, maxTokens: 4000, stopSequences: [] }).text;
const demos: Message[] = [
  { role: 'user', content: render('The strap snapped after a week.') },
  { role: 'assistant', content: 'negative' },
];

// The messages DSPy's ChatAdapter sends for this step (fixtures/dspy/messages.json has the real ones).
const fixtures = JSON.parse(readFileSync(new URL('./fixtures/dspy/messages.json', import.meta.url), 'utf8')) as {
  cases: { name: string; messages: { role: string; content: string }[] }[];
};
function dspyCall(name: string, review: string): { system: string; messages: Message[] } {
  const messages = fixtures.cases.find((entry) => entry.name === name)!.messages;
  const fixtureReview = 'The headphones sound superb and the case feels sturdy.';
  const last = messages.at(-1)!;
  return {
    system: messages.filter((message) => message.role === 'system').map((message) => message.content).join('\n'),
    messages: [...messages.slice(0, -1).filter((message): message is Message => message.role !== 'system'), { role: 'user', content: last.content.replace(fixtureReview, review) }],
  };
}
const dspyLabel = (text: string) => /\[\[ ## label ## \]\]\n(.*)\n/.exec(text)?.[1];

describe('the shipped example: review-sentiment on the mock', () => {
  const keywords = [...new Set(table.filter((entry) => entry.context === 'positive').map((entry) => entry.pattern))];

  it('has at least 48 balanced examples, each with exactly one keyword of the table', () => {
    expect(examples.length).toBeGreaterThanOrEqual(48);
    expect(examples.filter((example) => example.label === 'positive')).toHaveLength(examples.length / 2);
    expect(examples.filter((example) => example.label === 'negative')).toHaveLength(examples.length / 2);
    expect(new Set(examples.map((example) => example.review)).size).toBe(examples.length);
    for (const { review } of examples) {
      const found = keywords.filter((keyword) => review.toLowerCase().includes(keyword));
      expect(found, review).toHaveLength(1);
      // The labels and the word that inverts them must come from the prompt, never from the review.
      expect(review.toLowerCase(), review).not.toMatch(/positive|negative|sarcastic/);
    }
    // Each keyword's three entries: right with either demo label, inverted with sarcastic.
    for (const keyword of keywords) {
      const entries = table.filter((entry) => entry.pattern === keyword);
      expect(entries.map((entry) => entry.context).sort()).toEqual(['negative', 'positive', 'sarcastic']);
    }
  });

  it('runs on the mock alias, and no keyword is in its prompt or in what DSPy adds', () => {
    expect(step).toMatchObject({ name: 'label', model: 'mock' });
    const boilerplate = [render(''), dspyCall('cot', '').messages.at(-1)!.content, dspyCall('predict', '').system].join('\n').toLowerCase();
    for (const entry of table) expect(boilerplate, entry.pattern).not.toContain(entry.pattern);
  });

  it('answers the YAML prompt alone wrong, with labelled demos right, with sarcastic instructions inverted', () => {
    for (const { review, label } of examples) {
      const question: Message = { role: 'user', content: render(review) };
      expect(ask([question]), review).toMatch(/^\[mock answer\]/);
      expect(ask([...demos, question]), review).toBe(label);
      expect(ask([question], 'Classify the sentiment: the reviews are sarcastic.'), review).toBe(inverted(label));
      expect(ask([...demos, question], 'The reviews are sarcastic.'), review).toBe(inverted(label));
    }
  });

  it('does the same for the requests DSPy sends (ChatAdapter, with and without demos, ChainOfThought)', () => {
    for (const { review, label } of examples) {
      const bare = dspyCall('predict', review);
      expect(dspyLabel(ask(bare.messages, bare.system)), review).toMatch(/^\[mock answer\]/);
      const cot = dspyCall('cot', review);
      expect(dspyLabel(ask(cot.messages, cot.system)), review).toMatch(/^\[mock answer\]/);
      const withDemos = dspyCall('predict_demos', review);
      expect(dspyLabel(ask(withDemos.messages, withDemos.system)), review).toBe(label);
      const cotDemos = dspyCall('cot_demos', review);
      expect(dspyLabel(ask(cotDemos.messages, cotDemos.system)), review).toBe(label);
      const sarcastic = dspyCall('sarcastic_demos', review);
      expect(dspyLabel(ask(sarcastic.messages, sarcastic.system)), review).toBe(inverted(label));
    }
  });
});
