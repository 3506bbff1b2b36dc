// What the executor and provider refuse before anything runs or is paid for, and how they say it:
// models and presets the provider does not serve, misspelt fields, prompt files outside the
// folder or gone, malformed run ids, unknown enum values. Real processes, the real provider's
// ListModels, fake vendor upstreams that count what was sent to them.
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ClientError, Status } from 'nice-grpc';
import { proto } from '@elexirion/kit';
import { freePort, startExecutor, startNats, startProvider, stopAll, userMessage, waitForState, type ExecutorUnderTest, type NatsServer, type ProviderUnderTest } from '@elexirion/testing';

let nats: NatsServer;
let provider: ProviderUnderTest;
let executor: ExecutorUnderTest;
let dir: string;

const paidThenTypo = `workflow:
  name: paid-then-typo
  steps:
    - name: first
      type: claude
      prompt: "An answer that costs money"
    - name: second
      type: gemini
      model: gemni
      prompt: "{{steps.first.output}}"
`;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'elexirion-validation-'));
  mkdirSync(join(dir, 'prompts'));
  writeFileSync(join(dir, 'paid-then-typo.yaml'), paidThenTypo);
  writeFileSync(join(dir, 'child-preset.yaml'), 'workflow:\n  name: child-preset\n  steps:\n    - name: inner\n      type: claude_smart\n      preset: chatt\n      prompt: hi\n');
  writeFileSync(join(dir, 'with-file.yaml'), 'workflow:\n  name: with-file\n  steps:\n    - name: a\n      type: claude\n      prompt: [{ file: prompts/brief.md }]\n');
  writeFileSync(join(dir, 'prompts', 'brief.md'), 'Be brief.');
  nats = await startNats();
  // The test config serves the aliases claude_smart (presets chat, analysis, ...), claude, gemini, openai, mock.
  provider = await startProvider();
  executor = await startExecutor({ providerPort: provider.grpcPort, natsUrl: nats.url, env: { PIPELINES_DIR: dir } });
  await waitForState(executor);
});

