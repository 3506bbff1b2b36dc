import { afterEach, describe, expect, it } from 'vitest';
import { connect } from '@nats-io/transport-node';
import { SharedNatsConnection, createLogger, startHost, defineService, proto, type Host } from '@elexirion/kit';
import { captureLogs, freePort, hostEnv, implement, natsConnectionNames, startNats, stopAll, waitFor, type NatsServer } from '@elexirion/testing';

const servers: NatsServer[] = [];
const shared: SharedNatsConnection[] = [];
const hosts: Host[] = [];

afterEach(async () => {
  await Promise.all(hosts.splice(0).map((host) => host.stop()));
  await Promise.all(shared.splice(0).map((connection) => connection.stop(500)));
  await Promise.all(servers.splice(0).map((server) => server.stop()));
  await stopAll();
});

function connection(url: string, logs = captureLogs()) {
  const created = new SharedNatsConnection({ url, name: 'kit-shared-test', logger: createLogger({ level: 'debug', name: 'kit-shared-test', destination: logs }) });
  shared.push(created);
  return { connection: created, logs };
}

describe('SharedNatsConnection', () => {
  it('does not connect until something uses it', async () => {
    const nats = await startNats(undefined, undefined, { monitor: true });
    servers.push(nats);
    const { connection: unused } = connection(nats.url);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(unused.readiness()).toEqual({ state: 'off', uses: [] });
    expect(await natsConnectionNames(nats)).not.toContain('kit-shared-test');
  });

  it('serves every use over one connection, and attaches a use added after it connected at once', async () => {
    const nats = await startNats(undefined, undefined, { monitor: true });
    servers.push(nats);
    const { connection: one } = connection(nats.url);
    const attachedWith: unknown[] = [];
    one.use('a', 'first', async (nc) => void attachedWith.push(nc));
    one.use('b', 'second', async (nc) => void attachedWith.push(nc));
    await waitFor('both uses attached', () => one.ready && one.connected);
    one.use('c', 'late', async (nc) => void attachedWith.push(nc));
    await waitFor('the late use attached', () => attachedWith.length === 3);
    expect(new Set(attachedWith).size).toBe(1);
    expect(attachedWith[0]).toBe(one.connection);
    expect((await natsConnectionNames(nats)).filter((name) => name === 'kit-shared-test')).toHaveLength(1);
    expect(one.readiness()).toEqual({
      state: 'connected',
      uses: [
        { purpose: 'first', service: 'a', attached: true },
        { purpose: 'second', service: 'b', attached: true },
        { purpose: 'late', service: 'c', attached: true },
      ],
    });
  });

  it('reports a use as not attached, with why, until NATS answers, then attaches it', async () => {
    const port = await freePort();
    const { connection: one, logs } = connection(`nats://127.0.0.1:${port}`);
    one.use('executor', 'checkpoints', async () => {});
    const warned = await waitFor('the warning that NATS is unreachable', () => logs.records().find((record) => record.msg.startsWith('NATS unreachable')));
    expect(one.ready).toBe(false);
    expect(one.readiness()).toMatchObject({ state: 'connecting', uses: [{ purpose: 'checkpoints', attached: false, problem: 'not connected to NATS yet' }] });
    expect(warned).toMatchObject({ level: 'warn', degraded: ['executor: checkpoints'] });

    servers.push(await startNats(port));
    await waitFor('the use to attach', () => one.ready, 10_000);
    expect(logs.records().some((record) => record.msg === 'checkpoints attached to NATS' && record.service === 'executor')).toBe(true);
  });

  it('retries an attach that fails, saying why meanwhile, until it succeeds', async () => {
    const nats = await startNats();
    servers.push(nats);
    const { connection: one, logs } = connection(nats.url);
    let calls = 0;
    one.use('executor', 'prompt registry', async () => {
      calls += 1;
      if (calls < 3) throw new Error(`bucket not ready (${calls})`);
    });
    await waitFor('the third attach', () => one.ready, 10_000);
    expect(calls).toBe(3);
    expect(logs.records().filter((record) => record.msg === 'prompt registry unavailable: degraded until NATS answers; retrying')).toHaveLength(1);
  });

  it('tells status listeners of a lost and a regained NATS', async () => {
    const store = (await import('node:fs')).mkdtempSync(`${(await import('node:os')).tmpdir()}/elexirion-nats-`);
    let nats = await startNats(undefined, store);
    const { port } = nats; // restarted there below
    const { connection: one } = connection(nats.url);
    const states: string[] = [];
    one.onStatus((state) => states.push(state));
    one.use('test', 'anything', async () => {});
    await waitFor('connected', () => one.connected);
    await nats.stop();
    await waitFor('the disconnect', () => states.includes('disconnected'), 10_000);
    expect(one.readiness().state).toBe('reconnecting');
    nats = await startNats(port, store);
    servers.push(nats);
    await waitFor('the reconnect', () => states.at(-1) === 'connected', 15_000);
    expect(one.readiness().state).toBe('connected');
  });

  it('sends what was published before stop, draining the connection', async () => {
    const nats = await startNats();
    servers.push(nats);
    const listener = await connect({ servers: nats.url });
    try {
      const subscription = listener.subscribe('drain.test', { max: 1 });
      await listener.flush();
      const { connection: one } = connection(nats.url);
      one.use('test', 'publishing', async () => {});
      await waitFor('connected', () => one.ready && one.connected);
      one.connection!.publish('drain.test', 'last words');
      await one.stop();
      for await (const message of subscription) expect(message.string()).toBe('last words');
      expect(one.readiness().state).toBe('closed');
    } finally {
      await listener.close();
    }
  });
});

