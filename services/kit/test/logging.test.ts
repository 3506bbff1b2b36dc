import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  REDACTED,
  createLogger,
  initTracing,
  isSecretName,
  redactSecrets,
  redactSecretsDeep,
  redactUrlCredentials,
  registerSecret,
  traceIds,
  tracer,
  type Tracing,
} from '@elexirion/kit';
import { captureLogs } from '@elexirion/testing';

// Secrets are process-wide; each test file runs in its own worker, so these stay local to this file.
const SECRET = 'sk-test-0123456789-SECRET';
registerSecret(SECRET);

function logger() {
  const logs = captureLogs();
  return { logs, log: createLogger({ level: 'trace', name: 'kit-test', destination: logs }) };
}

describe('secrets', () => {
  it('replaces every occurrence of a registered secret in text', () => {
    expect(redactSecrets(`a ${SECRET} b ${SECRET}`)).toBe(`a ${REDACTED} b ${REDACTED}`);
  });

  it('ignores values too short to be a secret, so ordinary words survive', () => {
    registerSecret('abc');
    registerSecret('');
    registerSecret(undefined);
    expect(redactSecrets('abc and abcdef')).toBe('abc and abcdef');
  });

  it('redacts deep inside objects and arrays and in error messages and stacks, without touching the original', () => {
    const error = new Error(`upstream said ${SECRET}`);
    const original = { a: [{ b: `x${SECRET}y` }], error, n: 3 };
    const copy = redactSecretsDeep(original);
    expect(copy.a[0]!.b).toBe(`x${REDACTED}y`);
    expect(copy.error.message).toBe(`upstream said ${REDACTED}`);
    expect(copy.error.stack).not.toContain(SECRET);
    expect(copy.n).toBe(3);
    expect(original.a[0]!.b).toContain(SECRET);
    expect(error.message).toContain(SECRET);
  });

  it('leaves a Date a Date when redacting deeply', () => {
    const at = new Date(0);
    const copy = redactSecretsDeep({ at, text: SECRET });
    expect(copy.text).toBe(REDACTED);
    expect(copy.at).toBeInstanceOf(Date);
    expect((copy.at as Date).getTime()).toBe(0);
  });

  it('recognises secret-looking variable names', () => {
    for (const name of ['ANTHROPIC_API_KEY', 'db_password', 'SESSION_SECRET', 'GITHUB_TOKEN', 'GCP_CREDENTIALS']) {
      expect(isSecretName(name), name).toBe(true);
    }
    for (const name of ['NATS_URL', 'LOG_LEVEL', 'GATEWAY_GRPC_PORT']) expect(isSecretName(name), name).toBe(false);
  });
});

describe('redactUrlCredentials', () => {
  it.each([
    ['http://user:pass@host:8080/v1', 'http://user:***@host:8080/v1'],
    ['https://ghp_token1234@example.com', 'https://***@example.com'],
    ['nats://admin:p%40ss@a:4222,nats://admin:p%40ss@b:4222', 'nats://admin:***@a:4222,nats://admin:***@b:4222'],
    // An unencoded @ in the password: the URL parser takes the last @ of the authority, and so does this.
    ['http://user:p@ss@host/path?q=a@b', 'http://user:***@host/path?q=a@b'],
    ['GET http://u:secret@127.0.0.1:1/x failed', 'GET http://u:***@127.0.0.1:1/x failed'],
  ])('hides the credentials in %s', (text, shown) => {
    expect(redactUrlCredentials(text)).toBe(shown);
  });

  it('leaves text without credentials in a URL as it is', () => {
    for (const text of ['http://127.0.0.1:4318', 'nats://127.0.0.1:4222', 'mail me at ops@example.com', 'http://host/a@b', '']) {
      expect(redactUrlCredentials(text)).toBe(text);
    }
  });
});

