// The `elexirion` command line, run as the built binary against a real gRPC server implementing
// elexirion.v1.Gateway with scripted answers: what each command sends (arguments, the API key as
// metadata), what it prints (streamed text, tables, positioned problems, --json), and the exit
// codes scripts rely on. The end-to-end run against the real services is cli-stack.test.ts.
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { AbortError } from 'abort-controller-x';
import { ServerError, Status, type CallContext } from 'nice-grpc';
import { proto } from '@elexirion/kit';
import { freePort, repoRoot } from '@elexirion/testing';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { cli, cliOnTerminal, gate, ScriptedGateway, startCli } from './cli-harness.js';

const gateway = new ScriptedGateway();
let env: NodeJS.ProcessEnv;
let folder: string;

beforeAll(async () => {
  await gateway.start();
  env = { ELEXIRION_ADDRESS: gateway.address };
  folder = mkdtempSync(join(tmpdir(), 'elexirion-cli-'));
});

afterAll(async () => {
  await gateway.stop();
  rmSync(folder, { recursive: true, force: true });
});

beforeEach(() => gateway.reset());

const usage = (inputTokens: number, outputTokens: number, costUsd: number): proto.Usage => ({ inputTokens, outputTokens, costUsd });
const route: proto.RouteDecision = { pipeline: 'general', matchedBy: 'rule', rule: 'greetings', confidence: 0, reason: 'keyword "hello"' };

function chatResponse(overrides: Partial<proto.ChatResponse> = {}): proto.ChatResponse {
  return {
    response: 'Hello there, friend.',
    pipelineUsed: 'general',
    executionTimeMs: 1234,
    fallbackUsed: false,
    jobId: '01JOBCHAT',
    usage: usage(12, 34, 0.00042),
    route,
    fallback: undefined,
    degraded: false,
    steps: [],
    ...overrides,
  };
}

function job(overrides: Partial<proto.Job> = {}): proto.Job {
  return {
    ...proto.Job.fromPartial({}),
    jobId: '01JOBABC',
    status: proto.JobStatus.JOB_STATUS_QUEUED,
    origin: 'submitted',
    pipeline: 'summarize',
    createdAt: new Date('2026-12-01T10:00:00Z'),
    ...overrides,
  };
}

function jobEvent(sequence: number, event: Partial<proto.JobEvent>): proto.WatchJobResponse {
  return { event: { jobId: '01JOBABC', sequence, time: new Date('2026-12-01T10:00:00Z'), ...event } };
}

describe('help and usage', () => {
  const commands = ['chat', 'jobs submit', 'jobs get', 'jobs watch', 'jobs cancel', 'jobs list', 'pipelines list', 'pipelines validate', 'events', 'keys create', 'keys list', 'keys revoke', 'models'];

  it('lists every command and the exit codes in --help', async () => {
    const { code, stdout } = await cli(['--help']);
    expect(code).toBe(0);
    expect(stdout).toMatch(/^usage: elexirion COMMAND \[OPTIONS\]\n/);
    for (const command of ['serve', ...commands]) expect(stdout).toMatch(new RegExp(`^  ${command} +\\S`, 'm'));
    expect(stdout).toMatch(/^  3 +UNAUTHENTICATED or PERMISSION_DENIED/m);
    expect(stdout).toMatch(/^  6 +RESOURCE_EXHAUSTED/m);
  });

  it.each(commands)('answers "%s --help" with its usage, options and exit codes', async (command) => {
    const { code, stdout, stderr } = await cli([...command.split(' '), '--help']);
    expect(code).toBe(0);
    expect(stderr).toBe('');
    expect(stdout).toMatch(new RegExp(`^usage: elexirion ${command}\\b`));
    expect(stdout).toContain('--api-key KEY');
    expect(stdout).toContain('--json');
    expect(stdout).toContain('Exit codes: 0 ok');
    expect(gateway.calls).toEqual([]);
  });

  it('answers a group without its subcommand with the group usage and exit code 2', async () => {
    const { code, stderr } = await cli(['jobs']);
    expect(code).toBe(2);
    expect(stderr).toContain('usage: elexirion jobs submit|get|watch|cancel|list');
    expect((await cli(['jobs', '--help'])).code).toBe(0);
  });

  it('refuses unknown commands, unknown options, missing and malformed arguments with exit code 2, naming them', async () => {
    const cases: [string[], string][] = [
      [['frobnicate'], 'unknown command "frobnicate"'],
      [['jobs', 'frob'], 'unknown command "jobs frob"'],
      [['models', '--frobnicate'], "Unknown option '--frobnicate'"],
      [['jobs', 'get'], 'missing JOB_ID'],
      [['jobs', 'get', 'a', 'b'], 'unexpected argument "b"'],
      [['jobs', 'watch', 'J', '--after', 'soon'], '--after: "soon" is not a whole number'],
      [['jobs', 'list', '--status', 'done'], '--status: "done" is not one of queued, running, succeeded, failed, cancelled'],
      [['jobs', 'submit', '--input', 'novalue'], '--input: "novalue" is not NAME=VALUE'],
      [['keys', 'create', 'ci'], '--scope: give at least one scope'],
      [['events'], 'give --follow for live events, or --since TIME'],
      [['events', '--follow', '--kind', 'bogus'], '--kind: "bogus" is not one of request, job, run, step, prompt, completion, breaker, feedback, recovery, rollout'],
      [['pipelines', 'validate', join('/nonexistent', 'p.yaml')], 'cannot read /nonexistent/p.yaml: ENOENT'],
      [['models', '--timeout', 'forever'], '--timeout: "forever" is not a duration'],
      [['--json', 'models'], '--json goes after the command: elexirion COMMAND --json'],
    ];
    for (const [args, message] of cases) {
      const { code, stderr, stdout } = await cli(args, env);
      expect({ args, code }).toEqual({ args, code: 2 });
      expect(stderr).toContain(message);
      expect(stderr).toContain('usage: elexirion');
      expect(stderr).not.toMatch(/\n\s+at /);
      expect(stdout).toBe('');
    }
    expect(gateway.calls).toEqual([]);
  });
});

