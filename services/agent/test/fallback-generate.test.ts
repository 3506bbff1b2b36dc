import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ClientError, Status, proto } from '@elexirion/kit';
import { FallbackFailedError, NoFallbackError, fallbackName, generateFallback, recover } from '../src/fallback/index.js';

const { FailureClass } = proto;

const YAML = `
workflow:
  name: review
  description: Review the code.
  inputs:
    code: { type: string, required: true }
    goal: { type: string, default: clarity }
  defaults:
    preset: analysis
    step_timeout: 30s
    run_timeout: 1m
  steps:
    - name: analyse
      type: claude_smart
      prompt: "{{inputs.code}}"
    - name: fan
      type: parallel
      steps:
        - name: plan
          type: gemini_structured
          format: json
          schema: { type: object }
          timeout: 45s
          tools: [search]
          prompt: "{{steps.analyse.output}}"
`;

function definition(chains: Partial<proto.ModelChain>[]): proto.GetPipelineResponse {
  return proto.GetPipelineResponse.fromPartial({
    yaml: YAML,
    stepModels: [
      { step: 'analyse', type: 'claude_smart', model: 'claude_smart', preset: 'analysis' },
      { step: 'plan', type: 'gemini_structured', model: 'gemini', preset: '' },
    ],
    modelChains: chains.map((chain) => proto.ModelChain.fromPartial(chain)),
  });
}

const CHAINS = [
  { alias: 'claude_smart', targets: ['anthropic/claude-sonnet-5', 'gemini/gemini-2.5-pro'], presets: ['analysis', 'chat'] },
  { alias: 'claude_fast', targets: ['anthropic/claude-haiku-4-5'], presets: ['analysis'] },
  { alias: 'mock', targets: ['mock/mock'] },
  { alias: 'gemini', targets: ['gemini/gemini-2.5-pro', 'anthropic/claude-sonnet-5'], presets: [] },
  { alias: 'openai', targets: ['openai/gpt-4.1'], presets: ['analysis'] },
];

const workflowOf = (yaml: string) => (parse(yaml) as { workflow: Record<string, any> }).workflow;

describe('fallback pipelines by failure class', () => {
  it('overloaded: every LLM step on another vendor\'s chain, never the mock, presets only where the chain has them', () => {
    const generated = generateFallback(definition(CHAINS), { failureClass: FailureClass.FAILURE_CLASS_OVERLOADED, step: 'analyse' });
    expect(generated).toMatchObject({ name: 'review--fallback-overloaded', strategy: 'alternative_chain' });
    const workflow = workflowOf(generated.yaml);
    // claude_fast starts on anthropic as claude_smart does: another vendor (gemini) comes first.
    expect(workflow.steps[0]).toMatchObject({ name: 'analyse', model: 'gemini' });
    expect(workflow.steps[0].preset).toBeUndefined();
    expect(workflow.defaults).toEqual({ step_timeout: '30s', run_timeout: '1m' });
    // gemini's step goes to the first chain on another vendor.
    expect(workflow.steps[1].steps[0]).toMatchObject({ name: 'plan', model: 'claude_smart' });
  });

  it('prefers a chain whose first vendor\'s breaker is closed', () => {
    const chains = CHAINS.map((chain) => (chain.alias === 'gemini' ? { ...chain, firstTargetBreakerOpen: true } : chain));
    const workflow = workflowOf(generateFallback(definition(chains), { failureClass: FailureClass.FAILURE_CLASS_PROVIDER_ERROR, step: 'analyse' }).yaml);
    expect(workflow.steps[0]).toMatchObject({ model: 'openai', preset: 'analysis' });
  });

  it('has no alternative when every chain starts where the failed one does (offline: all mock)', () => {
    const offline = [{ alias: 'claude_smart', targets: ['mock/mock'] }, { alias: 'gemini', targets: ['mock/mock'] }];
    expect(() => generateFallback(definition(offline), { failureClass: FailureClass.FAILURE_CLASS_OVERLOADED, step: 'analyse' })).toThrow(NoFallbackError);
  });

  it('timeout: one step with the inputs only, a capped answer, twice the failed step\'s own timeout', () => {
    const workflow = workflowOf(generateFallback(definition(CHAINS), { failureClass: FailureClass.FAILURE_CLASS_TIMEOUT, step: 'fan/plan' }).yaml);
    expect(workflow.name).toBe('review--fallback-timeout');
    expect(workflow.steps).toEqual([
      { name: 'answer', type: 'llm', model: 'gemini', max_tokens: 1024, timeout: 90_000, system: 'Answer briefly and directly.', prompt: 'Task: Review the code.\n\ncode: {{inputs.code}}\ngoal: {{inputs.goal}}' },
    ]);
    expect(workflow.defaults).toEqual({ run_timeout: 90_000 });
    expect(workflow.inputs).toEqual({ code: { type: 'string', required: true }, goal: { type: 'string', default: 'clarity' } });
  });

  it('invalid_output and max_turns_exceeded: a single simple step on the failed step\'s model and preset', () => {
    for (const failureClass of [FailureClass.FAILURE_CLASS_INVALID_OUTPUT, FailureClass.FAILURE_CLASS_MAX_TURNS_EXCEEDED]) {
      const workflow = workflowOf(generateFallback(definition(CHAINS), { failureClass, step: 'analyse' }).yaml);
      expect(workflow.steps).toEqual([{ name: 'answer', type: 'llm', model: 'claude_smart', preset: 'analysis', system: 'Review the code.', prompt: 'code: {{inputs.code}}\ngoal: {{inputs.goal}}' }]);
    }
  });

  it('tool_restriction_violated: the same steps without their tools', () => {
    const generated = generateFallback(definition(CHAINS), { failureClass: FailureClass.FAILURE_CLASS_TOOL_RESTRICTION_VIOLATED, step: 'fan/plan' });
    const workflow = workflowOf(generated.yaml);
    expect(workflow.steps[1].steps[0].tools).toBeUndefined();
    expect(workflow.steps[1].steps[0]).toMatchObject({ name: 'plan', type: 'gemini_structured', timeout: '45s' });
    expect(workflow.defaults).toMatchObject({ preset: 'analysis' });
  });

  it('makes none for an unclassified failure, and keeps a long name within 64 characters', () => {
    expect(() => generateFallback(definition(CHAINS), { failureClass: FailureClass.FAILURE_CLASS_UNSPECIFIED, step: '' })).toThrow(NoFallbackError);
    const name = fallbackName('a'.repeat(64), FailureClass.FAILURE_CLASS_TOOL_RESTRICTION_VIOLATED);
    expect(name).toHaveLength(64);
    expect(name.endsWith('--fallback-tool_restriction_violated')).toBe(true);
  });
});

