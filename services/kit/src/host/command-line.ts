import { relative } from 'node:path';
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { z } from 'zod';
import { callsOf, hostingOrder, serviceCatalog, type ServiceName } from './catalog.js';
import { hostConfigSchema } from './config.js';
import type { ServiceModule } from './host.js';
import { runHost } from './host.js';

// The command line of the binaries that run services: `--help` answers what the process is and
// the environment it reads (its configuration), and anything else it does not know stops it with
// exit code 64 (EX_USAGE) and the usage, never a stack trace.

export interface CommandLine<O extends ParseArgsOptionsConfig> {
  /** The command as users type it ("elexirion"); how this process was started when absent. */
  name?: string;
  /** The usage line's arguments after the command, e.g. "[--services LIST]". */
  usage: string;
  /** What the command does, in a sentence or two. */
  summary: string;
  options?: O;
  allowPositionals?: boolean;
  /** Extra help text, after the options. */
  details?: string;
  /** The services the process may host: the help lists the environment variables they read. */
  services?: readonly ServiceModule<ServiceName, any>[];
}

const USAGE = 64; // EX_USAGE

/** How this process was started, for the usage line: "node services/agent/dist/main.js". */
function commandName(): string {
  const script = process.argv[1];
  return script ? `node ${relative(process.cwd(), script) || script}` : 'node';
}

/**
 * Parses `argv` (the process's arguments by default). `--help` / `-h` prints the help to stdout and
 * exits 0; an unknown option or a missing value prints the problem and the usage to stderr and
 * exits 64.
 */
export function parseCommandLine<O extends ParseArgsOptionsConfig>(command: CommandLine<O>, argv = process.argv.slice(2)): ParsedCommandLine<O> {
  const options: ParseArgsOptionsConfig = { ...command.options, help: { type: 'boolean', short: 'h' } };
  const usage = `usage: ${command.name ?? commandName()} ${command.usage}`.trimEnd();
  let parsed: { values: Record<string, unknown>; positionals: string[] };
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: command.allowPositionals ?? false, strict: true });
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n${usage}\n(--help for more)\n`);
    process.exit(USAGE);
  }
  if (parsed.values.help) {
    process.stdout.write(`${commandHelp(usage, command)}\n`);
    process.exit(0);
  }
  return parsed as ParsedCommandLine<O>;
}

/** The options given (booleans and strings, as declared) and the positional arguments. */
export interface ParsedCommandLine<O extends ParseArgsOptionsConfig> {
  values: { [K in keyof O]?: O[K]['type'] extends 'boolean' ? boolean : string };
  positionals: string[];
}

function commandHelp(usage: string, command: CommandLine<ParseArgsOptionsConfig>): string {
  const sections = [usage, '', command.summary];
  if (command.details) sections.push('', command.details);
  if (command.services?.length) sections.push('', environmentHelp(command.services));
  return sections.join('\n');
}

/**
 * The environment variables a process hosting `modules` reads, each with its default. One service:
 * its ports and the addresses of the services it calls; several (`elexirion`): every service's,
 * since which apply depends on the services chosen.
 */
function environmentHelp(modules: readonly ServiceModule<ServiceName, any>[]): string {
  const names = hostingOrder(modules.map((module) => module.name));
  const hostVariables = variablesOf(hostConfigSchema);
  const lines: string[] = ['Environment (README.md, "Configuration", says what each means):'];
  const line = (name: string, fallback: string) => lines.push(`  ${name.padEnd(36)} ${fallback}`);
  const portsOf = (name: ServiceName) => {
    const upper = name.toUpperCase();
    line(`${upper}_GRPC_PORT`, hostVariables.get(`${upper}_GRPC_PORT`) ?? 'unset');
    line(`${upper}_HTTP_PORT`, hostVariables.get(`${upper}_HTTP_PORT`) ?? 'unset');
  };
  const addressOf = (name: ServiceName) => line(`${name.toUpperCase()}_ADDRESS`, `dns:///127.0.0.1:${serviceCatalog[name].grpcPort}`);

  if (names.length === 1) {
    portsOf(names[0]!);
    for (const callee of callsOf(names[0]!)) addressOf(callee);
  } else {
    lines.push('  (the ports of the outermost service hosted; the address of each service called but not hosted)');
    for (const name of names) portsOf(name);
    for (const name of names) if (names.some((caller) => callsOf(caller).includes(name))) addressOf(name);
  }
  for (const [name, fallback] of hostVariables) if (!/_(GRPC_PORT|HTTP_PORT|ADDRESS)$/.test(name)) line(name, fallback);
  for (const module of modules) {
    if (!module.configSchema) continue;
    lines.push(`  (${module.name})`);
    for (const [name, fallback] of variablesOf(module.configSchema)) line(name, fallback);
  }
  return lines.join('\n');
}

/** Each variable of an object schema with its default ("unset" when it has none) and its choices, in order. */
function variablesOf(schema: z.ZodType): Map<string, string> {
  const variables = new Map<string, string>();
  if (!(schema instanceof z.ZodObject)) return variables;
  const json = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as { properties?: Record<string, { enum?: unknown[] }> };
  for (const [name, property] of Object.entries(schema.shape as Record<string, z.ZodType>)) {
    // The default as the service sees it (a flag's `true`, not its input text).
    const parsed = property.safeParse(undefined);
    const fallback = parsed.success && parsed.data !== undefined ? String(parsed.data) : 'unset';
    const choices = json.properties?.[name]?.enum;
    variables.set(name, choices ? `${fallback} (${choices.join('|')})` : fallback);
  }
  return variables;
}

/**
 * Entry point of a process hosting one service (`services/<name>/src/main.ts`): answers `--help`
 * with the environment it reads, refuses arguments it does not take, then runs the host.
 */
export async function runService(module: ServiceModule<ServiceName, any>): Promise<void> {
  parseCommandLine({
    usage: '[--help]',
    summary: `Runs the ${module.name} service alone in this process (gRPC, with health and reflection, and HTTP: /metrics, /healthz, /readyz), configured by its environment; SIGTERM drains it. To host several services in one process, use \`elexirion --services\`.`,
    services: [module],
  });
  await runHost([module]);
}