describe('the API key', () => {
  const key = 'elx_k1_s3cr3t-value-never-printed';

  it('is sent as "authorization: Bearer", from --api-key or ELEXIRION_API_KEY', async () => {
    gateway.on('listModels', () => ({ aliases: [], providers: [], offline: true }));
    expect((await cli(['models', '--api-key', key], env)).code).toBe(0);
    expect((await cli(['models'], { ...env, ELEXIRION_API_KEY: `${key}\n` })).code).toBe(0);
    expect((await cli(['models'], env)).code).toBe(0);
    expect(gateway.callsOf('listModels').map((call) => call.authorization)).toEqual([`Bearer ${key}`, `Bearer ${key}`, undefined]);
  });

  it('is never printed, even when the server echoes it in an error', async () => {
    gateway.on('listKeys', (_request, context) => {
      throw new ServerError(Status.PERMISSION_DENIED, `key ${context.metadata.get('authorization')} lacks the scope "admin"`);
    });
    for (const json of [[], ['--json']]) {
      const { code, stdout, stderr } = await cli(['keys', 'list', ...json], { ...env, ELEXIRION_API_KEY: key });
      expect(code).toBe(3);
      expect(stdout + stderr).not.toContain(key);
      expect(stderr).toContain('PERMISSION_DENIED');
      const message = json.length ? JSON.parse(stderr).error.message : stderr;
      expect(message).toContain('Bearer [REDACTED] lacks the scope "admin"');
    }
  });
});

describe('exit codes', () => {
  it.each([
    [Status.UNAUTHENTICATED, 3],
    [Status.PERMISSION_DENIED, 3],
    [Status.NOT_FOUND, 4],
    [Status.UNAVAILABLE, 5],
    [Status.DEADLINE_EXCEEDED, 5],
    [Status.RESOURCE_EXHAUSTED, 6],
    [Status.UNIMPLEMENTED, 7],
    [Status.INVALID_ARGUMENT, 1],
    [Status.INTERNAL, 1],
  ])('maps status %s to exit code %s, with the status name in the message and in --json', async (status, exitCode) => {
    gateway.on('getJob', () => {
      throw new ServerError(status, 'scripted failure');
    });
    const human = await cli(['jobs', 'get', '01JOBABC'], env);
    expect(human.code).toBe(exitCode);
    expect(human.stderr).toContain(`elexirion: ${Status[status]}: scripted failure`);
    expect(human.stdout).toBe('');
    const json = await cli(['jobs', 'get', '01JOBABC', '--json'], env);
    expect(json.code).toBe(exitCode);
    expect(JSON.parse(json.stderr)).toEqual({ error: { code: Status[status], message: 'scripted failure' } });
  });

  it('gives a call that answers once a deadline (--timeout): DEADLINE_EXCEEDED, exit 5, and the server sees it cancelled', async () => {
    gateway.on('listPipelines', (_request, context) => new Promise((_resolve, reject) => context.signal.addEventListener('abort', () => reject(new AbortError()))));
    const { code, stderr } = await cli(['pipelines', 'list', '--timeout', '300ms'], env);
    expect(code).toBe(5);
    expect(stderr).toContain('DEADLINE_EXCEEDED');
    expect(gateway.callsOf('listPipelines')[0]!.signal.aborted).toBe(true);
  });

  it('sends the deadline to the gateway (elexirion-timeout-ms): 60 s by default, none for chat unless --timeout', async () => {
    const timeoutOf = (context: CallContext) => context.metadata.get('elexirion-timeout-ms') ?? 'none';
    gateway.on('chat', (_request, context) => ({ ...chatResponse(), response: `timeout ${timeoutOf(context)}` }));
    expect((await cli(['chat', '--no-stream', 'hi'], env)).stdout).toBe('timeout none\n');
    expect((await cli(['chat', '--no-stream', 'hi', '--timeout', '10m'], env)).stdout).toBe('timeout 600000\n');
    gateway.on('listModels', (_request, context) => ({ aliases: [{ name: `timeout ${timeoutOf(context)}`, targets: [], presets: [] }], providers: [], offline: false }));
    expect((await cli(['models'], env)).stdout).toContain('timeout 60000 ');
    expect((await cli(['models', '--timeout', '1.5s', '--api-key', 'elx_k1_abcdefgh'], env)).stdout).toContain('timeout 1500 ');
    expect(gateway.callsOf('listModels').at(-1)!.authorization).toBe('Bearer elx_k1_abcdefgh');
  });

  it('answers 5 when nothing listens at the address, saying which address', async () => {
    const address = `127.0.0.1:${await freePort()}`;
    const { code, stderr } = await cli(['models'], { ELEXIRION_ADDRESS: address });
    expect(code).toBe(5);
    expect(stderr).toContain('UNAVAILABLE');
    expect(stderr).toContain(`is the gateway running at ${address}?`);
  });

  it('reaches the address given by --address over ELEXIRION_ADDRESS', async () => {
    gateway.on('listModels', () => ({ aliases: [], providers: [], offline: false }));
    const elsewhere = `127.0.0.1:${await freePort()}`;
    expect((await cli(['models', '--address', gateway.address], { ELEXIRION_ADDRESS: elsewhere })).code).toBe(0);
    expect(gateway.callsOf('listModels')).toHaveLength(1);
  });
});