afterAll(async () => {
  await executor?.stop();
  await provider?.stop();
  await nats?.stop();
  await stopAll();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

beforeEach(() => {
  for (const fake of Object.values(provider.fakes)) fake.reset();
});

async function failure(call: Promise<unknown>): Promise<ClientError> {
  const error = await call.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error, 'the call succeeded, but should have been refused').toBeInstanceOf(ClientError);
  return error as ClientError;
}

function upstreamRequests(): number {
  return Object.values(provider.fakes).reduce((sum, fake) => sum + fake.requests.length, 0);
}

describe('models and presets the provider does not serve', () => {
  it('are problems of Validate, at their line and column, with the near miss', async () => {
    const result = await executor.client.validate({ pipeline: 'paid-then-typo' });
    expect(result.valid).toBe(false);
    expect(result.problems).toEqual([
      {
        file: 'paid-then-typo.yaml',
        line: 9,
        column: 14,
        message: 'step "second": model "gemni" is neither an alias the provider serves nor "<provider>/<model>"; did you mean "gemini"? (aliases: claude_smart, claude, gemini, openai, mock)',
      },
    ]);
    const presets = await executor.client.validate({ inlineYaml: 'workflow:\n  name: x\n  steps:\n    - { name: a, type: claude_smart, preset: analysys, prompt: hi }\n' });
    expect(presets.problems.map((problem) => `${problem.line}:${problem.column} ${problem.message}`)).toEqual([
      expect.stringMatching(/^4:46 step "a": preset: alias "claude_smart" has no preset "analysys"; did you mean "analysis"\? \(presets: chat, analysis/),
    ]);
    expect(upstreamRequests()).toBe(0);
  });

  it('refuse a run before its first step, so nothing is paid for', async () => {
    const error = await failure(executor.client.execute({ pipeline: 'paid-then-typo' }));
    expect(Status[error.code]).toBe('INVALID_ARGUMENT');
    expect(error.details).toMatch(/^paid-then-typo\.yaml:9:14: step "second": model "gemni" is neither an alias .*did you mean "gemini"\?/);
    expect(upstreamRequests()).toBe(0);
  });

  it('are found in the pipelines a pipeline calls, in their own file', async () => {
    const caller = 'workflow:\n  name: caller\n  steps:\n    - { name: first, type: claude, prompt: hi }\n    - { name: call, type: pipeline, pipeline: child-preset }\n';
    const error = await failure(executor.client.execute({ inlineYaml: caller }));
    expect(Status[error.code]).toBe('INVALID_ARGUMENT');
    expect(error.details).toMatch(/^child-preset\.yaml:6:15: step "inner": preset: alias "claude_smart" has no preset "chatt"; did you mean "chat"\?/);
    expect(upstreamRequests()).toBe(0);
  });

  it('leave a pipeline whose models the provider serves valid, and it runs', async () => {
    expect((await executor.client.validate({ inlineYaml: paidThenTypo.replace('model: gemni', 'model: gemini') })).valid).toBe(true);
    provider.fakes.anthropic.script({ text: 'first answer' });
    provider.fakes.gemini.script({ text: 'second answer' });
    const result = await executor.client.execute({ inlineYaml: paidThenTypo.replace('model: gemni', 'model: gemini') });
    expect(result.output).toBe('second answer');
  });

  it('make a shipped-style listing say which pipeline is not valid and why', async () => {
    const { pipelines } = await executor.client.listPipelines({});
    const byName = Object.fromEntries(pipelines.map((pipeline) => [pipeline.name, pipeline]));
    expect(byName['paid-then-typo']).toMatchObject({ valid: false, problem: expect.stringMatching(/^paid-then-typo\.yaml:9:14: .*"gemni"/) });
    expect(byName['with-file']).toMatchObject({ valid: true });
  });
});

describe('misspelt fields', () => {
  it('are named at the field, with the field they were probably meant to be', async () => {
    const result = await executor.client.validate({ inlineYaml: 'workflow:\n  name: x\n  steps:\n    - name: a\n      type: claude\n      promt: hi\n' });
    expect(result.problems.map((problem) => `${problem.line}:${problem.column} ${problem.message}`)).toContain('6:7 workflow.steps.0: unknown field "promt"; did you mean "prompt"?');
  });
});

describe('prompt files', () => {
  const withFile = (file: string) => `workflow:\n  name: x\n  steps:\n    - name: a\n      type: claude\n      prompt: [{ file: "${file}" }]\n`;

  it('outside the folder get the same answer whether they exist or not', async () => {
    const answerFor = async (file: string) => (await executor.client.validate({ inlineYaml: withFile(file) })).problems.map((problem) => problem.message.replace(file, '<file>'));
    const up = '../'.repeat(20);
    const existing = await answerFor(`${up}etc/hostname`);
    expect(existing).toEqual(['step "a": prompt file "<file>" is outside the pipelines folder']);
    expect(await answerFor(`${up}etc/no-such-file-here`)).toEqual(existing);
    expect(await answerFor(`${up}no-such-folder/x.md`)).toEqual(existing);
  });

  it('that went away after the pipeline was loaded fail the run with FAILED_PRECONDITION, naming the file', async () => {
    expect((await executor.client.validate({ pipeline: 'with-file' })).valid).toBe(true);
    rmSync(join(dir, 'prompts', 'brief.md'));
    try {
      const error = await failure(executor.client.execute({ pipeline: 'with-file' }));
      expect(Status[error.code]).toBe('FAILED_PRECONDITION');
      expect(error.details).toBe('with-file: step "a": prompt file "prompts/brief.md" does not exist');
    } finally {
      writeFileSync(join(dir, 'prompts', 'brief.md'), 'Be brief.');
    }
  });
});

describe('ids and enums', () => {
  it('refuses a malformed resume_run_id as INVALID_ARGUMENT, naming the field', async () => {
    for (const id of ['../../x', 'a.b', 'x'.repeat(129)]) {
      const error = await failure(executor.client.execute({ resumeRunId: id }));
      expect(Status[error.code]).toBe('INVALID_ARGUMENT');
      expect(error.details).toMatch(/^resume_run_id: expected 1-128 characters of A-Z a-z 0-9 _ - \(a UUID\), got "/);
    }
    const both = await failure(executor.client.execute({ resumeRunId: 'some-run', pipeline: 'with-file' }));
    expect(both.details).toBe('resume_run_id: a resumed run keeps its pipeline; send no pipeline or inline_yaml');
  });

  it('refuses a message role the contract does not define, instead of sending it as a user message', async () => {
    const error = await failure(provider.client.complete({ model: 'mock', messages: [userMessage('hi'), { role: 99 as proto.Role, content: 'who am I?' }] }));
    expect(Status[error.code]).toBe('INVALID_ARGUMENT');
    expect(error.details).toBe('messages[1].role: 99 is not a role; expected ROLE_USER (1), ROLE_ASSISTANT (2) or ROLE_SYSTEM (3)');
    const unset = await failure(provider.client.complete({ model: 'mock', messages: [userMessage('hi'), { role: proto.Role.ROLE_UNSPECIFIED, content: 'x' }] }));
    expect(unset.details).toBe('messages[1].role: not set; expected ROLE_USER (1), ROLE_ASSISTANT (2) or ROLE_SYSTEM (3)');
    expect(upstreamRequests()).toBe(0);
  });
});

describe('without the provider', () => {
  let orphan: ExecutorUnderTest;

  beforeAll(async () => {
    // Nothing listens on this port: the provider is down for this executor.
    orphan = await startExecutor({ providerPort: await freePort(), natsUrl: nats.url, env: { PIPELINES_DIR: dir } });
  });

  afterAll(async () => {
    await orphan?.stop();
  });

  it('Validate says the models cannot be checked now, and checks what needs no provider', async () => {
    const error = await failure(orphan.client.validate({ pipeline: 'with-file' }));
    expect(Status[error.code]).toBe('UNAVAILABLE');
    expect(error.details).toContain('cannot be checked');
    const noModels = 'workflow:\n  name: x\n  steps:\n    - { name: a, type: transform, input: hi, operations: [{ op: uppercase }] }\n';
    expect((await orphan.client.validate({ inlineYaml: noModels })).valid).toBe(true);
    expect((await orphan.client.execute({ inlineYaml: noModels })).output).toBe('HI');
  });
});
