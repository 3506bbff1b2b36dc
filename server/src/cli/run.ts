import { ClientError, Status } from 'nice-grpc';
import { isAbortError } from 'abort-controller-x';
import { commandHelp, parseCommand, usageLine, UsageError, type CommandSpec } from './args.js';
import { createContext, type Context } from './context.js';
import { ExitCode, exitCodeHelp, exitCodeOf } from './exit-codes.js';
import { chat, chatSpec } from './commands/chat.js';
import { events, eventsSpec } from './commands/events.js';
import { jobsCancel, jobsCancelSpec, jobsGet, jobsGetSpec, jobsList, jobsListSpec, jobsSubmit, jobsSubmitSpec, jobsWatch, jobsWatchSpec } from './commands/jobs.js';
import { keysCreate, keysCreateSpec, keysList, keysListSpec, keysRevoke, keysRevokeSpec } from './commands/keys.js';
import { models, modelsSpec } from './commands/models.js';
import { pipelinesList, pipelinesListSpec, pipelinesValidate, pipelinesValidateSpec } from './commands/pipelines.js';

// The `elexirion` binary: `serve` runs services, every other command is a client of the Gateway's
// public gRPC API. The older form, `elexirion [--services LIST]` with no command (scripts,
// Dockerfiles and manifests use it), still serves.

interface Command {
  spec: CommandSpec;
  run(ctx: Context): Promise<number>;
}

const commands: Command[] = [
  { spec: chatSpec, run: chat },
  { spec: jobsSubmitSpec, run: jobsSubmit },
  { spec: jobsGetSpec, run: jobsGet },
  { spec: jobsWatchSpec, run: jobsWatch },
  { spec: jobsCancelSpec, run: jobsCancel },
  { spec: jobsListSpec, run: jobsList },
  { spec: pipelinesListSpec, run: pipelinesList },
  { spec: pipelinesValidateSpec, run: pipelinesValidate },
  { spec: eventsSpec, run: events },
  { spec: keysCreateSpec, run: keysCreate },
  { spec: keysListSpec, run: keysList },
  { spec: keysRevokeSpec, run: keysRevoke },
  { spec: modelsSpec, run: models },
];

const groups = new Set(commands.filter((command) => command.spec.path.length > 1).map((command) => command.spec.path[0]!));

function topLevelHelp(): string {
  const width = Math.max(...commands.map((command) => command.spec.path.join(' ').length)) + 2;
  return [
    'usage: elexirion COMMAND [OPTIONS]',
    '',
    'Elexirion from the command line: `serve` runs services; the other commands are clients of the',
    "gateway's public gRPC API (elexirion.v1.Gateway).",
    '',
    'Commands:',
    `  ${'serve'.padEnd(width)}run services in this process (serve --help lists their environment)`,
    ...commands.map((command) => `  ${command.spec.path.join(' ').padEnd(width)}${command.spec.brief}`),
    '',
    'Client options (every client command):',
    '  --address HOST:PORT   the gateway (env ELEXIRION_ADDRESS; default 127.0.0.1:50051; https:// for TLS)',
    '  --api-key KEY         API key, sent as "authorization: Bearer" and never printed (env ELEXIRION_API_KEY)',
    '  --json                proto3 JSON: one document, or JSON lines for streams',
    '  --timeout DURATION    deadline of each call (default 60s; chat and streams: none unless given)',
    '  -h, --help            help of any command: elexirion jobs watch --help',
    '',
    'Results go to stdout; notes, progress (on a terminal) and errors to stderr.',
    'Without a command (or with only --services), elexirion serves, as it always has.',
    '',
    exitCodeHelp,
  ].join('\n');
}

function groupHelp(group: string): string {
  const members = commands.filter((command) => command.spec.path[0] === group);
  return [`usage: elexirion ${group} ${members.map((command) => command.spec.path[1]).join('|')} ...`, '', ...members.map((command) => `  ${usageLine(command.spec).replace(/^usage: /, '')}`), '', `elexirion ${group} SUBCOMMAND --help says more.`].join('\n');
}

function usageFailure(message: string, usage: string): number {
  process.stderr.write(`elexirion: ${message}\n${usage}\n(--help for more)\n`);
  return ExitCode.USAGE;
}