describe('chat', () => {
  it('prints the text as it streams, then route, pipeline, usage and cost on stderr', async () => {
    const rest = gate();
    gateway.on('chatStream', async function* () {
      yield { route };
      yield { runStarted: { runId: '01JOBCHAT', pipeline: 'general' } };
      yield { stepStarted: { step: 'answer', type: 'claude_fast' } };
      yield { textDelta: { step: 'answer', text: 'Hello there' } };
      // The rest waits until the CLI has printed the first delta: it streams, not buffers.
      await rest.promise;
      yield { textDelta: { step: 'answer', text: ', friend.' } };
      yield { stepFinished: proto.StepResult.fromPartial({ name: 'answer', status: 'completed', output: 'Hello there, friend.' }) };
      yield { done: chatResponse() };
    });
    const run = startCli(['chat', 'hello', 'world', '--pipeline', 'general', '--session', 's-1'], env);
    await run.stdoutContains('Hello there');
    expect(run.stdout()).toBe('Hello there');
    rest.open();
    const { code, stdout, stderr } = await run.result;
    expect(code).toBe(0);
    expect(stdout).toBe('Hello there, friend.\n');
    expect(stderr).toContain('route: general (rule, rule "greetings": keyword "hello")');
    expect(stderr).toContain('pipeline: general · job 01JOBCHAT · 1.2s');
    expect(stderr).toContain('usage: 12 in / 34 out tokens · $0.00042');
    expect(gateway.callsOf('chatStream')[0]!.request).toEqual({ message: 'hello world', pipeline: 'general', sessionId: 's-1' });
  });

  it('reads the message from stdin with "-"', async () => {
    gateway.on('chatStream', async function* () {
      yield { done: chatResponse({ response: 'ok' }) };
    });
    const { code, stdout } = await cli(['chat', '-'], env, 'a message\nof two lines\n');
    expect(code).toBe(0);
    expect(stdout).toBe('ok\n');
    expect(gateway.callsOf('chatStream')[0]!.request.message).toBe('a message\nof two lines');
  });

  it('separates the text of several steps and prints an answer no step streamed', async () => {
    gateway.on('chatStream', async function* () {
      yield { textDelta: { step: 'plan', text: 'The plan.' } };
      yield { textDelta: { step: 'write', text: 'The draft.' } };
      yield { done: chatResponse({ response: 'The final answer.' }) };
    });
    const { code, stdout } = await cli(['chat', 'hi'], env);
    expect(code).toBe(0);
    expect(stdout).toBe('The plan.\n\nThe draft.\n\nThe final answer.\n');
  });

  it('prints one JSON line per event with --json, in the proto3 JSON mapping', async () => {
    const events: proto.ChatStreamResponse[] = [
      { route },
      { stepStarted: { step: 'answer', type: 'claude_fast' } },
      { textDelta: { step: 'answer', text: 'Hi' } },
      { done: chatResponse({ response: 'Hi' }) },
    ];
    gateway.on('chatStream', async function* () {
      yield* events;
    });
    const { code, stdout, stderr } = await cli(['chat', 'hi', '--json'], env);
    expect(code).toBe(0);
    expect(stderr).toBe('');
    const lines = stdout.trimEnd().split('\n').map((line) => JSON.parse(line));
    expect(lines).toEqual(events.map((event) => proto.ChatStreamResponse.toJSON(event)));
    expect(lines[0]).toEqual({ route: { pipeline: 'general', matchedBy: 'rule', rule: 'greetings', reason: 'keyword "hello"' } });
    expect(lines[3].done.usage).toEqual({ inputTokens: 12, outputTokens: 34, costUsd: 0.00042 });
  });

  it('fails (exit 1) when the stream ends without its final answer, after printing what came', async () => {
    gateway.on('chatStream', async function* () {
      yield { textDelta: { step: 'answer', text: 'Half an ans' } };
    });
    const { code, stdout, stderr } = await cli(['chat', 'hi'], env);
    expect(code).toBe(1);
    expect(stdout).toBe('Half an ans');
    expect(stderr).toContain('the stream ended without its final answer');
  });

  it('ends with the status of a failure after the first delta (a rate limit: 6)', async () => {
    gateway.on('chatStream', async function* () {
      yield { textDelta: { step: 'answer', text: 'Hel' } };
      throw new ServerError(Status.RESOURCE_EXHAUSTED, 'tokens per minute over 1000');
    });
    const { code, stdout, stderr } = await cli(['chat', 'hi'], env);
    expect(code).toBe(6);
    expect(stdout).toBe('Hel');
    expect(stderr).toContain('RESOURCE_EXHAUSTED: tokens per minute over 1000');
  });

  it('makes one unary Chat call with --no-stream', async () => {
    gateway.on('chat', () => chatResponse({ degraded: true }));
    const { code, stdout, stderr } = await cli(['chat', 'hi', '--no-stream'], env);
    expect(code).toBe(0);
    expect(stdout).toBe('Hello there, friend.\n');
    expect(stderr).toContain('degraded (agent unavailable)');
    const json = await cli(['chat', 'hi', '--no-stream', '--json'], env);
    expect(JSON.parse(json.stdout)).toEqual(proto.ChatResponse.toJSON(chatResponse({ degraded: true })));
    expect(gateway.callsOf('chatStream')).toEqual([]);
  });

  it('cancels the call when interrupted (Ctrl-C): exit 130', async () => {
    const cancelled = gate();
    gateway.on('chatStream', async function* (_request, context) {
      yield { textDelta: { step: 'answer', text: 'Thinking' } };
      context.signal.addEventListener('abort', cancelled.open);
      await new Promise((_resolve, reject) => context.signal.addEventListener('abort', () => reject(new AbortError())));
    });
    const run = startCli(['chat', 'hi'], env);
    await run.stdoutContains('Thinking');
    run.kill('SIGINT');
    await cancelled.promise; // the gateway saw the call cancelled
    const { code, stderr } = await run.result;
    expect(code).toBe(130);
    expect(stderr).toContain('CANCELLED');
  });
});

