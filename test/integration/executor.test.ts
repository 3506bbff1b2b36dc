import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ClientError, Status } from 'nice-grpc';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { PromptRegistry } from '@elexirion/executor';
import { proto } from '@elexirion/kit';
import { collectEvents, eventually, gate, shippedPipelines, startExecutor, startNats, startProvider, stopAll, waitFor, waitForState, type ExecutorUnderTest, type NatsServer, type ProviderUnderTest } from '@elexirion/testing';

let nats: NatsServer;
let provider: ProviderUnderTest;
let executor: ExecutorUnderTest;

beforeAll(async () => {
  nats = await startNats();
  provider = await startProvider();
  executor = await startExecutor({ providerPort: provider.grpcPort, natsUrl: nats.url });
  await waitForState(executor);
});

afterAll(async () => {
  await executor?.stop();
  await provider?.stop();
  await nats?.stop();
  await stopAll();
});

beforeEach(() => {
  for (const fake of Object.values(provider.fakes)) fake.reset();
});

const twoSteps = (first = 'claude', second = 'claude') => `
workflow:
  name: two-steps
  inputs:
    topic: { type: string, required: true }
  steps:
    - name: first
      type: ${first}
      prompt: "First about {{inputs.topic}}"
    - name: second
      type: ${second}
      prompt: "Second, after: {{steps.first.output}}"
`;

describe('the three-step multi-provider example (pipelines/analysis.yaml)', () => {
  it('runs Claude, then Gemini structured, then Claude robust, through the real provider and SDKs', async () => {
    provider.fakes.anthropic.script({ text: 'Problem: no input validation (line 1).' }, { text: 'function add(a, b) { return Number(a) + Number(b); }' });
    provider.fakes.gemini.script({ text: '{"summary":"Validate inputs","changes":[{"title":"Coerce","detail":"Use Number()"}]}' });
    const result = await executor.client.execute({ pipeline: 'analysis', inputs: { code: 'function add(a,b){return a+b}' } });
    expect(result.steps.map((step) => [step.name, step.status, step.provider])).toEqual([
      ['analyze_code', 'completed', 'anthropic'],
      ['generate_plan', 'completed', 'gemini'],
      ['implement_changes', 'completed', 'anthropic'],
    ]);
    expect(result.output).toBe('function add(a, b) { return Number(a) + Number(b); }');
    expect(JSON.parse(result.outputs.plan!)).toEqual({ summary: 'Validate inputs', changes: [{ title: 'Coerce', detail: 'Use Number()' }] });
    expect(result.steps[1]!.json).toBe('{"summary":"Validate inputs","changes":[{"title":"Coerce","detail":"Use Number()"}]}');

    const [analyze, implement] = provider.fakes.anthropic.requests;
    expect(analyze!.body).toMatchObject({ max_tokens: 1024, temperature: 0.1 }); // the test config's analysis preset
    expect(JSON.stringify(analyze!.body.messages)).toContain('function add(a,b){return a+b}'); // from prompts/analyze-code.md
    expect(JSON.stringify(analyze!.body.messages)).toContain('Goal: improve clarity and robustness');
    expect(provider.fakes.gemini.requests[0]!.body.generationConfig.responseMimeType).toBe('application/json');
    expect(JSON.stringify(provider.fakes.gemini.requests[0]!.body.contents)).toContain('Problem: no input validation');
    expect(JSON.stringify(implement!.body.messages)).toContain('Plan: Validate inputs');
    expect(result.usage!.inputTokens).toBe(result.steps.reduce((sum, step) => sum + step.usage!.inputTokens, 0));
    expect(result.steps.every((step) => step.promptVersion === 'yaml')).toBe(true);
  });
});

