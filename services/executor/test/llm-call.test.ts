import { describe, expect, it } from 'vitest';
import { Status, proto, type ServiceClient } from '@elexirion/kit';
import { LlmCaller, completeRequest, renderPrompt, selectPrompt, type LlmCallOptions, type LlmStep } from '../src/engine/llm-call.js';
import type { Pipeline } from '../src/pipeline/schema.js';
import type { Scope, StepValue } from '../src/pipeline/templates.js';
import type { ServingVersion } from '../src/state/prompt-registry.js';
import { answer } from './engine-support.js';

const step: LlmStep = { type: 'claude_smart', name: 'answer', prompt: 'Answer: {{inputs.question}}', system: 'Be brief about {{inputs.question}}' };
const pipeline: Pipeline = { name: 'qa', description: '', inputs: {}, defaults: { preset: 'chat' }, steps: [step] };
const scope = (steps: Record<string, StepValue> = {}): Scope => ({ inputs: { question: 'tides' }, steps: new Map(Object.entries(steps)), vars: {} });
const noFiles = {
  readPromptFile: async (file: string): Promise<string> => {
    throw new Error(`no file ${file}`);
  },
};

function registry(version: ServingVersion | undefined) {
  const asked: (string | undefined)[][] = [];
  return {
    asked,
    select(pipelineName: string, stepName: string, sessionKey?: string) {
      asked.push([pipelineName, stepName, sessionKey]);
      return version;
    },
  };
}

function options(more: Partial<LlmCallOptions> = {}): LlmCallOptions {
  return { pipeline, step, scope: scope(), runId: 'run-1', signal: new AbortController().signal, deadline: undefined, ...more };
}

describe('prompt selection', () => {
  it('takes the override first, then the registry version for the session key, then the YAML prompt', () => {
    const version = { id: 'v2', weight: 10, prompt: 'Registry: {{inputs.question}}', demos: [{ input: 'q', output: 'a' }] };
    const withVersion = registry(version);
    expect(selectPrompt(withVersion, 'qa', step, 'Override', 'user-7')).toMatchObject({ prompt: 'Override', system: step.system, demos: [], version: 'override' });
    expect(withVersion.asked).toEqual([]);
    expect(selectPrompt(withVersion, 'qa', step, undefined, 'user-7')).toMatchObject({ prompt: version.prompt, system: step.system, demos: version.demos, version: 'v2' });
    expect(withVersion.asked).toEqual([['qa', 'answer', 'user-7']]);
    expect(selectPrompt(registry(undefined), 'qa', step, undefined, '')).toMatchObject({ prompt: step.prompt, version: 'yaml' });
    expect(selectPrompt(undefined, 'qa', step, undefined, '')).toMatchObject({ prompt: step.prompt, version: 'yaml' });
  });
});

describe('prompt rendering', () => {
  it('renders a template, and parts joined by blank lines, without waiting when no part is a file', () => {
    expect(renderPrompt(step.prompt, scope(), noFiles)).toBe('Answer: tides');
    const parts = renderPrompt([{ static: 'Q: {{inputs.question}}' }, { previous_response: 'plan', extract: 'steps[1]' }], scope({ plan: { output: '', json: { steps: ['a', 'b'] }, status: 'completed' } }), noFiles);
    expect(parts).toBe('Q: tides\n\nb');
  });

  it('reads file parts in order', async () => {
    const files = { readPromptFile: async (file: string) => `from ${file} on {{inputs.question}}` };
    await expect(renderPrompt([{ file: 'one.md' }, { static: 'then' }, { file: 'two.md' }], scope(), files)).resolves.toBe('from one.md on tides\n\nthen\n\nfrom two.md on tides');
  });
});

describe('the provider request', () => {
  it('sends demos as user/assistant pairs before the prompt, with model, preset and metadata', () => {
    const selected = { prompt: step.prompt, system: step.system, demos: [{ input: 'q1', output: 'a1' }], version: 'v2' };
    const request = completeRequest(options({ extraMessages: [{ role: proto.Role.ROLE_USER, content: 'again' }] }), selected, 'Answer: tides');
    expect(request.messages).toEqual([
      { role: proto.Role.ROLE_USER, content: 'q1' },
      { role: proto.Role.ROLE_ASSISTANT, content: 'a1' },
      { role: proto.Role.ROLE_USER, content: 'Answer: tides' },
      { role: proto.Role.ROLE_USER, content: 'again' },
    ]);
    expect(request).toMatchObject({ system: 'Be brief about tides', model: 'claude_smart', preset: 'chat', metadata: { pipeline: 'qa', step: 'answer', run_id: 'run-1', prompt_version: 'v2' } });
    expect(request).not.toHaveProperty('temperature');
    expect(completeRequest(options({ model: 'gemini' }), selected, 'x')).toMatchObject({ model: 'gemini', preset: '' });
  });
});

describe('LlmCaller', () => {
  it('streams deltas to the caller and answers with the final message, tagged with its prompt version', async () => {
    const provider = {
      async *streamComplete() {
        yield { delta: 'Hi' };
        yield { delta: ' there' };
        yield { done: answer('Hi there', { attempts: 2 }) };
      },
    } as unknown as ServiceClient<'provider'>;
    const deltas: string[] = [];
    const outcome = await new LlmCaller({ provider, prompts: () => undefined, loader: noFiles }).call(options({ onDelta: (text) => deltas.push(text) }));
    expect(deltas).toEqual(['Hi', ' there']);
    expect(outcome).toMatchObject({ output: 'Hi there', status: 'completed', attempts: 2, promptVersion: 'yaml', provider: 'fake' });
  });

  it('fails UNAVAILABLE when the stream ends without its final message', async () => {
    const provider = {
      async *streamComplete() {
        yield { delta: 'Hi' };
      },
    } as unknown as ServiceClient<'provider'>;
    const error = await new LlmCaller({ provider, prompts: () => undefined, loader: noFiles }).call(options({ onDelta: () => {} })).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: Status.UNAVAILABLE });
  });
});