describe('jobs', () => {
  it('submit prints the job id alone on stdout and sends the inputs, key and webhook', async () => {
    const inputFile = join(folder, 'text.txt');
    writeFileSync(inputFile, 'long text from a file');
    gateway.on('submitJob', (request: proto.SubmitJobRequest) => ({ job: job({ pipeline: request.pipeline }), deduplicated: false }));
    const { code, stdout, stderr } = await cli(
      ['jobs', 'submit', '--pipeline', 'summarize', '--input', 'style=brief', '-i', `text=@${inputFile}`, '--idempotency-key', 'k-1', '--webhook', 'https://hooks.example/done'],
      { ...env, ELEXIRION_WEBHOOK_SECRET: 'whsec-123' },
    );
    expect(code).toBe(0);
    expect(stdout).toBe('01JOBABC\n');
    expect(stderr).toContain('job 01JOBABC queued (pipeline summarize)');
    expect(gateway.callsOf('submitJob')[0]!.request).toEqual({
      pipeline: 'summarize',
      message: '',
      inputs: { style: 'brief', text: 'long text from a file' },
      idempotencyKey: 'k-1',
      sessionId: '',
      webhook: { url: 'https://hooks.example/done', secret: 'whsec-123' },
      owner: '',
    });
  });

  it('get prints the record and its output; --json the GetJobResponse', async () => {
    const record = job({
      status: proto.JobStatus.JOB_STATUS_SUCCEEDED,
      output: 'A short summary.',
      usage: usage(100, 20, 0.0031),
      steps: [proto.StepResult.fromPartial({ name: 'summarize', status: 'completed', provider: 'anthropic', model: 'claude-x', usage: usage(100, 20, 0.0031), durationMs: 900 })],
    });
    gateway.on('getJob', () => ({ job: record }));
    const { code, stdout } = await cli(['jobs', 'get', '01JOBABC'], env);
    expect(code).toBe(0);
    expect(stdout).toMatch(/^status: +succeeded$/m);
    expect(stdout).toMatch(/^summarize +completed +anthropic\/claude-x +100\/20 +\$0\.0031 +900ms$/m);
    expect(stdout.endsWith('\nA short summary.\n')).toBe(true);
    const json = await cli(['jobs', 'get', '01JOBABC', '--json'], env);
    expect(JSON.parse(json.stdout)).toEqual(proto.GetJobResponse.toJSON({ job: record }));
    expect(JSON.parse(json.stdout).job.status).toBe('JOB_STATUS_SUCCEEDED');
  });

  it('watch streams text to stdout, steps to stderr, and exits 0 when the job succeeds', async () => {
    gateway.on('watchJob', async function* () {
      yield jobEvent(1, { statusChanged: { status: proto.JobStatus.JOB_STATUS_RUNNING, detail: 'taken by agent-1', job: undefined } });
      yield jobEvent(2, { stepStarted: { step: 'summarize', type: 'claude_fast' } });
      yield jobEvent(3, { textDelta: { step: 'summarize', text: 'A short ' } });
      yield jobEvent(4, { textDelta: { step: 'summarize', text: 'summary.' } });
      yield jobEvent(5, { stepFinished: proto.StepResult.fromPartial({ name: 'summarize', status: 'completed', durationMs: 900 }) });
      yield jobEvent(6, { statusChanged: { status: proto.JobStatus.JOB_STATUS_SUCCEEDED, detail: '', job: job({ status: proto.JobStatus.JOB_STATUS_SUCCEEDED, output: 'A short summary.', usage: usage(1, 2, 0.5) }) } });
    });
    const { code, stdout, stderr } = await cli(['jobs', 'watch', '01JOBABC', '--after', '0'], env);
    expect(code).toBe(0);
    expect(stdout).toBe('A short summary.\n');
    expect(stderr).toContain('job 01JOBABC running: taken by agent-1');
    expect(stderr).toContain('step summarize completed in 900ms');
    expect(stderr).toContain('job 01JOBABC succeeded · 1 in / 2 out tokens · $0.5 · last sequence 6');
  });

  it('watch resumes after --after, and by itself from the last event when the stream drops', async () => {
    let attempt = 0;
    gateway.on('watchJob', async function* (request: proto.WatchJobRequest) {
      attempt += 1;
      if (attempt === 1) {
        yield jobEvent(request.afterSequence + 1, { textDelta: { step: 's', text: 'one ' } });
        yield jobEvent(request.afterSequence + 2, { textDelta: { step: 's', text: 'two ' } });
        throw new ServerError(Status.UNAVAILABLE, 'gateway draining');
      }
      yield jobEvent(request.afterSequence + 1, { textDelta: { step: 's', text: 'three' } });
      yield jobEvent(request.afterSequence + 2, { statusChanged: { status: proto.JobStatus.JOB_STATUS_FAILED, detail: '', job: job({ status: proto.JobStatus.JOB_STATUS_FAILED, errorCode: 'INTERNAL', error: 'step s broke' }) } });
    });
    const { code, stdout, stderr } = await cli(['jobs', 'watch', '01JOBABC', '--after', '40', '--json'], env);
    expect(gateway.callsOf('watchJob').map((call) => call.request)).toEqual([
      { jobId: '01JOBABC', afterSequence: 40 },
      { jobId: '01JOBABC', afterSequence: 42 },
    ]);
    expect(code).toBe(1); // the job failed
    expect(stderr).toBe('');
    const sequences = stdout.trimEnd().split('\n').map((line) => JSON.parse(line).event.sequence);
    expect(sequences).toEqual([41, 42, 43, 44]);
  });

  it('submit --watch prints the id, then follows the job to its end', async () => {
    gateway.on('submitJob', () => ({ job: job(), deduplicated: true }));
    gateway.on('watchJob', async function* () {
      yield jobEvent(1, { textDelta: { step: 'route', text: 'Routed answer.' } });
      yield jobEvent(2, { statusChanged: { status: proto.JobStatus.JOB_STATUS_CANCELLED, detail: 'cancelled by ops', job: undefined } });
    });
    const { code, stdout, stderr } = await cli(['jobs', 'submit', 'summarize', 'this', '--watch'], env);
    expect(code).toBe(1); // cancelled
    expect(stdout).toBe('01JOBABC\nRouted answer.\n');
    expect(stderr).toContain('an earlier job with this idempotency key');
    expect(stderr).toContain('job 01JOBABC cancelled: cancelled by ops');
    expect(gateway.callsOf('submitJob')[0]!.request).toMatchObject({ message: 'summarize this', pipeline: '' });
    expect(gateway.callsOf('watchJob')[0]!.request).toEqual({ jobId: '01JOBABC', afterSequence: 0 });
  });

  it('watch of a job already over, after its last event, asks GetJob how it ended instead of waiting', async () => {
    gateway.on('watchJob', async function* () {});
    gateway.on('getJob', () => ({ job: job({ status: proto.JobStatus.JOB_STATUS_SUCCEEDED, output: 'Done long ago.', lastSequence: 9 }) }));
    const { code, stdout, stderr } = await cli(['jobs', 'watch', '01JOBABC', '--after', '9'], env);
    expect(code).toBe(0);
    expect(stdout).toBe('Done long ago.\n');
    expect(stderr).toContain('job 01JOBABC succeeded');
    expect(gateway.callsOf('watchJob')).toHaveLength(1);
  });

  it('watch, interrupted (Ctrl-C), cancels the stream and says the --after to resume with', async () => {
    const cancelled = gate();
    gateway.on('watchJob', async function* (_request, context) {
      context.signal.addEventListener('abort', cancelled.open);
      yield jobEvent(7, { textDelta: { step: 's', text: 'partial' } });
      await new Promise((_resolve, reject) => context.signal.addEventListener('abort', () => reject(new AbortError())));
    });
    const run = startCli(['jobs', 'watch', '01JOBABC', '--after', '6'], env);
    await run.stdoutContains('partial');
    run.kill('SIGINT');
    await cancelled.promise;
    const { code, stderr } = await run.result;
    expect(code).toBe(130);
    expect(stderr).toContain('resume with `elexirion jobs watch 01JOBABC --after 7`');
  });

  it('cancel says what became of the job', async () => {
    gateway.on('cancelJob', (request: proto.CancelJobRequest) => ({ job: job({ status: proto.JobStatus.JOB_STATUS_CANCELLED, cancelledAtStep: 'summarize', cancelledBy: request.reason }) }));
    const { code, stdout } = await cli(['jobs', 'cancel', '01JOBABC', '--reason', 'not needed'], env);
    expect(code).toBe(0);
    expect(stdout).toBe('job 01JOBABC cancelled at step summarize\n');
    expect(gateway.callsOf('cancelJob')[0]!.request).toEqual({ jobId: '01JOBABC', requestedBy: '', reason: 'not needed' });
  });

  it('list filters by status and time, and --all follows every page', async () => {
    gateway.on('listJobs', (request: proto.ListJobsRequest) =>
      request.pageToken
        ? { jobs: [job({ jobId: '01JOBB', status: proto.JobStatus.JOB_STATUS_CANCELLED })], nextPageToken: '' }
        : { jobs: [job({ jobId: '01JOBA', status: proto.JobStatus.JOB_STATUS_FAILED, usage: usage(1, 2, 0.1 + 0.2) })], nextPageToken: 'page-2' },
    );
    const { code, stdout } = await cli(['jobs', 'list', '--status', 'failed,cancelled', '--since', '2026-11-30T00:00:00Z', '--limit', '1', '--all'], env);
    expect(code).toBe(0);
    expect(stdout).toMatch(/^JOB +STATUS +PIPELINE +ORIGIN +CREATED +COST\n01JOBA +failed +summarize +submitted +2026-12-01T10:00:00Z +\$0\.3\n01JOBB +cancelled/); // the cost without float noise
    const requests = gateway.callsOf('listJobs').map((call) => call.request);
    expect(requests.map((request) => request.pageToken)).toEqual(['', 'page-2']);
    expect(requests[0]).toMatchObject({ statuses: [proto.JobStatus.JOB_STATUS_FAILED, proto.JobStatus.JOB_STATUS_CANCELLED], pageSize: 1, createdAfter: new Date('2026-11-30T00:00:00Z') });
  });
});

