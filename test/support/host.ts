// Helpers for tests that start a host in the test process: its environment, its logs, and
// service implementations that answer only what a test cares about.
import type { DestinationStream } from 'pino';
import { ServerError, Status, serviceNames } from '@elexirion/kit';

/** A pino destination that keeps every line, parsed, for assertions. */
export interface CapturedLogs extends DestinationStream {
  lines: string[];
  records(): Record<string, any>[];
  text(): string;
}

export function captureLogs(): CapturedLogs {
  const lines: string[] = [];
  return {
    lines,
    write(chunk: string) {
      for (const line of chunk.split('\n')) if (line.trim()) lines.push(line);
    },
    records: () => lines.map((line) => JSON.parse(line) as Record<string, any>),
    text: () => lines.join('\n'),
  };
}

/**
 * An environment for startHost: loopback only, port 0 for every <NAME>_GRPC_PORT and
 * <NAME>_HTTP_PORT (the host binds free ones and reports them as host.grpcPort and
 * host.httpPort, so no other process can take them first), no telemetry events, silent logs;
 * `extra` wins. A host calling a service it does not host needs its <NAME>_ADDRESS in `extra`.
 */
export async function hostEnv(extra: NodeJS.ProcessEnv = {}): Promise<NodeJS.ProcessEnv> {
  const env: NodeJS.ProcessEnv = {
    BIND_HOST: '127.0.0.1',
    LOG_LEVEL: 'silent',
    TELEMETRY_EVENTS: 'false',
    DRAIN_GRACE_MS: '5000',
    // The gateway asks for API keys unless told otherwise; tests of keys turn them on.
    GATEWAY_AUTH: 'off',
  };
  for (const name of serviceNames) {
    const upper = name.toUpperCase();
    env[`${upper}_GRPC_PORT`] = '0';
    env[`${upper}_HTTP_PORT`] = '0';
  }
  return { ...env, ...extra };
}

/**
 * A full service implementation from the methods a test cares about: every other method of the
 * contract answers UNIMPLEMENTED, so the tests keep working as the contracts grow.
 */
export function implement<T extends object>(
  definition: { methods: Record<string, { responseStream: boolean }> },
  methods: Partial<T>,
): T {
  const full: Record<string, unknown> = { ...methods };
  for (const [key, method] of Object.entries(definition.methods)) {
    if (key in full) continue;
    const refuse = () => new ServerError(Status.UNIMPLEMENTED, `${key} is not part of this test`);
    full[key] = method.responseStream
      ? async function* () {
          throw refuse();
        }
      : async () => {
          throw refuse();
        };
  }
  return full as T;
}
