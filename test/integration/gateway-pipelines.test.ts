// The gateway's pipeline calls against the real services: the executor's listing, validation of
// a named pipeline and of inline YAML (each problem positioned at line and column), and the bounds
// on what ExecutePipeline and ValidatePipeline accept, each refusal naming its field.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientError, Status } from 'nice-grpc';
import { startNats, startStack, stopAll, type NatsServer, type Stack } from '@elexirion/testing';

let nats: NatsServer;
let stack: Stack;

beforeAll(async () => {
  nats = await startNats();
  stack = await startStack('all-in-one', nats.url);
});

afterAll(async () => {
  await stack?.stop();
  await nats?.stop();
  await stopAll();
});

async function refusal(call: Promise<unknown>): Promise<ClientError> {
  const error = await call.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(ClientError);
  return error as ClientError;
}

const BAD_INLINE = `workflow:
  name: inline-check
  inputs:
    message:
      type: string
  steps:
    - name: answer
      type: claude_smart
      prompt: "{{inputs.message}}"
    - name: second
      type: no_such_type
      prompt: hi
`;

describe('ListPipelines and ValidatePipeline', () => {
  it('lists the executor\'s pipelines with their inputs and validity', async () => {
    const { pipelines } = await stack.gateway.listPipelines({});
    const names = pipelines.map((pipeline) => pipeline.name);
    expect(names).toEqual(expect.arrayContaining(['analysis', 'general', 'generate', 'refactor']));
    const general = pipelines.find((pipeline) => pipeline.name === 'general')!;
    expect(general.valid).toBe(true);
    expect(general.inputs).toEqual([expect.objectContaining({ name: 'message', required: true })]);
  });

  it('validates a pipeline by name', async () => {
    const answer = await stack.gateway.validatePipeline({ pipeline: 'general', inlineYaml: '' });
    expect(answer).toMatchObject({ valid: true, problems: [] });
    expect(answer.summary?.name).toBe('general');
  });

  it('answers a bad inline pipeline with its problems at line and column', async () => {
    const answer = await stack.gateway.validatePipeline({ pipeline: '', inlineYaml: BAD_INLINE });
    expect(answer.valid).toBe(false);
    expect(answer.problems.length).toBeGreaterThan(0);
    const problem = answer.problems.find((found) => found.message.includes('type'))!;
    expect(problem).toBeDefined();
    // The second step's type is on line 11, its value at column 13.
    expect(problem.line).toBe(11);
    expect(problem.column).toBeGreaterThan(0);
  });

  it('answers YAML that does not parse with the position of the fault', async () => {
    const answer = await stack.gateway.validatePipeline({ pipeline: '', inlineYaml: 'workflow:\n  name: [unclosed\n' });
    expect(answer.valid).toBe(false);
    expect(answer.problems[0]!.line).toBeGreaterThan(0);
  });

  it('refuses inline YAML over 1 MiB, a name with inline YAML, and a bad name, naming the field', async () => {
    const big = `# ${'x'.repeat(1024 * 1024)}\n${BAD_INLINE}`;
    let error = await refusal(stack.gateway.validatePipeline({ pipeline: '', inlineYaml: big }));
    expect(error.code).toBe(Status.INVALID_ARGUMENT);
    expect(error.details).toMatch(/^inline_yaml: .* over the limit of 1\.0 MiB$/);

    error = await refusal(stack.gateway.validatePipeline({ pipeline: 'general', inlineYaml: BAD_INLINE }));
    expect(error.code).toBe(Status.INVALID_ARGUMENT);
    expect(error.details).toBe('pipeline and inline_yaml: give one, not both');

    error = await refusal(stack.gateway.validatePipeline({ pipeline: '../etc/passwd', inlineYaml: '' }));
    expect(error.code).toBe(Status.INVALID_ARGUMENT);
    expect(error.details).toMatch(/^pipeline: /);

    error = await refusal(stack.gateway.validatePipeline({ pipeline: '', inlineYaml: '' }));
    expect(error.code).toBe(Status.INVALID_ARGUMENT);
    expect(error.details).toMatch(/^pipeline: must name a pipeline/);
  });

  it('answers a pipeline that does not exist as the executor does', async () => {
    const error = await refusal(stack.gateway.validatePipeline({ pipeline: 'no-such-pipeline', inlineYaml: '' }));
    expect(error.code).toBe(Status.NOT_FOUND);
  });
});

describe('ExecutePipeline bounds', () => {
  const run = (fields: Partial<Parameters<Stack['gateway']['executePipeline']>[0]>) =>
    stack.gateway.executePipeline({ pipeline: 'general', inputs: { message: 'hi' }, promptOverrides: {}, inlineYaml: '', sessionId: '', ...fields });

  it('refuses inputs over 1 MiB in all', async () => {
    const error = await refusal(run({ inputs: { message: 'a'.repeat(600 * 1024), other: 'b'.repeat(600 * 1024) } }));
    expect(error.code).toBe(Status.INVALID_ARGUMENT);
    expect(error.details).toMatch(/^inputs: .* in all is over the limit of 1\.0 MiB$/);
  });

  it('refuses an input name that is not one', async () => {
    const error = await refusal(run({ inputs: { 'not a name': 'x' } }));
    expect(error.code).toBe(Status.INVALID_ARGUMENT);
    expect(error.details).toMatch(/^inputs: "not a name" is not an input name/);
  });

  it('refuses prompt overrides keyed by something that is not a step name, empty, or too large', async () => {
    let error = await refusal(run({ promptOverrides: { '1st step': 'x' } }));
    expect(error.code).toBe(Status.INVALID_ARGUMENT);
    expect(error.details).toMatch(/^prompt_overrides: "1st step" is not a step name/);

    error = await refusal(run({ promptOverrides: { answer: '   ' } }));
    expect(error.details).toBe('prompt_overrides.answer: the prompt must not be empty');

    error = await refusal(run({ promptOverrides: { answer: 'p'.repeat(1024 * 1024 + 1) } }));
    expect(error.details).toMatch(/^prompt_overrides: .* over the limit of 1\.0 MiB$/);
  });

  it('refuses inline YAML over 1 MiB', async () => {
    const error = await refusal(run({ pipeline: '', inlineYaml: `# ${'x'.repeat(1024 * 1024)}\n` }));
    expect(error.code).toBe(Status.INVALID_ARGUMENT);
    expect(error.details).toMatch(/^inline_yaml: /);
  });

  it('still runs a request within bounds', async () => {
    const answer = await run({});
    expect(answer.pipeline).toBe('general');
    expect(answer.result).toContain('mock provider');
  });
});