describe('pipelines', () => {
  it('validate sends the file as inline YAML and prints each problem as FILE:LINE:COL: message, exit 1', async () => {
    const file = join(folder, 'broken.yaml');
    const yaml = 'workflow:\n  name: broken\n  steps:\n    - name: a\n      type: claude_fats\n';
    writeFileSync(file, yaml);
    gateway.on('validatePipeline', () => ({
      valid: false,
      problems: [
        { file: '<inline>', line: 5, column: 13, message: 'steps[0].type: unknown step type "claude_fats" (did you mean "claude_fast"?)' },
        { file: 'prompts/missing.md', line: 0, column: 0, message: 'no such prompt file' },
      ],
      summary: undefined,
    }));
    const { code, stdout } = await cli(['pipelines', 'validate', file], env);
    expect(code).toBe(1);
    expect(stdout).toBe(`${file}:5:13: steps[0].type: unknown step type "claude_fats" (did you mean "claude_fast"?)\nprompts/missing.md: no such prompt file\n`);
    expect(gateway.callsOf('validatePipeline')[0]!.request).toEqual({ pipeline: '', inlineYaml: yaml });
    const json = await cli(['pipelines', 'validate', file, '--json'], env);
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout).problems[0]).toEqual({ file, line: 5, column: 13, message: expect.stringContaining('claude_fats') });
  });

  it('validate exits 0 for a valid file', async () => {
    const file = join(folder, 'fine.yaml');
    writeFileSync(file, 'workflow: {}\n');
    gateway.on('validatePipeline', () => ({ valid: true, problems: [], summary: proto.PipelineSummary.fromPartial({ name: 'fine', stepCount: 2, valid: true }) }));
    const { code, stdout, stderr } = await cli(['pipelines', 'validate', file], env);
    expect(code).toBe(0);
    expect(stdout).toBe('');
    expect(stderr).toContain(`${file}: valid (pipeline fine, 2 steps)`);
  });

  it('list prints a table, invalid pipelines with their problem', async () => {
    gateway.on('listPipelines', () => ({
      pipelines: [
        proto.PipelineSummary.fromPartial({ name: 'general', description: 'Answers anything.', stepCount: 1, valid: true, inputs: [{ name: 'message', type: 'string', required: true, description: '' }] }),
        proto.PipelineSummary.fromPartial({ name: 'broken', stepCount: 0, valid: false, problem: 'broken.yaml:3:5: unknown key' }),
      ],
    }));
    const { code, stdout } = await cli(['pipelines', 'list'], env);
    expect(code).toBe(0);
    expect(stdout).toBe('NAME     STEPS  INPUTS   DESCRIPTION\ngeneral  1      message  Answers anything.\nbroken   0      -        INVALID: broken.yaml:3:5: unknown key\n');
  });
});

