import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ConfigError, hostConfigSchema, loadHostConfig, parseEnv, parseServiceList, port } from '@elexirion/kit';

function configErrorOf(run: () => unknown): ConfigError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError, but nothing was thrown');
}

describe('loadHostConfig', () => {
  it('uses the catalog default ports for every service when nothing is set', () => {
    const config = loadHostConfig({});
    expect(config.ports).toEqual({
      gateway: { grpc: 50051, http: 8080 },
      agent: { grpc: 50052, http: 8082 },
      executor: { grpc: 50053, http: 8083 },
      provider: { grpc: 50054, http: 8084 },
      monitor: { grpc: 50055, http: 8085 },
    });
    const raw = config as unknown as Record<string, unknown>;
    expect(raw.GATEWAY_GRPC_PORT).toBe(50051);
    expect(raw.GATEWAY_HTTP_PORT).toBe(8080);
  });

  it('points each <NAME>_ADDRESS at loopback on that service gRPC port by default', () => {
    const config = loadHostConfig({ EXECUTOR_GRPC_PORT: '6000' });
    expect(config.addresses).toEqual({
      gateway: 'dns:///127.0.0.1:50051',
      agent: 'dns:///127.0.0.1:50052',
      executor: 'dns:///127.0.0.1:6000',
      provider: 'dns:///127.0.0.1:50054',
      monitor: 'dns:///127.0.0.1:50055',
    });
  });

  it('takes an explicit <NAME>_ADDRESS as given', () => {
    const config = loadHostConfig({ PROVIDER_ADDRESS: 'dns:///provider.elexirion.svc:50054' });
    expect(config.addresses.provider).toBe('dns:///provider.elexirion.svc:50054');
  });

  it.each([
    ['several replicas on one machine', 'ipv4:127.0.0.1:50053,127.0.0.1:50063'],
    ['IPv6 replicas', 'ipv6:[::1]:50053,[::1]:50063'],
    ['a DNS name with its server', 'dns://10.0.0.2:53/provider.elexirion.svc:50054'],
    ['a unix socket', 'unix:///run/elexirion/provider.sock'],
  ])('accepts <NAME>_ADDRESS in every form grpc-js resolves: %s', (_form, target) => {
    expect(loadHostConfig({ PROVIDER_ADDRESS: target }).addresses.provider).toBe(target);
  });

  it('resolves a bare host:port <NAME>_ADDRESS through DNS', () => {
    expect(loadHostConfig({ PROVIDER_ADDRESS: 'provider:50054' }).addresses.provider).toBe('dns:///provider:50054');
    expect(loadHostConfig({ PROVIDER_ADDRESS: '10.0.0.7:50054' }).addresses.provider).toBe('dns:///10.0.0.7:50054');
  });

  it.each([
    ['ipv4:127.0.0.1:50053,127.0.0.1', '"127.0.0.1" has no port'],
    ['ipv4:localhost:50053', '"localhost" is not an IPv4 address'],
    ['ipv6:::1:50053', '"::1:50053" is not an IPv6 address (write [address]:port)'],
    ['xds:///provider', 'unknown scheme "xds:"'],
    ['provider', '"provider" has no port'],
    ['unix:', '"unix:" is not host:port'],
  ])('refuses the <NAME>_ADDRESS %s, saying why', (target, why) => {
    const [issue] = configErrorOf(() => loadHostConfig({ PROVIDER_ADDRESS: target })).issues;
    expect(issue).toContain(`PROVIDER_ADDRESS: expected a gRPC target (dns:///host:port, host:port, ipv4:ip:port[,ip:port...]`);
    expect(issue).toContain(why);
    expect(issue).toContain(JSON.stringify(target));
  });

  it('reads ports as numbers and flags as booleans', () => {
    const config = loadHostConfig({ AGENT_GRPC_PORT: '7001', AGENT_HTTP_PORT: '0', TELEMETRY_EVENTS: 'off', DRAIN_GRACE_MS: '1500' });
    expect(config.ports.agent).toEqual({ grpc: 7001, http: 0 });
    expect(config.TELEMETRY_EVENTS).toBe(false);
    expect(config.DRAIN_GRACE_MS).toBe(1500);
  });

  it('has sensible defaults for the rest of the host settings', () => {
    const config = loadHostConfig({});
    expect(config).toMatchObject({
      BIND_HOST: '0.0.0.0',
      LOG_LEVEL: 'info',
      NATS_URL: 'nats://127.0.0.1:4222',
      TELEMETRY_EVENTS: true,
      TELEMETRY_STREAM: 'ELEXIRION_EVENTS',
      DRAIN_DELAY_MS: 0,
      DRAIN_GRACE_MS: 20_000,
    });
  });

  it('rejects a non-numeric port with a ConfigError naming the variable and the value', () => {
    const error = configErrorOf(() => loadHostConfig({ GATEWAY_GRPC_PORT: 'abc' }));
    expect(error.issues).toHaveLength(1);
    expect(error.issues[0]).toContain('GATEWAY_GRPC_PORT');
    expect(error.issues[0]).toContain('"abc"');
    expect(error.message).toContain('GATEWAY_GRPC_PORT');
    expect(error.message).toContain('abc');
  });

  it('rejects a port out of range', () => {
    const error = configErrorOf(() => loadHostConfig({ PROVIDER_HTTP_PORT: '70000' }));
    expect(error.message).toContain('PROVIDER_HTTP_PORT');
    expect(error.message).toContain('70000');
  });

  it('rejects a NATS_URL that is not a NATS URL, naming the variable and the value', () => {
    const error = configErrorOf(() => loadHostConfig({ NATS_URL: 'http://x' }));
    expect(error.message).toContain('NATS_URL');
    expect(error.message).toContain('http://x');
  });

  it('shows a bad URL without the password in it', () => {
    const error = configErrorOf(() => loadHostConfig({ NATS_URL: 'http://admin:nats-pass-0042@nats:4222' }));
    expect(error.message).toContain('NATS_URL');
    expect(error.message).toContain('"http://admin:***@nats:4222"');
    expect(error.message).not.toContain('nats-pass-0042');
  });

  it('names every bad variable at once, not only the first', () => {
    const error = configErrorOf(() =>
      loadHostConfig({ GATEWAY_GRPC_PORT: 'abc', NATS_URL: 'http://x', LOG_LEVEL: 'loud', EXECUTOR_ADDRESS: 'not a target!' }),
    );
    const named = error.issues.map((issue) => issue.split(':')[0]);
    expect(named.sort()).toEqual(['EXECUTOR_ADDRESS', 'GATEWAY_GRPC_PORT', 'LOG_LEVEL', 'NATS_URL']);
  });

  it('treats an empty variable as unset, so the default applies', () => {
    const config = loadHostConfig({ GATEWAY_GRPC_PORT: '', NATS_URL: '', PROVIDER_ADDRESS: '' });
    expect(config.ports.gateway.grpc).toBe(50051);
    expect(config.NATS_URL).toBe('nats://127.0.0.1:4222');
    expect(config.addresses.provider).toBe('dns:///127.0.0.1:50054');
  });
});

