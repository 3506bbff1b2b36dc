import { afterEach, describe, expect, it, vi } from 'vitest';
import { Status } from '@elexirion/kit';
import { answer, providerError, testEngine } from './engine-support.js';

function robust(fields: string): string {
  return `
workflow:
  name: robust
  steps:
    - name: try
      type: claude_robust
      prompt: "hello"
${fields
  .trim()
  .split('\n')
  .map((line) => `      ${line.trim()}`)
  .join('\n')}
`;
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('claude_robust', () => {
  it('retries the failures another try may fix, and counts every failed try in attempts', async () => {
    const engine = testEngine((_call, index) => {
      if (index < 2) throw providerError(index === 0 ? Status.UNAVAILABLE : Status.RESOURCE_EXHAUSTED);
      return answer('made it', { attempts: 1 });
    });
    const result = await engine.run(robust('retry_count: 2\nbackoff: 1ms'));
    expect(result.output).toBe('made it');
    expect(result.steps[0]).toMatchObject({ status: 'completed', attempts: 3, promptVersion: 'yaml' });
    expect(engine.calls).toHaveLength(3);
  });

  it('fails at once on a failure no retry fixes, without its fallback', async () => {
    const engine = testEngine(() => {
      throw providerError(Status.INVALID_ARGUMENT, 'no such model');
    });
    const error = await engine.run(robust('retry_count: 3\nbackoff: 1ms\nfallback_action: default_output\ndefault_output: "fallback"')).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: Status.INVALID_ARGUMENT, details: 'robust: step "try": no such model' });
    expect(engine.calls).toHaveLength(1);
  });

  it('waits with full jitter under a ceiling that starts at backoff and doubles', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.5);
    const engine = testEngine(() => {
      throw providerError(Status.UNAVAILABLE);
    });
    const result = await engine.run(robust('retry_count: 3\nbackoff: 8ms\nfallback_action: skip'));
    expect(engine.debug.map((fields) => fields.waitMs)).toEqual([4, 8, 16]);
    expect(result.steps[0]).toMatchObject({ status: 'skipped', attempts: 4 });
  });

  it('stops retrying at the step deadline and takes its fallback', async () => {
    const engine = testEngine(() => {
      throw providerError(Status.UNAVAILABLE);
    });
    // Waits of up to an hour: no retry fits before the run's deadline but one shorter than what is
    // left, and a step that waited out a longer one would outlast the test.
    const result = await engine.run(robust('retry_count: 10\nbackoff: 1h\nfallback_action: default_output\ndefault_output: "later"'), { deadline: Date.now() + 300 });
    expect(result.output).toBe('later');
    expect(result.steps[0]).toMatchObject({ status: 'completed', promptVersion: 'default_output', attempts: engine.calls.length });
  });

  it('makes one more call with fallback_model, without a preset, when every try failed', async () => {
    const engine = testEngine((call) => {
      if (call.request.model !== 'gemini') throw providerError(Status.UNAVAILABLE);
      return answer('from the fallback', { attempts: 2 });
    });
    const result = await engine.run(robust('preset: analysis\nretry_count: 1\nbackoff: 1ms\nfallback_action: fallback_model\nfallback_model: gemini'));
    expect(result.output).toBe('from the fallback');
    expect(result.steps[0]!.attempts).toBe(4);
    expect(result.steps[0]).toMatchObject({ fallbackUsed: true, failedTargets: [expect.stringMatching(/^claude_smart: UNAVAILABLE: .*, 2 tries$/)] });
    expect(engine.calls.map((call) => [call.request.model, call.request.preset])).toEqual([
      ['claude_smart', 'analysis'],
      ['claude_smart', 'analysis'],
      ['gemini', ''],
    ]);
  });

  it('fails with the last error for fallback_action fail', async () => {
    const engine = testEngine(() => {
      throw providerError(Status.UNAVAILABLE, 'overloaded');
    });
    const error = await engine.run(robust('retry_count: 1\nbackoff: 1ms')).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: Status.UNAVAILABLE, details: 'robust: step "try": overloaded' });
    expect(engine.calls).toHaveLength(2);
  });
});
