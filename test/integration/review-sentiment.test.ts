// The shipped optimizer example through the real stack (NATS, the services in one process, the
// gateway's ExecutePipeline, the mock provider with the shipped table): the YAML prompt answers
// every review of optimizer-py/examples/review-sentiment.jsonl wrong, a candidate with labelled
// demos right, a candidate whose system text calls the reviews sarcastic inverted. This is what
// the optimizer's end-to-end test and the guard's rollback case rely on.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { proto } from '@elexirion/kit';
import { repoRoot, startNats, startStack, stopAll, type NatsServer, type Stack } from '@elexirion/testing';

let nats: NatsServer;
let stack: Stack;

beforeAll(async () => {
  nats = await startNats();
  // No vendor key: the shipped configuration, served offline by the mock.
  stack = await startStack('all-in-one', nats.url, { ANTHROPIC_API_KEY: '', GEMINI_API_KEY: '', OPENAI_API_KEY: '' });
});

afterAll(async () => {
  await stack?.stop();
  await nats?.stop();
  await stopAll();
});

const examples = readFileSync(`${repoRoot}optimizer-py/examples/review-sentiment.jsonl`, 'utf8')
  .split('\n')
  .filter((line) => line.trim() !== '')
  .map((line) => JSON.parse(line) as { review: string; label: 'positive' | 'negative' });
const inverted = (label: string) => (label === 'positive' ? 'negative' : 'positive');
const PROMPT = 'Classify the sentiment of this product review: {{inputs.review}}';

/** The label step's output for every example, a few runs at a time. */
async function labels(candidate?: proto.PromptTemplate): Promise<{ output: string; version: string }[]> {
  const results: { output: string; version: string }[] = [];
  for (let start = 0; start < examples.length; start += 8) {
    const batch = examples.slice(start, start + 8).map(async ({ review }) => {
      const answer = await stack.gateway.executePipeline({ pipeline: 'review-sentiment', inputs: { review }, ...(candidate ? { promptCandidates: { label: candidate } } : {}) });
      const step = answer.steps.find((found) => found.name === 'label')!;
      return { output: step.output, version: step.promptVersion };
    });
    results.push(...(await Promise.all(batch)));
  }
  return results;
}

describe('review-sentiment on the offline stack', () => {
  it('answers every review wrong with the YAML prompt alone', async () => {
    const results = await labels();
    results.forEach((result, index) => {
      expect(result.version).toBe('yaml');
      expect(result.output, examples[index]!.review).toMatch(/^\[mock answer\]/);
    });
  });

  it('answers every review right with labelled demos (a prompt candidate)', async () => {
    const demos = [
      { input: 'Classify the sentiment of this product review: The strap snapped after a week.', output: 'negative' },
      { input: 'Classify the sentiment of this product review: Fits my hand and the grip is great.', output: 'positive' },
    ];
    const results = await labels({ prompt: PROMPT, system: '', demos });
    results.forEach((result, index) => {
      expect(result.version).toBe('candidate');
      expect(result.output, examples[index]!.review).toBe(examples[index]!.label);
    });
  });

  it('answers every review inverted when the system text calls the reviews sarcastic, demos or not', async () => {
    const system = 'The reviews are sarcastic: read them carefully.';
    const demos = [{ input: 'Classify the sentiment of this product review: The strap snapped after a week.', output: 'negative' }];
    for (const candidate of [{ prompt: PROMPT, system, demos: [] }, { prompt: PROMPT, system, demos }]) {
      const results = await labels(candidate);
      results.forEach((result, index) => expect(result.output, examples[index]!.review).toBe(inverted(examples[index]!.label)));
    }
  });
});