describe('parseEnv', () => {
  const schema = z.object({
    ANTHROPIC_API_KEY: z.string().min(40),
    WORKER_COUNT: z.coerce.number().int().min(1),
    PIPELINE_DIR: z.string().min(1),
  });

  it('returns the parsed values when the environment is valid', () => {
    const parsed = parseEnv(schema, { ANTHROPIC_API_KEY: 'k'.repeat(40), WORKER_COUNT: '3', PIPELINE_DIR: '/p', UNRELATED: 'x' });
    expect(parsed).toEqual({ ANTHROPIC_API_KEY: 'k'.repeat(40), WORKER_COUNT: 3, PIPELINE_DIR: '/p' });
  });

  it('never puts the value of a secret-looking variable in the error, but still names it', () => {
    const secret = 'fake-anthropic-short-but-very-secret';
    const error = configErrorOf(() => parseEnv(schema, { ANTHROPIC_API_KEY: secret, WORKER_COUNT: '2', PIPELINE_DIR: '/p' }));
    expect(error.message).toContain('ANTHROPIC_API_KEY');
    expect(error.message).toContain('value hidden');
    expect(error.message).not.toContain(secret);
    expect(JSON.stringify(error.issues)).not.toContain(secret);
  });

  it('hides values of every variable whose name says it holds a secret', () => {
    const secretSchema = z.object({
      DB_PASSWORD: z.string().min(30),
      SESSION_SECRET: z.string().min(30),
      GITHUB_TOKEN: z.string().min(30),
      GCP_CREDENTIALS: z.string().min(30),
    });
    const values = { DB_PASSWORD: 'hunter2-pw', SESSION_SECRET: 'sess-abcdef', GITHUB_TOKEN: 'ghp_abcdef', GCP_CREDENTIALS: 'creds-abcdef' };
    const error = configErrorOf(() => parseEnv(secretSchema, values));
    expect(error.issues).toHaveLength(4);
    for (const [name, value] of Object.entries(values)) {
      expect(error.message).toContain(name);
      expect(error.message).not.toContain(value);
    }
  });

  it('says "not set" for a required variable that is missing or empty', () => {
    const error = configErrorOf(() => parseEnv(schema, { ANTHROPIC_API_KEY: 'k'.repeat(40), WORKER_COUNT: '', PIPELINE_DIR: undefined }));
    expect(error.issues).toHaveLength(2);
    expect(error.issues.find((issue) => issue.startsWith('WORKER_COUNT'))).toContain('not set');
    expect(error.issues.find((issue) => issue.startsWith('PIPELINE_DIR'))).toContain('not set');
  });

  it('shows the value of an ordinary variable so the operator sees what was wrong', () => {
    const error = configErrorOf(() => parseEnv(schema, { ANTHROPIC_API_KEY: 'k'.repeat(40), WORKER_COUNT: 'many', PIPELINE_DIR: '/p' }));
    expect(error.issues).toEqual([expect.stringMatching(/^WORKER_COUNT: .*\(got "many"\)$/)]);
  });

  it('validates a port with the shared port() helper', () => {
    const error = configErrorOf(() => parseEnv(z.object({ EXTRA_PORT: port() }), { EXTRA_PORT: '-1' }));
    expect(error.message).toContain('EXTRA_PORT');
    expect(error.message).toContain('"-1"');
    expect(parseEnv(z.object({ EXTRA_PORT: port() }), { EXTRA_PORT: '0' })).toEqual({ EXTRA_PORT: 0 });
  });

  it('parses the host schema with no variables at all', () => {
    expect(() => parseEnv(hostConfigSchema, {})).not.toThrow();
  });
});

describe('parseServiceList', () => {
  it('returns services in catalog (dependency) order and expands "all"', () => {
    expect(parseServiceList('gateway, provider')).toEqual(['provider', 'gateway']);
    expect(parseServiceList('all')).toEqual(['provider', 'executor', 'agent', 'monitor', 'gateway']);
  });

  it('names an unknown service', () => {
    expect(() => parseServiceList('gateway,frontend')).toThrow(/unknown service "frontend"/);
    expect(() => parseServiceList(' , ')).toThrow(/empty/);
  });
});