/** What the user is told when a call fails, and the exit code. */
function reportFailure(error: unknown, ctx: Context): number {
  const { output } = ctx;
  let code: Status;
  let message: string;
  if (error instanceof ClientError) {
    code = error.code;
    message = error.details.replace(/\s*Resolution note:\s*$/, ''); // grpc-js leaves it empty
    // Not reaching the gateway at all (as opposed to the gateway answering UNAVAILABLE): say where it looked.
    if (code === Status.UNAVAILABLE && /No connection established|ECONNREFUSED|ENOTFOUND|Name resolution failed|failed to connect/i.test(message)) {
      message += ` (is the gateway running at ${ctx.address}? --address or ELEXIRION_ADDRESS sets it)`;
    }
  } else if (isAbortError(error) || ctx.signal.aborted) {
    code = Status.CANCELLED;
    message = 'interrupted: the call was cancelled';
  } else {
    code = Status.UNKNOWN;
    message = (error as Error)?.message ?? String(error);
  }
  const name = Status[code] ?? 'UNKNOWN';
  if (output.json) output.error(JSON.stringify({ error: { code: name, message: output.redact(message) } }));
  else output.error(`elexirion: ${name}: ${message}`);
  return exitCodeOf(code);
}

/** Runs the command line; answers the exit code, or undefined when serving (the host owns the process). */
export async function run(argv: string[]): Promise<number | undefined> {
  const [first, second] = argv;
  if (first === '--help' || first === '-h' || first === 'help') {
    const wanted = argv.slice(1).filter((word) => !word.startsWith('-'));
    const command = commands.find((candidate) => candidate.spec.path.join(' ') === wanted.join(' '));
    if (wanted.length && command) process.stdout.write(`${commandHelp(command.spec)}\n`);
    else if (wanted.length === 1 && groups.has(wanted[0]!)) process.stdout.write(`${groupHelp(wanted[0]!)}\n`);
    else if (wanted.length) return usageFailure(`unknown command "${wanted.join(' ')}"`, 'usage: elexirion COMMAND [OPTIONS]');
    else process.stdout.write(`${topLevelHelp()}\n`);
    return ExitCode.OK;
  }
  // `elexirion --json models`: options other than serve's before a command read as the older
  // serving form; say where they go instead of "unknown option".
  const clientOption = /^--(json|address|api-key|timeout)(=|$)/.exec(first ?? '');
  if (clientOption) return usageFailure(`--${clientOption[1]} goes after the command: elexirion COMMAND --${clientOption[1]} ...`, 'usage: elexirion COMMAND [OPTIONS]');
  if (first === undefined || first === 'serve' || first.startsWith('-')) {
    const { serve, serveUsage } = await import('./serve.js');
    try {
      await serve(first === 'serve' ? argv.slice(1) : argv);
    } catch (error) {
      if (error instanceof UsageError) return usageFailure(error.message, `usage: elexirion ${serveUsage}`);
      throw error;
    }
    return undefined;
  }

  let command: Command | undefined;
  let rest: string[];
  if (groups.has(first)) {
    command = commands.find((candidate) => candidate.spec.path[0] === first && candidate.spec.path[1] === second);
    if (!command) {
      if (second === '--help' || second === '-h') {
        process.stdout.write(`${groupHelp(first)}\n`);
        return ExitCode.OK;
      }
      return usageFailure(second === undefined ? `${first} needs a subcommand` : `unknown command "${first} ${second}"`, groupHelp(first));
    }
    rest = argv.slice(2);
  } else {
    command = commands.find((candidate) => candidate.spec.path.length === 1 && candidate.spec.path[0] === first);
    if (!command) return usageFailure(`unknown command "${first}"`, `usage: elexirion COMMAND [OPTIONS]\ncommands: serve, ${[...new Set(commands.map((candidate) => candidate.spec.path[0]))].join(', ')}`);
    rest = argv.slice(1);
  }

  let ctx: Context;
  try {
    const parsed = parseCommand(command.spec, rest);
    if (parsed.values.help) {
      process.stdout.write(`${commandHelp(command.spec)}\n`);
      return ExitCode.OK;
    }
    ctx = createContext(parsed);
  } catch (error) {
    if (error instanceof UsageError) return usageFailure(error.message, usageLine(command.spec));
    throw error;
  }
  try {
    return await command.run(ctx);
  } catch (error) {
    if (error instanceof UsageError) return usageFailure(error.message, usageLine(command.spec));
    return reportFailure(error, ctx);
  } finally {
    ctx.progress.stop();
    ctx.close();
  }
}