describe('step behaviour', () => {
  it('retries a claude_robust step after the provider gave up, with backoff', async () => {
    const pipeline = `
workflow:
  name: robust
  steps:
    - name: try_hard
      type: claude_robust
      model: claude
      retry_count: 2
      backoff: 100ms
      prompt: "hello"
`;
    provider.fakes.anthropic.script({ status: 503 }, { status: 503 }, { status: 503 }, { text: 'made it' });
    const result = await executor.client.execute({ inlineYaml: pipeline });
    expect(result.output).toBe('made it');
    expect(result.steps[0]!.attempts).toBe(2);
    expect(provider.fakes.anthropic.requests).toHaveLength(4);
  });

  it('falls back to default_output when claude_robust runs out of attempts', async () => {
    provider.fakes.anthropic.setDefault({ status: 503 });
    const result = await executor.client.execute({
      inlineYaml: `
workflow:
  name: robust-default
  steps:
    - name: try
      type: claude_robust
      model: claude
      retry_count: 1
      backoff: 10ms
      fallback_action: default_output
      default_output: "no answer today"
      prompt: "hello"
`,
    });
    expect(result.output).toBe('no answer today');
    expect(result.steps[0]).toMatchObject({ status: 'completed', promptVersion: 'default_output' });
  });

  it('repairs invalid structured output once, and fails with invalid_output when it stays invalid', async () => {
    const pipeline = `
workflow:
  name: structured
  steps:
    - name: plan
      type: gemini_structured
      format: json
      schema: { type: object, required: [n], properties: { n: { type: integer } } }
      prompt: "give n"
`;
    provider.fakes.gemini.script({ text: 'n is five' }, { text: '{"n": 5}' });
    const repaired = await executor.client.execute({ inlineYaml: pipeline });
    expect(repaired.output).toBe('{"n":5}');
    expect(repaired.steps[0]!.attempts).toBe(2);
    expect(JSON.stringify(provider.fakes.gemini.requests[1]!.body.contents)).toContain('That answer is not usable');

    provider.fakes.gemini.script({ text: 'nope' }, { text: '{"n": "five"}' });
    const error = await executor.client.execute({ inlineYaml: pipeline }).catch((caught) => caught);
    expect(error.code).toBe(Status.FAILED_PRECONDITION);
    expect(error.details).toMatch(/^structured: step "plan": invalid_output after one repair: the answer does not match the schema/);
  });

  it('runs parallel children concurrently, loops with for_each, skips by when:, sets variables and transforms', async () => {
    // Each call is held at the vendor until both have arrived: one after the other, the second never would.
    const bothArrived = gate();
    provider.fakes.anthropic.setDefault({ until: bothArrived.promise });
    const running = executor.client.execute({
      inlineYaml: `
workflow:
  name: shapes
  inputs:
    items: { type: list, required: true }
    mode: { type: string, default: fast }
  steps:
    - name: both
      type: parallel
      steps:
        - { name: left, type: claude, prompt: "left" }
        - { name: right, type: claude, prompt: "right" }
    - name: each
      type: for_each
      items: "{{inputs.items}}"
      as: word
      concurrency: 3
      steps:
        - name: shout
          type: transform
          input: "{{loop.word}}-{{loop.index}}"
          operations: [{ op: uppercase }]
    - name: never
      type: claude
      when: { equals: ["{{inputs.mode}}", "slow"] }
      prompt: "should not run"
    - name: count
      type: set_variable
      variable: total
      value: "{{steps.each.json}}"
    - name: joined
      type: transform
      input: "{{vars.total}}"
      operations: [{ op: join, separator: "+" }]
`,
      inputs: { items: '["a","b","c"]' },
    });
    await waitFor('both parallel calls at the vendor at once', () => provider.fakes.anthropic.requests.length === 2);
    bothArrived.open();
    const result = await running;
    expect(result.output).toBe('A-0+B-1+C-2');
    const byName = Object.fromEntries(result.steps.map((step) => [step.name, step.status]));
    expect(byName).toMatchObject({ left: 'completed', right: 'completed', both: 'completed', 'each[0]/shout': 'completed', never: 'skipped' });
    expect(provider.fakes.anthropic.requests).toHaveLength(2);
  });

  it('streams run, step and text events in order', async () => {
    provider.fakes.anthropic.script({ chunks: ['one ', 'two'] }, { chunks: ['three'] });
    const events: string[] = [];
    let finished: proto.ExecuteResponse | undefined;
    for await (const event of executor.client.executeStream({ request: { inlineYaml: twoSteps(), inputs: { topic: 'x' } } })) {
      if (event.runStarted) events.push('run_started');
      if (event.stepStarted) events.push(`step_started:${event.stepStarted.step}`);
      if (event.textDelta) events.push(`delta:${event.textDelta.step}:${event.textDelta.text}`);
      if (event.stepFinished) events.push(`step_finished:${event.stepFinished.name}`);
      if (event.runFinished) {
        events.push('run_finished');
        finished = event.runFinished;
      }
    }
    expect(events).toEqual([
      'run_started',
      'step_started:first',
      'delta:first:one ',
      'delta:first:two',
      'step_finished:first',
      'step_started:second',
      'delta:second:three',
      'step_finished:second',
      'run_finished',
    ]);
    expect(finished!.output).toBe('three');
  });

  it('reports a failing step in the stream before the error', async () => {
    provider.fakes.anthropic.script({ text: 'ok' }, { status: 400 });
    const events: string[] = [];
    const error = await (async () => {
      for await (const event of executor.client.executeStream({ request: { inlineYaml: twoSteps(), inputs: { topic: 'x' } } })) {
        if (event.stepFailed) events.push(`${event.stepFailed.step}:${event.stepFailed.code}`);
      }
    })().catch((caught) => caught);
    expect(events).toEqual(['second:INVALID_ARGUMENT']);
    expect(error.code).toBe(Status.INVALID_ARGUMENT);
  });
});