describe('a host and NATS', () => {
  const needsNats = defineService({
    name: 'executor',
    create: (context) => {
      context.nats.use('checkpoints', async () => {});
      return { implementation: implement<proto.ExecutorServiceImplementation>(proto.ExecutorDefinition, {}) };
    },
  });
  const plain = defineService({
    name: 'provider',
    create: () => ({ implementation: implement<proto.ProviderServiceImplementation>(proto.ProviderDefinition, {}) }),
  });

  it('opens one NATS connection for the whole process: telemetry and every service share it', async () => {
    const nats = await startNats(undefined, undefined, { monitor: true });
    servers.push(nats);
    const host = await startHost([needsNats, plain], { env: await hostEnv({ NATS_URL: nats.url, TELEMETRY_EVENTS: 'true' }) });
    hosts.push(host);
    await waitFor('NATS attached', () => host.nats.ready && host.nats.connected, 10_000);
    const mine = (await natsConnectionNames(nats)).filter((name) => name.endsWith(`-${process.pid}`));
    expect(mine).toEqual([`elexirion-elexirion-${process.pid}`]);
    expect(host.nats.readiness().uses.map((use) => `${use.service}: ${use.purpose}`).sort()).toEqual(['elexirion: telemetry events', 'executor: checkpoints']);
  });

  it('never logs the password of a NATS_URL: not while NATS is away, not when serving, not once connected', async () => {
    const port = await freePort();
    const logs = captureLogs();
    const host = await startHost([needsNats, plain], { env: await hostEnv({ NATS_URL: `nats://elexirion:nats-pass-0042@127.0.0.1:${port}`, LOG_LEVEL: 'info' }), logDestination: logs });
    hosts.push(host);
    await waitFor('the outage logged', () => logs.records().some((record) => record.msg.startsWith('NATS unreachable')));
    servers.push(await startNats(port));
    await waitFor('connected', () => logs.records().some((record) => record.msg === 'connected to NATS'), 10_000);
    const shown = `nats://elexirion:***@127.0.0.1:${port}`;
    expect(logs.records().find((record) => record.msg === 'serving')).toMatchObject({ nats: shown });
    expect(logs.records().find((record) => record.msg.startsWith('NATS unreachable'))).toMatchObject({ nats: shown });
    expect(logs.records().find((record) => record.msg === 'connected to NATS')).toMatchObject({ nats: shown });
    expect(logs.text()).not.toContain('nats-pass-0042');
  });

  it('serves while NATS is down, saying degraded in /readyz, and serving once it attaches', async () => {
    const port = await freePort();
    const host = await startHost([needsNats, plain], { env: await hostEnv({ NATS_URL: `nats://127.0.0.1:${port}` }) });
    hosts.push(host);
    const readyz = async () => {
      const reply = await fetch(`http://127.0.0.1:${host.httpPort}/readyz`);
      return { code: reply.status, body: (await reply.json()) as { status: string; nats: { state: string; uses: { purpose: string; attached: boolean }[] } } };
    };
    const degraded = await readyz();
    expect(degraded.code).toBe(200);
    expect(degraded.body.status).toBe('degraded');
    expect(degraded.body.nats.uses).toMatchObject([{ purpose: 'checkpoints', attached: false }]);

    servers.push(await startNats(port));
    await waitFor('the host to attach', () => host.nats.ready, 10_000);
    const serving = await readyz();
    expect(serving.body.status).toBe('serving');
    expect(serving.body.nats.state).toBe('connected');
  });
});
