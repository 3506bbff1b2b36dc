import { parseArgs } from 'node:util';
import { ExitCode } from './exit-codes.js';

// The command table's shape and its parsing. node's util.parseArgs does the parsing (strict: an
// unknown option or a missing value is refused): the command line is small, the kit's service
// binaries already use it, and it costs no dependency. What parseArgs lacks (subcommands, help
// text, value checks) is this file: help is generated from the same table the parser reads, so an
// option cannot be parsed without being documented.

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  /** Repeatable: each use adds a value. */
  multiple?: boolean;
  /** With multiple: each value may also list several, comma-separated ("--scope chat,jobs"). */
  commaList?: boolean;
  /** The value's placeholder in the help ("SEQ"). */
  value?: string;
  description: string;
}

export type Options = Record<string, OptionSpec>;

/** A usage problem: printed with the command's usage, exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
  readonly exitCode = ExitCode.USAGE;
}

/** What a command's run() gets: its options (strings, booleans, or string lists) and arguments. */
export interface Parsed {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

/** One command ("jobs watch"): what it takes and what it says about itself. */
export interface CommandSpec {
  /** The words that name it: ["jobs", "watch"]. */
  path: string[];
  /** The arguments after the command, for the usage line ("JOB_ID [--after SEQ]"). */
  usage: string;
  /** One line for the command list of `elexirion --help`. */
  brief: string;
  summary: string;
  options: Options;
  /** How many positional arguments it takes. */
  positionals: { min: number; max: number; names: string };
  /** More help after the options (output format, examples). */
  details?: string;
}

/** Options every client command takes. */
export const globalOptions: Options = {
  address: {
    type: 'string',
    value: 'HOST:PORT',
    description: 'the gateway\'s gRPC address (env ELEXIRION_ADDRESS; default 127.0.0.1:50051; https://HOST:PORT for TLS)',
  },
  'api-key': {
    type: 'string',
    value: 'KEY',
    description: 'API key, sent as "authorization: Bearer" and never printed (env ELEXIRION_API_KEY, which keeps it out of `ps`)',
  },
  timeout: { type: 'string', value: 'DURATION', description: 'deadline of each call (default 60s for calls that answer at once; chat and streams have none unless given)' },
  json: { type: 'boolean', description: 'print the proto3 JSON mapping: one document, or JSON lines for streams' },
  help: { type: 'boolean', short: 'h', description: 'this help' },
};

/** Parses `args` against the command's options plus the global ones; throws UsageError. */
export function parseCommand(spec: CommandSpec, args: string[]): Parsed {
  const options = { ...spec.options, ...globalOptions };
  let parsed: Parsed;
  try {
    parsed = parseArgs({
      args,
      options: Object.fromEntries(
        Object.entries(options).map(([name, option]) => [name, { type: option.type, ...(option.short ? { short: option.short } : {}), ...(option.multiple ? { multiple: true } : {}) }]),
      ),
      allowPositionals: true,
      strict: true,
    }) as Parsed;
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (parsed.values.help) return parsed;
  // "--scope chat,jobs --scope admin" is three scopes.
  for (const [name, option] of Object.entries(options)) {
    const value = parsed.values[name];
    if (option.commaList && Array.isArray(value)) parsed.values[name] = value.flatMap((item) => item.split(',')).map((item) => item.trim()).filter(Boolean);
  }
  const count = parsed.positionals.length;
  if (count < spec.positionals.min) throw new UsageError(`missing ${spec.positionals.names}`);
  if (count > spec.positionals.max) throw new UsageError(`unexpected argument "${parsed.positionals[spec.positionals.max]}"`);
  return parsed;
}

export function usageLine(spec: CommandSpec): string {
  return `usage: elexirion ${spec.path.join(' ')} ${spec.usage}`.trimEnd();
}

function optionLines(options: Options): string[] {
  const left = Object.entries(options).map(([name, option]) => {
    const flag = `${option.short ? `-${option.short}, ` : '    '}--${name}${option.value ? ` ${option.value}` : ''}`;
    return [flag, option.description + (option.commaList ? ' (repeatable, or comma-separated)' : option.multiple ? ' (repeatable)' : '')] as const;
  });
  const width = Math.max(...left.map(([flag]) => flag.length)) + 2;
  return left.map(([flag, description]) => `  ${flag.padEnd(width)}${description}`);
}

/** Lines of prose wrapped at `width`; indented lines (tables, examples) are left as written. */
function wrap(text: string, width = 100): string {
  return text
    .split('\n')
    .map((line) => {
      if (/^\s/.test(line) || line.length <= width) return line;
      const lines: string[] = [];
      let current = '';
      for (const word of line.split(' ')) {
        if (current && current.length + 1 + word.length > width) {
          lines.push(current);
          current = word;
        } else current = current ? `${current} ${word}` : word;
      }
      return [...lines, current].join('\n');
    })
    .join('\n');
}

export function commandHelp(spec: CommandSpec): string {
  const sections = [usageLine(spec), '', wrap(spec.summary)];
  if (Object.keys(spec.options).length) sections.push('', 'Options:', ...optionLines(spec.options));
  sections.push('', 'Global options:', ...optionLines(globalOptions));
  if (spec.details) sections.push('', spec.details);
  sections.push('', 'Exit codes: 0 ok, 1 failed, 2 usage, 3 auth, 4 not found, 5 unavailable, 6 limit or budget, 7 unimplemented (elexirion --help has the table).');
  return wrap(sections.join('\n'));
}

/** "30s", "10m", "2h", "7d", "1500ms" as milliseconds; UsageError naming `what` otherwise. */
export function parseDuration(text: string, what: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim());
  if (!match) throw new UsageError(`${what}: "${text}" is not a duration (e.g. 30s, 10m, 2h, 7d)`);
  const unit = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
  return Number(match[1]) * unit;
}

/** A time: ISO 8601, or a duration meaning that long ago ("10m") or from now (`future`). */
export function parseTime(text: string, what: string, future = false): Date {
  if (/^\d+(?:\.\d+)?(ms|s|m|h|d)$/.test(text.trim())) {
    const ms = parseDuration(text, what);
    return new Date(Date.now() + (future ? ms : -ms));
  }
  const time = Date.parse(text);
  if (!/^\d{4}-\d{2}-\d{2}/.test(text) || Number.isNaN(time)) throw new UsageError(`${what}: "${text}" is neither a duration (10m, 7d) nor an ISO 8601 time`);
  return new Date(time);
}

/** A whole number in [min, max]; UsageError naming `what` otherwise. */
export function parseInteger(text: string, what: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (!/^\d+$/.test(text.trim()) || Number(text) < min || Number(text) > max) throw new UsageError(`${what}: "${text}" is not a whole number from ${min} to ${max}`);
  return Number(text);
}

/** A non-negative decimal number; UsageError naming `what` otherwise. */
export function parseAmount(text: string, what: string): number {
  if (!/^\d+(\.\d+)?$/.test(text.trim())) throw new UsageError(`${what}: "${text}" is not a non-negative number`);
  return Number(text);
}

/** "key=value" pairs as a map; UsageError naming `what` for one without "=". */
export function parsePairs(items: string[] | undefined, what: string): Record<string, string> {
  const pairs: Record<string, string> = {};
  for (const item of items ?? []) {
    const at = item.indexOf('=');
    if (at < 1) throw new UsageError(`${what}: "${item}" is not NAME=VALUE`);
    pairs[item.slice(0, at)] = item.slice(at + 1);
  }
  return pairs;
}