describe('recover', () => {
  const failure = proto.RunFailure.fromPartial({ runId: 'r1', pipeline: 'review', step: 'analyse', failureClass: FailureClass.FAILURE_CLASS_OVERLOADED, code: 'UNAVAILABLE', message: 'review: step "analyse": every target failed' });
  const original = { pipeline: 'review', inputs: { code: 'x' }, jobId: 'job-1', sessionKey: 's' };

  it('throws the caller\'s error unchanged when there is no run failure', async () => {
    const executor = { getPipeline: () => Promise.reject(new Error('not called')), execute: () => Promise.reject(new Error('not called')) };
    const notFound = new ClientError('/elexirion.v1.Executor/Execute', Status.NOT_FOUND, 'pipeline "review" not found');
    await expect(recover(executor as never, notFound, undefined, original, {})).rejects.toBe(notFound);
  });

  it('runs the generated pipeline once, inline, with the original inputs, job and session', async () => {
    const executed: proto.ExecuteRequest[] = [];
    const executor = {
      getPipeline: async () => definition(CHAINS),
      execute: async (request: proto.ExecuteRequest) => {
        executed.push(request);
        return proto.ExecuteResponse.fromPartial({ pipeline: 'review--fallback-overloaded', output: 'ok' });
      },
    };
    const { fallback, result } = await recover(executor as never, new Error('failed'), failure, original, {});
    expect(result.output).toBe('ok');
    expect(fallback).toMatchObject({ failureClass: FailureClass.FAILURE_CLASS_OVERLOADED, pipeline: 'review--fallback-overloaded', succeeded: true, originalError: 'analyse: UNAVAILABLE: review: step "analyse": every target failed' });
    expect(executed).toHaveLength(1);
    expect(executed[0]).toMatchObject({ pipeline: '', inlineYaml: fallback.yaml, inputs: { code: 'x' }, jobId: 'job-1', sessionKey: 's' });
  });

  it('keeps the original status and says why when no fallback can be made (offline: every chain is the mock)', async () => {
    const executor = { getPipeline: async () => definition([{ alias: 'claude_smart', targets: ['mock/mock'] }]), execute: () => Promise.reject(new Error('not called')) };
    const original503 = new ClientError('/elexirion.v1.Executor/Execute', Status.UNAVAILABLE, 'every target failed');
    const error = await recover(executor as never, original503, failure, original, {}).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: Status.UNAVAILABLE, details: expect.stringMatching(/^analyse: UNAVAILABLE: .*; no fallback: no provider chain other than "claude_smart"/) });
  });

  it('fails with the fallback\'s status and both failures when the fallback fails too', async () => {
    const executor = {
      getPipeline: async () => definition(CHAINS),
      execute: async () => {
        throw new ClientError('/elexirion.v1.Executor/Execute', Status.DEADLINE_EXCEEDED, 'review--fallback-overloaded: step "analyse" went over its timeout');
      },
    };
    const error = await recover(executor as never, new Error('failed'), failure, original, {}).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(FallbackFailedError);
    expect(error).toMatchObject({
      code: Status.DEADLINE_EXCEEDED,
      details: 'analyse: UNAVAILABLE: review: step "analyse": every target failed; then the fallback review--fallback-overloaded failed too: DEADLINE_EXCEEDED: review--fallback-overloaded: step "analyse" went over its timeout',
      fallback: { pipeline: 'review--fallback-overloaded', succeeded: false },
    });
  });
});
