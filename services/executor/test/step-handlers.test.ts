import { AbortError } from 'abort-controller-x';
import { describe, expect, it } from 'vitest';
import { Status } from '@elexirion/kit';
import type { StepOfType } from '../src/engine/step-context.js';
import { STEP_HANDLERS, type StepHandlers } from '../src/engine/steps/index.js';
import { runTransform } from '../src/engine/steps/transform.js';
import { STEP_TYPES } from '../src/pipeline/schema.js';
import type { RunCheckpoint } from '../src/state/checkpoint-store.js';
import { answer, providerError, testEngine } from './engine-support.js';

describe('the step handler table', () => {
  it('has one handler for every step type of the schema, and nothing else', () => {
    expect(Object.keys(STEP_HANDLERS).sort()).toEqual([...STEP_TYPES].sort());
    for (const type of STEP_TYPES) expect(typeof STEP_HANDLERS[type]).toBe('function');
  });

  it('does not compile without a step type, or with a handler of another type', () => {
    const { pipeline: _left, ...withoutPipeline } = STEP_HANDLERS;
    // @ts-expect-error the table must name every step type
    const missing: StepHandlers = withoutPipeline;
    // @ts-expect-error a transform handler cannot run parallel steps
    const mismatched: StepHandlers = { ...STEP_HANDLERS, parallel: runTransform };
    // One member of Step holds three types; each of them is a step type of its own.
    const claude: StepOfType<'claude'> = { type: 'claude', name: 'ask', prompt: 'hi' };
    expect([missing, mismatched, claude]).toHaveLength(3);
  });
});

describe('children of parallel and for_each', () => {
  it('stop at the first failing parallel child: the running ones are aborted, none starts after it', async () => {
    const engine = testEngine(async (call) => {
      const step = call.request.metadata.step;
      if (step === 'a') throw providerError(Status.INVALID_ARGUMENT, 'bad request');
      if (step === 'b') {
        await new Promise((resolve) => call.signal!.addEventListener('abort', resolve));
        throw new AbortError();
      }
      return answer(step!);
    });
    const pipeline = `
workflow:
  name: fan
  steps:
    - name: all
      type: parallel
      max_parallel: 2
      steps:
        - { name: b, type: claude, prompt: "b" }
        - { name: a, type: claude, prompt: "a" }
        - { name: c, type: claude, prompt: "c" }
        - { name: d, type: claude, prompt: "d" }
`;
    const error = await engine.run(pipeline).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: Status.INVALID_ARGUMENT, details: 'fan: step "a": bad request' });
    expect(engine.calls.map((call) => call.request.metadata.step)).toEqual(['b', 'a']);
    expect(engine.calls[0]!.signal!.aborted).toBe(true);
    // The sibling stopped for "a" is told as stopped, not as out of time.
    expect(engine.steps.map((step) => [step.name, step.status, step.error])).toEqual([
      ['a', 'failed', 'fan: step "a": bad request'],
      ['b', 'failed', 'fan: step "b" was stopped: step "a" failed'],
      ['all', 'failed', 'fan: step "a": bad request'],
    ]);
  });

  it('tell a for_each iteration stopped by another one failing as stopped, naming that iteration', async () => {
    const engine = testEngine(async (call) => {
      if (call.request.messages.at(-1)!.content === 'item 1') throw providerError(Status.FAILED_PRECONDITION, 'refused');
      await new Promise((resolve) => call.signal!.addEventListener('abort', resolve));
      throw new AbortError();
    });
    const pipeline = `
workflow:
  name: loop
  steps:
    - name: each
      type: for_each
      items: [0, 1]
      concurrency: 2
      steps:
        - { name: say, type: claude, prompt: "item {{loop.item}}" }
`;
    const error = await engine.run(pipeline).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: Status.FAILED_PRECONDITION, details: 'loop: step "each[1]/say": refused' });
    expect(engine.steps.map((step) => [step.name, step.error])).toEqual([
      ['each[1]/say', 'loop: step "each[1]/say": refused'],
      ['each[0]/say', 'loop: step "each[0]/say" was stopped: step "each[1]" failed'],
      ['each', 'loop: step "each[1]/say": refused'],
    ]);
  });

  it('keep for_each iterations in item order and stop them at the first failure', async () => {
    const engine = testEngine((call) => {
      const text = call.request.messages.at(-1)!.content;
      if (text === 'item 2') throw providerError(Status.FAILED_PRECONDITION, 'refused');
      return answer(text.toUpperCase());
    });
    const pipeline = (items: string) => `
workflow:
  name: loop
  steps:
    - name: each
      type: for_each
      items: ${items}
      concurrency: 1
      steps:
        - { name: say, type: claude, prompt: "item {{loop.item}}" }
`;
    const result = await engine.run(pipeline('[0, 1]'));
    expect(result.output).toBe('["ITEM 0","ITEM 1"]');
    expect(result.steps.map((step) => step.name)).toEqual(['each[0]/say', 'each[1]/say', 'each']);

    engine.calls.length = 0;
    const error = await engine.run(pipeline('[1, 2, 3, 4]')).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: Status.FAILED_PRECONDITION, details: 'loop: step "each[1]/say": refused' });
    expect(engine.calls).toHaveLength(2);
  });
});