describe('checkpoints', () => {
  it('resumes a failed run from its last completed step without repeating it', async () => {
    provider.fakes.anthropic.script({ text: 'first answer' }, { status: 400, errorMessage: 'temporarily bad' });
    const runId = `resume-${Date.now()}`;
    const failed = await executor.client.execute({ inlineYaml: twoSteps(), inputs: { topic: 'tides' }, runId }).catch((caught) => caught);
    expect(failed.code).toBe(Status.INVALID_ARGUMENT);

    provider.fakes.anthropic.script({ text: 'second answer' });
    const resumed = await executor.client.execute({ resumeRunId: runId });
    expect(resumed).toMatchObject({ runId, output: 'second answer', resumedSteps: 1 });
    expect(resumed.steps.map((step) => [step.name, step.output])).toEqual([
      ['first', 'first answer'],
      ['second', 'second answer'],
    ]);
    // One call for "first" (before the failure), two for "second": "first" was not asked again.
    expect(provider.fakes.anthropic.requests).toHaveLength(3);
    expect(JSON.stringify(provider.fakes.anthropic.requests[2]!.body.messages)).toContain('Second, after: first answer');

    const again = await executor.client.execute({ inlineYaml: twoSteps(), inputs: { topic: 'tides' }, runId }).catch((caught) => caught);
    expect(again.code).toBe(Status.ALREADY_EXISTS);
    const missing = await executor.client.execute({ resumeRunId: 'never-ran' }).catch((caught) => caught);
    expect(missing.code).toBe(Status.NOT_FOUND);
  });

  it('resumes on another executor process after the first one was killed mid-run', async () => {
    provider.fakes.anthropic.script({ text: 'done before the crash' }, { hang: true });
    const runId = `crash-${Date.now()}`;
    const doomed = executor.client.execute({ inlineYaml: twoSteps(), inputs: { topic: 'crash' }, runId }).catch((caught) => caught);
    await eventually('the second step to start', async () => (provider.fakes.anthropic.requests.length >= 2 ? true : undefined));
    executor.process.child.kill('SIGKILL');
    expect((await doomed).code).toBe(Status.UNAVAILABLE);
    await executor.stop();

    executor = await startExecutor({ providerPort: provider.grpcPort, natsUrl: nats.url });
    await waitForState(executor);
    provider.fakes.anthropic.script({ text: 'finished by the new replica' });
    const resumed = await executor.client.execute({ resumeRunId: runId });
    expect(resumed).toMatchObject({ output: 'finished by the new replica', resumedSteps: 1 });
    expect(resumed.steps[0]!.output).toBe('done before the crash');
  });
});