describe('events', () => {
  function telemetry(eventId: string, time: Date): proto.StreamTelemetryResponse {
    return {
      event: proto.TelemetryEvent.fromPartial({
        eventId,
        service: 'gateway',
        kind: 'request',
        time,
        status: 'OK',
        durationMs: 12,
        gatewayRequest: { method: 'Chat', pipeline: 'general', jobId: 'J1', errorMessage: '' },
      }),
    };
  }

  it('--follow sends the filters, prints each event, and --limit ends the stream (the server sees it cancelled)', async () => {
    const cancelled = gate();
    gateway.on('streamTelemetry', async function* (_request, context) {
      context.signal.addEventListener('abort', cancelled.open);
      for (let index = 1; ; index += 1) {
        yield telemetry(`e${index}`, new Date('2026-12-01T10:00:0' + (index % 10) + 'Z'));
        await new Promise((resolve) => setImmediate(resolve));
        if (context.signal.aborted) return;
      }
    });
    const { code, stdout } = await cli(['events', '--follow', '--service', 'gateway,agent', '--kind', 'request', '--job', 'J1', '--pipeline', 'general', '--limit', '2'], env);
    expect(code).toBe(0);
    expect(stdout).toBe('2026-12-01T10:00:01Z gateway request OK 12ms Chat general job J1\n2026-12-01T10:00:02Z gateway request OK 12ms Chat general job J1\n');
    await cancelled.promise;
    expect(gateway.callsOf('streamTelemetry')[0]!.request).toEqual({ services: ['gateway', 'agent'], kinds: ['request'], pipeline: 'general', jobId: 'J1', since: undefined });
  });

  it('ends quietly (exit 0) when its reader goes away: events --follow | head -n 1', async () => {
    gateway.on('streamTelemetry', async function* (_request, context) {
      for (let index = 1; !context.signal.aborted; index += 1) {
        yield telemetry(`e${index}`, new Date('2026-12-01T10:00:00Z'));
        await new Promise((resolve) => setImmediate(resolve));
      }
    });
    const { stdout } = await promisify(execFile)('bash', ['-c', `${process.execPath} server/dist/main.js events --follow | head -n 1; echo "exit codes \${PIPESTATUS[*]}"`], {
      cwd: repoRoot,
      env: { PATH: process.env.PATH, ...env },
    });
    expect(stdout).toBe('2026-12-01T10:00:00Z gateway request OK 12ms Chat general job J1\nexit codes 0 0\n');
  });

  it('without --follow prints the events since --since and stops at the first one newer than the command', async () => {
    gateway.on('streamTelemetry', async function* () {
      yield telemetry('old-1', new Date(Date.now() - 60_000));
      yield telemetry('old-2', new Date(Date.now() - 30_000));
      yield telemetry('live', new Date(Date.now() + 60_000));
      yield telemetry('never', new Date(Date.now() + 120_000));
    });
    const { code, stdout } = await cli(['events', '--since', '5m', '--json'], env);
    expect(code).toBe(0);
    expect(stdout.trimEnd().split('\n').map((line) => JSON.parse(line).event.eventId)).toEqual(['old-1', 'old-2']);
    const since = gateway.callsOf('streamTelemetry')[0]!.request.since as Date;
    expect(Date.now() - since.getTime()).toBeGreaterThanOrEqual(5 * 60_000);
  });

  it('without --follow ends once the retained events are out, on an idle system too', async () => {
    gateway.on('streamTelemetry', async function* (_request, context) {
      yield telemetry('old-1', new Date(Date.now() - 60_000));
      // Then nothing, as on an idle system: the stream stays open until the client ends it.
      await new Promise((_resolve, reject) => context.signal.addEventListener('abort', () => reject(new AbortError())));
    });
    const { code, stdout, stderr } = await cli(['events', '--since', '5m', '--json'], env);
    expect(code, stderr).toBe(0);
    expect(stdout.trimEnd().split('\n').map((line) => JSON.parse(line).event.eventId)).toEqual(['old-1']);
    expect(gateway.callsOf('streamTelemetry')[0]!.signal.aborted).toBe(true);
  });
});

