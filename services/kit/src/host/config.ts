import { z } from 'zod';
import { isSecretName, redactUrlCredentials } from '../secrets.js';
import { serviceCatalog, type ServiceName } from './catalog.js';
import { GRPC_TARGET_FORMS, channelTarget, grpcTargetProblem } from '../rpc/target.js';

/** A configuration problem found at start-up; the message names every bad variable. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(readonly issues: string[]) {
    super(`invalid configuration:\n${issues.map((issue) => `  - ${issue}`).join('\n')}`);
  }
}

export const port = () =>
  z.coerce.number({ error: 'expected a port number' }).int('expected a whole port number').min(0, 'expected a port from 0 (any free port) to 65535').max(65535, 'expected a port from 0 (any free port) to 65535');

export const durationMs = () =>
  z.coerce.number({ error: 'expected milliseconds' }).int('expected whole milliseconds').min(0);

export const boolFlag = () =>
  z
    .enum(['true', 'false', '1', '0', 'yes', 'no', 'on', 'off'], { error: 'expected true or false' })
    .transform((value) => ['true', '1', 'yes', 'on'].includes(value));

// Every form grpc-js resolves: several replicas of a service on one machine are
// ipv4:127.0.0.1:50053,127.0.0.1:50063.
const grpcTarget = () =>
  z.string().superRefine((value, context) => {
    const problem = grpcTargetProblem(value);
    if (problem) context.addIssue({ code: 'custom', message: `expected a gRPC target (${GRPC_TARGET_FORMS}): ${problem}` });
  });

function portVariables() {
  const shape: Record<string, z.ZodType> = {};
  for (const [name, entry] of Object.entries(serviceCatalog)) {
    const upper = name.toUpperCase();
    shape[`${upper}_GRPC_PORT`] = port().default(entry.grpcPort);
    shape[`${upper}_HTTP_PORT`] = port().default(entry.httpPort);
    shape[`${upper}_ADDRESS`] = grpcTarget().optional();
  }
  return shape;
}

/** Variables every process reads, whatever services it hosts. */
export const hostConfigSchema = z.object({
  ...portVariables(),
  BIND_HOST: z.string().min(1).default('0.0.0.0'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  NATS_URL: z.string().regex(/^(nats|tls|ws|wss):\/\/\S+$/, 'expected a URL such as nats://127.0.0.1:4222').default('nats://127.0.0.1:4222'),
  TELEMETRY_EVENTS: boolFlag().default(true),
  TELEMETRY_QUEUE_MAX: z.coerce.number().int().min(1).max(1_000_000).default(10_000),
  TELEMETRY_FLUSH_MS: z.coerce.number().int().min(1).max(10_000).default(20),
  TELEMETRY_STREAM: z.string().regex(/^[A-Za-z0-9_-]+$/, 'expected a JetStream stream name').default('ELEXIRION_EVENTS'),
  TELEMETRY_STREAM_MAX_AGE_HOURS: z.coerce.number().int().min(1).default(24 * 7),
  OTEL_EXPORTER_OTLP_ENDPOINT: z.url({ error: 'expected a URL such as http://collector:4318' }).optional(),
  OTEL_SERVICE_NAME: z.string().min(1).optional(),
  DRAIN_DELAY_MS: durationMs().default(0),
  DRAIN_GRACE_MS: durationMs().default(20_000),
  GRPC_MAX_CONNECTION_AGE_MS: durationMs().default(300_000),
});

export type HostConfig = z.infer<typeof hostConfigSchema> & {
  ports: Record<ServiceName, { grpc: number; http: number }>;
  addresses: Record<ServiceName, string>;
};

/** Validates `env` against `schema`; throws ConfigError naming each bad variable (never a secret's value). */
export function parseEnv<S extends z.ZodType>(schema: S, env: NodeJS.ProcessEnv): z.infer<S> {
  const cleaned: Record<string, string> = {};
  for (const [key, value] of Object.entries(env)) {
    // An empty variable means "not set", as in most twelve-factor services.
    if (value !== undefined && value !== '') cleaned[key] = value;
  }
  const result = schema.safeParse(cleaned);
  if (result.success) return result.data;
  throw new ConfigError(
    result.error.issues.map((issue) => {
      const name = issue.path.join('.') || '(environment)';
      const raw = cleaned[name];
      const shown = raw === undefined ? 'not set' : isSecretName(name) ? 'value hidden' : `got ${JSON.stringify(redactUrlCredentials(raw))}`;
      return `${name}: ${issue.message} (${shown})`;
    }),
  );
}

export function loadHostConfig(env: NodeJS.ProcessEnv): HostConfig {
  const base = parseEnv(hostConfigSchema, env);
  const record = base as Record<string, unknown>;
  const ports = {} as HostConfig['ports'];
  const addresses = {} as HostConfig['addresses'];
  for (const name of Object.keys(serviceCatalog) as ServiceName[]) {
    const upper = name.toUpperCase();
    const grpc = record[`${upper}_GRPC_PORT`] as number;
    ports[name] = { grpc, http: record[`${upper}_HTTP_PORT`] as number };
    const address = record[`${upper}_ADDRESS`] as string | undefined;
    addresses[name] = address === undefined ? `dns:///127.0.0.1:${grpc}` : channelTarget(address);
  }
  return { ...base, ports, addresses };
}