describe('parallel steps in a failed run', () => {
  const fanOut = `
workflow:
  name: fan-out
  steps:
    - name: fan
      type: parallel
      max_parallel: 1
      steps:
        - { name: a, type: claude, prompt: "a" }
        - { name: b, type: claude, prompt: "b" }
    - name: after
      type: claude
      prompt: "after {{steps.fan.output}}"
`;

  it('resumes without running again the children that had completed', async () => {
    provider.fakes.anthropic.script({ text: 'A' }, { status: 400, errorMessage: 'b is bad today' });
    const runId = `fan-${Date.now()}`;
    const failed = await executor.client.execute({ inlineYaml: fanOut, runId }).catch((caught) => caught);
    expect(failed).toMatchObject({ code: Status.INVALID_ARGUMENT, details: expect.stringContaining('fan-out: step "b": ') });

    provider.fakes.anthropic.script({ text: 'B' }, { text: 'done' });
    const resumed = await executor.client.execute({ resumeRunId: runId });
    expect(resumed.steps.map((step) => [step.name, step.output])).toEqual([
      ['a', 'A'],
      ['b', 'B'],
      ['fan', '{"a":"A","b":"B"}'],
      ['after', 'done'],
    ]);
    // What the vendor was asked: "a" once, "b" twice (failed, then resumed), "after" once.
    const prompts = provider.fakes.anthropic.requests.map((request) => {
      const content: string | { text: string }[] = request.body.messages.at(-1).content;
      return typeof content === 'string' ? content : content.map((block) => block.text).join('');
    });
    expect(prompts).toEqual(['a', 'b', 'b', 'after {"a":"A","b":"B"}']);
  });

  it('tells a child stopped by its sibling failing as CANCELLED, and the run by the sibling\'s failure', async () => {
    provider.fakes.gemini.script({ hang: true });
    provider.fakes.anthropic.script({ status: 400, errorMessage: 'refused', until: waitFor('the gemini child to start', () => provider.fakes.gemini.requests.length > 0) });
    const both = `
workflow:
  name: both
  steps:
    - name: fan
      type: parallel
      steps:
        - { name: slow, type: gemini, prompt: "slow" }
        - { name: bad, type: claude, prompt: "bad" }
`;
    const failures: [string, string, string][] = [];
    const error = await (async () => {
      for await (const event of executor.client.executeStream({ request: proto.ExecuteRequest.fromPartial({ inlineYaml: both }) })) {
        if (event.stepFailed) failures.push([event.stepFailed.step, event.stepFailed.code, event.stepFailed.message]);
      }
    })().catch((caught) => caught);
    expect(error).toMatchObject({ code: Status.INVALID_ARGUMENT, details: expect.stringContaining('both: step "bad": ') });
    expect(failures.map(([step, code]) => [step, code])).toEqual([
      ['bad', 'INVALID_ARGUMENT'],
      ['slow', 'CANCELLED'],
      ['fan', 'INVALID_ARGUMENT'],
    ]);
    expect(failures[1]![2]).toBe('both: step "slow" was stopped: step "bad" failed');
  });
});

