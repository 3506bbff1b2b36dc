// `npm start` (scripts/start.sh) runs the monitor too, in both of its shapes: one process per
// service (the monitor its own process, on MONITOR_GRPC_PORT) and --all-in-one (the monitor in the
// one process, `serve --services all`). Either way the gateway reaches it: GET /v1/health is
// answered by the monitor, not with the gateway's 503 "the monitor cannot be reached". The script
// runs against a test NATS (NATS_URL), on free ports, and is stopped as Ctrl-C would.
import { createConnection } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, freePort, spawnProcess, startNats, stopAll, waitServing, type NatsServer, type Spawned } from '@elexirion/testing';

let nats: NatsServer;

beforeAll(async () => {
  nats = await startNats();
});

afterAll(async () => {
  await stopAll();
  await nats?.stop();
});

/** Every port start.sh uses, free, by variable. */
async function startEnv(): Promise<Record<string, string>> {
  const env: Record<string, string> = { NATS_URL: nats.url, LOG_LEVEL: 'warn' };
  for (const name of ['GATEWAY', 'AGENT', 'EXECUTOR', 'PROVIDER', 'MONITOR']) {
    env[`${name}_GRPC_PORT`] = String(await freePort());
    env[`${name}_HTTP_PORT`] = String(await freePort());
  }
  return env;
}

function listening(port: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port: Number(port) });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

describe.each([
  ['one process per service', [] as string[]],
  ['all in one', ['--all-in-one']],
])('npm start (%s) runs the monitor', (_shape, args) => {
  let started: Spawned;
  let env: Record<string, string>;

  beforeAll(async () => {
    env = await startEnv();
    started = spawnProcess('start.sh', 'bash', ['scripts/start.sh', ...args], env);
    await eventually('start.sh says ready', async () => {
      if (started.child.exitCode !== null) throw new Error(`start.sh exited ${started.child.exitCode}:\n${started.output()}`);
      return started.output().includes('[elexirion] ready (') ? true : undefined;
    }, 120_000);
  }, 130_000);

  afterAll(async () => {
    await started?.stop(30_000);
  }, 40_000);

  it('serves the monitor and the gateway forwards to it', async () => {
    if (args.length === 0) {
      // Its own process on its own port.
      await waitServing(Number(env.MONITOR_GRPC_PORT), 'elexirion.v1.Monitor');
    } else {
      // Hosted by the one process, on the gateway's port; no port of its own.
      await waitServing(Number(env.GATEWAY_GRPC_PORT), 'elexirion.v1.Monitor');
      expect(await listening(env.MONITOR_GRPC_PORT!)).toBe(false);
    }
    const reply = await fetch(`http://127.0.0.1:${env.GATEWAY_HTTP_PORT}/v1/health`);
    const body = (await reply.json()) as { error?: { code: string; message: string } };
    // An answer of the monitor's (the health area may still be UNIMPLEMENTED), never a 503.
    expect([200, 501], JSON.stringify(body)).toContain(reply.status);
    if (reply.status === 501) expect(body.error?.message).toContain('Monitor.GetSystemHealth');
  });

  it('prints the address of the web pages, and serves them there with their assets', async () => {
    const address = `http://127.0.0.1:${env.GATEWAY_HTTP_PORT}/`;
    expect(started.output()).toContain(`Open   ${address}`);
    const page = await fetch(address);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const html = await page.text();
    const assets = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((match) => match[1]!);
    expect(assets.length).toBe(2);
    for (const asset of assets) expect((await fetch(new URL(asset, address))).status, asset).toBe(200);
  });

  it('stops the monitor with everything else', async () => {
    expect(await started.stop(30_000)).toBe(130);
    expect(started.output()).toContain('[elexirion] stopped');
    for (const port of [env.GATEWAY_GRPC_PORT!, ...(args.length === 0 ? [env.MONITOR_GRPC_PORT!, env.MONITOR_HTTP_PORT!] : [])]) {
      expect(await listening(port), `port ${port} closed`).toBe(false);
    }
  }, 40_000);
});