describe('createLogger', () => {
  it('writes JSON lines with the process name and a level label', () => {
    const { logs, log } = logger();
    log.info({ step: 'answer' }, 'hello');
    const [record] = logs.records();
    expect(record).toMatchObject({ level: 'info', process: 'kit-test', msg: 'hello', step: 'answer' });
    expect(typeof record!.time).toBe('string');
  });

  it('redacts a registered secret in the message string', () => {
    const { logs, log } = logger();
    log.info(`calling upstream with key ${SECRET}`);
    expect(logs.text()).not.toContain(SECRET);
    expect(logs.records()[0]!.msg).toBe(`calling upstream with key ${REDACTED}`);
  });

  it('redacts a registered secret passed as a printf-style string argument', () => {
    const { logs, log } = logger();
    log.info('key is %s', SECRET);
    expect(logs.text()).not.toContain(SECRET);
    expect(logs.records()[0]!.msg).toBe(`key is ${REDACTED}`);
  });

  it('redacts a registered secret anywhere inside a logged object', () => {
    const { logs, log } = logger();
    log.warn({ request: { url: `https://api.example/v1?key=${SECRET}`, parts: [SECRET] } }, 'request failed');
    expect(logs.text()).not.toContain(SECRET);
    const record = logs.records()[0]!;
    expect(record.request.url).toBe(`https://api.example/v1?key=${REDACTED}`);
    expect(record.request.parts).toEqual([REDACTED]);
  });

  it('redacts a registered secret in a logged error under err, message and stack', () => {
    const { logs, log } = logger();
    log.error({ err: new Error(`401 for key ${SECRET}`) }, 'provider call failed');
    expect(logs.text()).not.toContain(SECRET);
    const record = logs.records()[0]!;
    expect(record.err.message).toBe(`401 for key ${REDACTED}`);
    expect(record.err.stack).toContain(REDACTED);
    expect(record.err.type).toBe('Error');
  });

  it('redacts a registered secret when an error is logged on its own, without a message', () => {
    const { logs, log } = logger();
    log.error(new Error(`401 for key ${SECRET}`));
    log.error({ err: new Error(`403 for key ${SECRET}`) });
    expect(logs.lines).toHaveLength(2);
    expect(logs.text()).not.toContain(SECRET);
  });

  it('logs a Date field as an ISO timestamp while secrets are registered', () => {
    const { logs, log } = logger();
    log.info({ startedAt: new Date(0) }, 'job started');
    expect(logs.records()[0]!.startedAt).toBe('1970-01-01T00:00:00.000Z');
  });

  it('redacts credential fields by name even when the value was never registered', () => {
    const { logs, log } = logger();
    log.info(
      {
        authorization: 'Bearer abc.def.ghi',
        apiKey: 'plain-key-1',
        upstream: { authorization: 'Bearer zzz', headers: { authorization: 'Basic qqq', 'x-api-key': 'hdr-key-2' } },
      },
      'outgoing',
    );
    const record = logs.records()[0]!;
    expect(record.authorization).toBe(REDACTED);
    expect(record.apiKey).toBe(REDACTED);
    expect(record.upstream.authorization).toBe(REDACTED);
    expect(record.upstream.headers.authorization).toBe(REDACTED);
    expect(record.upstream.headers['x-api-key']).toBe(REDACTED);
    for (const leaked of ['abc.def.ghi', 'plain-key-1', 'zzz', 'qqq', 'hdr-key-2']) expect(logs.text()).not.toContain(leaked);
  });

  it('honours the level', () => {
    const logs = captureLogs();
    const log = createLogger({ level: 'warn', name: 'kit-test', destination: logs });
    log.info('hidden');
    log.warn('shown');
    expect(logs.records().map((record) => record.msg)).toEqual(['shown']);
  });

  it('leaves trace ids out when no span is active', () => {
    const { logs, log } = logger();
    log.info('no span');
    expect(logs.records()[0]).not.toHaveProperty('trace_id');
    expect(traceIds()).toEqual({ traceId: '', spanId: '' });
  });

  describe('with tracing', () => {
    let tracing: Tracing;
    beforeAll(() => {
      tracing = initTracing({ serviceName: 'kit-test' });
    });
    afterAll(async () => {
      await tracing.shutdown();
    });

    it('puts the active span trace_id and span_id into each log line, also from a child logger', async () => {
      const { logs, log } = logger();
      const ids = await tracer.startActiveSpan('unit of work', async (span) => {
        try {
          log.info('inside the span');
          await new Promise((resolve) => setTimeout(resolve, 5)); // the context survives an await
          log.child({ service: 'provider' }).info('after an await, from a child');
          return span.spanContext();
        } finally {
          span.end();
        }
      });
      log.info('after the span');
      expect(ids.traceId).toMatch(/^[0-9a-f]{32}$/);
      expect(ids.traceId).not.toBe('0'.repeat(32));
      const [inside, child, after] = logs.records();
      expect(inside).toMatchObject({ trace_id: ids.traceId, span_id: ids.spanId });
      expect(child).toMatchObject({ trace_id: ids.traceId, span_id: ids.spanId, service: 'provider' });
      expect(after).not.toHaveProperty('trace_id');
    });

    it('gives each concurrent span its own ids', async () => {
      const { logs, log } = logger();
      const run = (name: string) =>
        tracer.startActiveSpan(name, async (span) => {
          await new Promise((resolve) => setTimeout(resolve, 5));
          log.info({ name }, 'done');
          span.end();
          return span.spanContext().spanId;
        });
      const [a, b] = await Promise.all([run('a'), run('b')]);
      const byName = Object.fromEntries(logs.records().map((record) => [record.name, record.span_id]));
      expect(byName).toEqual({ a, b });
      expect(a).not.toBe(b);
    });

    it('reports the active span ids through traceIds()', () => {
      tracer.startActiveSpan('ids', (span) => {
        expect(traceIds()).toEqual({ traceId: span.spanContext().traceId, spanId: span.spanContext().spanId });
        span.end();
      });
    });
  });
});