describe('prompt versions', () => {
  let connection: NatsConnection;
  let registry: PromptRegistry;

  beforeAll(async () => {
    connection = await connect({ servers: nats.url });
    registry = new PromptRegistry({ logger: { info() {}, warn() {}, debug() {} } });
    await registry.attach(connection);
  });

  afterAll(async () => {
    await registry?.remove('general', 'answer').catch(() => {});
    await registry?.close();
    await connection?.close();
  });

  const versionOf = async (sessionKey = '') =>
    (await executor.client.execute({ pipeline: 'general', inputs: { message: 'hi' }, sessionKey })).steps[0]!.promptVersion;

  it('serves registry versions by weight, sticky per session key, and tags every run with the version', async () => {
    await registry.publish({
      pipeline: 'general',
      step: 'answer',
      versions: [
        { id: 'v-a', weight: 1, prompt: 'Version A: {{inputs.message}}' },
        { id: 'v-b', weight: 1, prompt: 'Version B: {{inputs.message}}', system: 'You are version B.' },
      ],
    });
    await eventually('the executor to see the versions', async () => ((await versionOf()) !== 'yaml' ? true : undefined));
    const seen = new Set<string>();
    for (let i = 0; i < 30; i += 1) seen.add(await versionOf());
    expect([...seen].sort()).toEqual(['v-a', 'v-b']);
    const sticky = new Set<string>();
    for (let i = 0; i < 10; i += 1) sticky.add(await versionOf('session-42'));
    expect(sticky.size).toBe(1);

    provider.fakes.anthropic.reset();
    await registry.publish({
      pipeline: 'general',
      step: 'answer',
      versions: [
        { id: 'v-a', weight: 0, prompt: 'Version A: {{inputs.message}}' },
        { id: 'v-b', weight: 1, prompt: 'Version B: {{inputs.message}}', system: 'You are version B.', demos: [{ input: 'ping', output: 'pong' }] },
      ],
    });
    await eventually('weight 0 to take effect', async () => {
      const versions = new Set<string>();
      for (let i = 0; i < 6; i += 1) versions.add(await versionOf());
      return versions.size === 1 && versions.has('v-b') ? true : undefined;
    });
    const last = provider.fakes.anthropic.requests.at(-1)!.body;
    expect(last.system).toContain('You are version B.');
    expect(last.messages).toEqual([
      { role: 'user', content: 'ping' },
      { role: 'assistant', content: 'pong' },
      { role: 'user', content: 'Version B: hi' },
    ]);
  });

  it('lets a prompt override win over the registry, and goes back to the YAML prompt when the entry is removed', async () => {
    // An entry of its own, so the test does not depend on the one before it.
    await registry.publish({ pipeline: 'general', step: 'answer', versions: [{ id: 'v-own', weight: 1, prompt: 'Own: {{inputs.message}}' }] });
    await eventually('the executor to see the entry', async () => ((await versionOf()) === 'v-own' ? true : undefined));
    const overridden = await executor.client.execute({ pipeline: 'general', inputs: { message: 'hi' }, promptOverrides: { answer: 'Override: {{inputs.message}}' } });
    expect(overridden.steps[0]!.promptVersion).toBe('override');
    expect(provider.fakes.anthropic.requests.at(-1)!.body.messages.at(-1).content).toBe('Override: hi');
    await registry.remove('general', 'answer');
    await eventually('the YAML prompt to be back', async () => ((await versionOf()) === 'yaml' ? true : undefined));
  });
});