describe('keys', () => {
  const created: proto.ApiKey = proto.ApiKey.fromPartial({ keyId: 'k7', name: 'ci', scopes: ['chat', 'jobs'], createdAt: new Date('2026-12-01T10:00:00Z'), createdBy: 'bootstrap' });

  it('create prints the secret alone on stdout and sends the scopes and limits', async () => {
    gateway.on('createKey', () => ({ key: created, secret: 'elx_k7_the-secret' }));
    const { code, stdout, stderr } = await cli(['keys', 'create', 'ci', '--scope', 'chat', '-s', 'jobs', '--rpm', '60', '--daily-budget', '2.5', '--expires', '2027-01-01T00:00:00Z'], env);
    expect(code).toBe(0);
    expect(stdout).toBe('elx_k7_the-secret\n');
    expect(stderr).toContain('key k7 (ci) created with scopes chat, jobs; its secret is shown only now');
    expect(gateway.callsOf('createKey')[0]!.request).toEqual({
      name: 'ci',
      scopes: ['chat', 'jobs'],
      expiresAt: new Date('2027-01-01T00:00:00Z'),
      limits: { requestsPerMinute: 60, tokensPerMinute: 0, dailyBudgetUsd: 2.5, monthlyBudgetUsd: 0 },
    });
  });

  it('list shows state and use; revoke says when', async () => {
    const revoked = { ...created, keyId: 'k8', name: 'old', revokedAt: new Date('2026-12-01T11:00:00Z') };
    gateway.on('listKeys', () => ({ keys: [{ ...created, limits: { requestsPerMinute: 60, tokensPerMinute: 0, dailyBudgetUsd: 0, monthlyBudgetUsd: 0 }, usage: { requestsThisMinute: 3, tokensThisMinute: 500, spentTodayUsd: 0.25, spentThisMonthUsd: 1.5 } }, revoked] }));
    gateway.on('revokeKey', () => ({ key: revoked }));
    const list = await cli(['keys', 'list', '--all'], env);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^k7 +ci +chat,jobs +active +2026-12-01T10:00:00Z +3\/60 req\/min, 500 tok\/min, \$0\.25 today, \$1\.5 month$/m);
    expect(list.stdout).toMatch(/^k8 +old +chat,jobs +revoked 2026-12-01T11:00:00Z/m);
    expect(gateway.callsOf('listKeys')[0]!.request).toEqual({ includeInactive: true });
    const revoke = await cli(['keys', 'revoke', 'k8'], env);
    expect(revoke.stdout).toBe('key k8 (old) revoked at 2026-12-01T11:00:00Z\n');
    expect(gateway.callsOf('revokeKey')[0]!.request).toEqual({ keyId: 'k8' });
  });
});