describe('a resumed run', () => {
  it('takes the children a failed loop had completed as they were, and the variables they set, and runs only the rest', async () => {
    const engine = testEngine((call) => answer(call.request.messages.at(-1)!.content.toUpperCase()));
    const pipeline = `
workflow:
  name: loop
  steps:
    - name: each
      type: for_each
      items: [0, 1]
      concurrency: 1
      steps:
        - { name: pick, type: set_variable, variable: chosen, value: "{{loop.item}}" }
        - { name: say, type: claude, prompt: "item {{vars.chosen}}" }
`;
    const done = (name: string, type: string, output: string, json?: unknown) => ({
      name,
      type,
      status: 'completed' as const,
      output,
      ...(json === undefined ? {} : { json }),
      provider: '',
      model: '',
      usage: { inputTokens: 0, outputTokens: 0, costUsd: 0 },
      attempts: 0,
      durationMs: 1,
      promptVersion: '',
    });
    const now = new Date().toISOString();
    // Failed in "each[1]/say": iteration 0 and the first step of iteration 1 had completed.
    const resume: RunCheckpoint = {
      runId: 'run-1',
      jobId: '',
      pipeline: 'loop',
      source: { kind: 'inline', yaml: pipeline },
      inputs: {},
      promptOverrides: {},
      sessionKey: '',
      steps: [done('each[0]/pick', 'set_variable', '0', 0), done('each[0]/say', 'claude', 'ITEM 0'), done('each[1]/pick', 'set_variable', '1', 1)],
      vars: {},
      status: 'failed',
      startedAt: now,
      updatedAt: now,
    };
    const result = await engine.run(pipeline, { resume });
    expect(engine.calls.map((call) => call.request.messages.at(-1)!.content)).toEqual(['item 1']);
    expect(result.output).toBe('["ITEM 0","ITEM 1"]');
    expect(result.steps.map((step) => step.name)).toEqual(['each[0]/pick', 'each[0]/say', 'each[1]/pick', 'each[1]/say', 'each']);
  });
});

describe('LLM steps', () => {
  it('take a prompt override only when one is given for them, whatever their name', async () => {
    const engine = testEngine((call) => answer(call.request.messages.at(-1)!.content));
    const pipeline = 'workflow:\n  name: names\n  steps:\n    - { name: toString, type: claude, prompt: "from the YAML" }\n    - { name: constructor, type: claude, prompt: "also the YAML" }\n';
    const plain = await engine.run(pipeline);
    expect(plain.steps.map((step) => [step.output, step.promptVersion])).toEqual([
      ['from the YAML', 'yaml'],
      ['also the YAML', 'yaml'],
    ]);
    const overridden = await engine.run(pipeline, { promptOverrides: { constructor: 'overridden' } });
    expect(overridden.steps.map((step) => [step.output, step.promptVersion])).toEqual([
      ['from the YAML', 'yaml'],
      ['overridden', 'override'],
    ]);
  });
});