describe('bad input', () => {
  const expectInvalid = async (request: Partial<proto.ExecuteRequest>, message: RegExp | string, code = Status.INVALID_ARGUMENT) => {
    const error = await executor.client.execute(request).catch((caught) => caught);
    expect(error).toBeInstanceOf(ClientError);
    expect(Status[error.code]).toBe(Status[code]);
    if (typeof message === 'string') expect(error.details).toContain(message);
    else expect(error.details).toMatch(message);
  };

  it('names the file, line and column of a broken pipeline', async () => {
    await expectInvalid({ inlineYaml: 'workflow:\n  name: x\n  steps:\n    - name: a\n      type: claude\n      prompt: [unclosed\n' }, /^<inline>:\d+:\d+: malformed YAML/);
    await expectInvalid({ inlineYaml: 'workflow:\n  name: x\n  steps:\n    - name: a\n      type: magic\n      prompt: hi\n' }, '<inline>:5:13: workflow.steps.0.type: unknown step type "magic" (known: claude, gemini, llm, claude_smart');
    await expectInvalid({ inlineYaml: 'workflow:\n  name: x\n  steps:\n    - name: a\n      type: claude\n' }, /^<inline>:4:7: workflow\.steps\.0\.prompt: /);
    await expectInvalid({ inlineYaml: 'workflow:\n  name: x\n  steps:\n    - name: a\n      type: claude\n      prompt: "{{inputs.nope}}"\n' }, '<inline>:6:15: step "a": {{inputs.nope}} names input "nope", which workflow.inputs does not declare');
  });

  it('refuses unknown and escaping pipeline names, wrong input types and unknown overrides', async () => {
    await expectInvalid({ pipeline: 'nope' }, 'pipeline "nope" does not exist', Status.NOT_FOUND);
    await expectInvalid({ pipeline: '../etc/passwd' }, 'is not a pipeline name');
    await expectInvalid({ pipeline: 'refactor', inputs: { code: 'x', max_changes: 'many' } }, 'refactor: inputs.max_changes: expected a number, got "many"');
    await expectInvalid({ pipeline: 'general', inputs: {} }, 'general: inputs.message: required and not given');
    await expectInvalid({ pipeline: 'general', inputs: { message: 'x', extra: 'y' } }, 'general: inputs.extra: the pipeline has no such input (it has message)');
    await expectInvalid({ pipeline: 'general', inputs: { message: 'x' }, promptOverrides: { nothing: 'x' } }, 'prompt_overrides.nothing: no LLM step is named "nothing"');
    await expectInvalid({ pipeline: 'general', inlineYaml: twoSteps() }, 'give one, not both');
  });

  it('validates without running, listing every problem with its place', async () => {
    const result = await executor.client.validate({ inlineYaml: 'workflow:\n  name: x\n  steps:\n    - name: a\n      type: claude\n      prompt: "{{steps.b.output}}"\n    - name: a\n      type: claude\n      prompt: hi\n' });
    expect(result.valid).toBe(false);
    expect(result.problems.map((problem) => `${problem.line}:${problem.column} ${problem.message}`)).toEqual([
      '6:15 step "a": {{steps.b.output}} names step "b", which does not run before this one',
      '7:13 duplicate step name "a"',
    ]);
    expect((await executor.client.validate({ pipeline: 'analysis' })).valid).toBe(true);
  });

  it('lists the shipped pipelines with their inputs', async () => {
    const { pipelines } = await executor.client.listPipelines({});
    const names = pipelines.map((pipeline) => pipeline.name);
    // Shipped: tracked by git. A user's own pipeline may be listed too, valid or not yet.
    const shipped = shippedPipelines().map((file) => file.slice(0, -'.yaml'.length));
    expect(names).toEqual(expect.arrayContaining(['analysis', 'general', 'generate', 'refactor', ...shipped]));
    // Each problem is "file:line:col: message".
    expect(pipelines.filter((pipeline) => shipped.includes(pipeline.name) && !pipeline.valid).map((pipeline) => pipeline.problem)).toEqual([]);
    expect(pipelines.find((pipeline) => pipeline.name === 'analysis')!.inputs.map((input) => input.name)).toEqual(['code', 'goal']);
  });
});

describe('cancellation', () => {
  it('cancels the provider request of a run whose caller went away', async () => {
    provider.fakes.anthropic.script({ hang: true });
    const controller = new AbortController();
    const call = executor.client.execute({ inlineYaml: twoSteps(), inputs: { topic: 'x' } }, { signal: controller.signal }).catch((caught) => caught);
    await eventually('the provider call', async () => (provider.fakes.anthropic.requests.length > 0 ? true : undefined));
    controller.abort();
    expect((await call).name).toBe('AbortError');
    await provider.fakes.anthropic.waitForAbort(0, 5_000);
  });

  it('ends a step at its timeout with DEADLINE_EXCEEDED', async () => {
    provider.fakes.anthropic.script({ hang: true });
    const error = await executor.client
      .execute({ inlineYaml: 'workflow:\n  name: slow\n  steps:\n    - name: wait\n      type: claude\n      timeout: 300ms\n      prompt: hi\n' })
      .catch((caught) => caught);
    expect(error.code).toBe(Status.DEADLINE_EXCEEDED);
    expect(error.details).toContain('slow: step "wait" went over its timeout of 300 ms');
    await provider.fakes.anthropic.waitForAbort(0, 5_000);
  });
});