describe('models', () => {
  it('lists the aliases and the providers, base URLs without credentials', async () => {
    gateway.on('listModels', () => ({
      aliases: [{ name: 'claude_fast', targets: ['anthropic/claude-haiku', 'openai/gpt-mini'], presets: ['chat', 'test'] }],
      providers: [{ name: 'anthropic', configured: true, breakerState: 'closed', failureRate: 0.05, inFlight: 2, queued: 0, baseUrl: 'https://user:pa55@proxy.example/v1' }],
      offline: false,
    }));
    const { code, stdout } = await cli(['models'], env);
    expect(code).toBe(0);
    expect(stdout).toMatch(/^claude_fast +anthropic\/claude-haiku > openai\/gpt-mini +chat,test$/m);
    expect(stdout).toMatch(/^anthropic +yes +closed +5% +2 +0 +https:\/\/\S*proxy\.example\/v1$/m);
    expect(stdout).not.toContain('pa55');
  });
});

describe('serve', () => {
  it('answers "serve --help" with the environment of the services it hosts', async () => {
    const { code, stdout } = await cli(['serve', '--help']);
    expect(code).toBe(0);
    expect(stdout).toMatch(/^usage: elexirion serve \[--services provider,executor,agent,monitor,gateway\|all\] \[--help\]\n/);
    expect(stdout).toMatch(/^  GATEWAY_GRPC_PORT +50051$/m);
  });

  it('refuses an unknown option or service with exit code 2, in both forms', async () => {
    for (const args of [['serve', '--frobnicate'], ['--frobnicate'], ['serve', '--services', 'gateway,billing'], ['--services', 'gateway,billing']]) {
      const { code, stderr } = await cli(args);
      expect({ args, code }).toEqual({ args, code: 2 });
      expect(stderr).toMatch(/Unknown option '--frobnicate'|unknown service "billing"/);
      expect(stderr).toContain('usage: elexirion serve');
    }
  });
});

describe('progress display', () => {
  const spinner = /[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] \d+\.\ds step answer/;

  beforeEach(() => {
    gateway.on('chatStream', async function* () {
      yield { route };
      yield { stepStarted: { step: 'answer', type: 'claude_fast' } };
      yield { textDelta: { step: 'answer', text: 'Hi there.' } };
      yield { done: chatResponse({ response: 'Hi there.' }) };
    });
  });

  it('shows a spinner with the elapsed time and the current step on a terminal', async () => {
    const { code, output } = await cliOnTerminal(['chat', 'hi'], env);
    expect(code, output).toBe(0);
    expect(output).toMatch(spinner);
    expect(output).toContain('Hi there.');
  });

  it('shows none when stderr is not a terminal, nor with --json', async () => {
    const piped = await cli(['chat', 'hi'], env);
    expect(piped.stderr).not.toMatch(/[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏\r]/);
    const json = await cliOnTerminal(['chat', 'hi', '--json'], env);
    expect(json.code).toBe(0);
    expect(json.output).not.toMatch(/[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]/);
  });
});

describe('npx elexirion', () => {
  it('runs from the repository root, as npm links the workspace bin', async () => {
    const { stdout } = await promisify(execFile)('npx', ['--no-install', 'elexirion', '--help'], {
      cwd: repoRoot,
      env: { PATH: `${join(process.execPath, '..')}:${process.env.PATH}`, HOME: process.env.HOME },
    });
    expect(stdout).toMatch(/^usage: elexirion COMMAND \[OPTIONS\]\n/);
  });
});