describe('the shipped pipelines on the offline mock provider', () => {
  let offline: ProviderUnderTest;
  let offlineExecutor: ExecutorUnderTest;

  beforeAll(async () => {
    offline = await startProvider({ vendors: false, config: 'shipped' });
    offlineExecutor = await startExecutor({ providerPort: offline.grpcPort, natsUrl: nats.url });
  });

  afterAll(async () => {
    await offlineExecutor?.stop();
    await offline?.stop();
  });

  const runs: [string, Record<string, string>, string[]][] = [
    ['general', { message: 'hello' }, ['answer']],
    ['analysis', { code: 'function add(a,b){return a+b}' }, ['analyze_code', 'generate_plan', 'implement_changes']],
    ['refactor', { code: 'let x = 1', max_changes: '2' }, ['plan', 'apply_each[0]/apply', 'apply_each', 'summary']],
    ['generate', { spec: 'a stack with push and pop' }, ['draft', 'review', 'revise', 'final']],
    ['triage', { report: 'The app crashes on start' }, ['classify', 'remember_kind', 'reply', 'fix_plan', 'drafts']],
    ['summarize-each', { documents: '["first doc","second doc"]' }, ['summaries[0]/summarize', 'summaries[1]/summarize', 'summaries', 'joined', 'answer/answer', 'answer']],
  ];

  it.each(runs)('runs %s end to end', async (pipeline, inputs, steps) => {
    const result = await offlineExecutor.client.execute({ pipeline, inputs });
    expect(result.steps.map((step) => step.name).sort()).toEqual([...steps].sort());
    expect(result.steps.every((step) => step.status !== 'failed')).toBe(true);
    expect(result.output.length).toBeGreaterThan(0);
    expect(result.steps.filter((step) => step.provider).every((step) => step.provider === 'mock')).toBe(true);
  });
});

describe('telemetry', () => {
  it('publishes a step event per step and a run event with inputs and outputs, under one trace', async () => {
    const listener = await collectEvents(nats.url);
    try {
      provider.fakes.anthropic.script({ text: 'one', usage: { inputTokens: 10, outputTokens: 20 } }, { text: 'two' });
      const result = await executor.client.execute({ inlineYaml: twoSteps(), inputs: { topic: 'events' } });
      const run = await waitFor('the run event', () => listener.events.find((item) => item.subject === 'elexirion.events.executor.run' && item.event.executorRun?.runId === result.runId));
      const steps = await waitFor('two step events', () => {
        const found = listener.events.filter((item) => item.subject === 'elexirion.events.executor.step' && item.event.executorStep?.runId === result.runId);
        return found.length === 2 ? found : undefined;
      });
      expect(run.event.executorRun).toMatchObject({ pipeline: 'two-steps', inputs: { topic: 'events' }, output: 'two' });
      expect(steps.map((item) => item.event.executorStep!.step)).toEqual([
        expect.objectContaining({ name: 'first', type: 'claude', provider: 'anthropic', model: 'claude-sonnet-5', status: 'completed', promptVersion: 'yaml', usage: expect.objectContaining({ inputTokens: 10, outputTokens: 20 }) }),
        expect.objectContaining({ name: 'second', status: 'completed' }),
      ]);
      expect(steps[0]!.event.executorStep!.step!.usage!.costUsd).toBeGreaterThan(0);
      expect(new Set([run, ...steps].map((item) => item.event.traceId)).size).toBe(1);
    } finally {
      await listener.close();
    }
  });
});

describe('run admission', () => {
  it('answers RESOURCE_EXHAUSTED beyond the run limit and its queue', async () => {
    const limited = await startExecutor({ providerPort: provider.grpcPort, natsUrl: nats.url, env: { EXECUTOR_MAX_CONCURRENT_RUNS: '1', EXECUTOR_MAX_QUEUED_RUNS: '1' } });
    try {
      // The vendor holds every answer until one run has been refused: one runs, one waits, one is refused.
      const refused = gate();
      provider.fakes.anthropic.setDefault({ until: refused.promise });
      const outcomes: string[] = [];
      const runs = [0, 1, 2].map(() =>
        limited.client
          .execute({ inlineYaml: 'workflow:\n  name: one\n  steps:\n    - { name: a, type: claude, prompt: hi }\n' })
          .then(
            () => 'ok',
            (error) => `${Status[error.code]}${error.details.includes('run limit') ? ' (run limit)' : ''}`,
          )
          .then((outcome) => (outcomes.push(outcome), outcome)),
      );
      await waitFor('a run to be refused', () => outcomes.length > 0);
      refused.open();
      expect((await Promise.all(runs)).sort()).toEqual(['RESOURCE_EXHAUSTED (run limit)', 'ok', 'ok']);
    } finally {
      await limited.stop();
    }
  });
});
