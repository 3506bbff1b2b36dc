// The health observer against a real grpc.health.v1 server: one check without an answer in time
// does not make a service that answered before UNREACHABLE (a process catching up after a pause
// answers late once); MONITOR_HEALTH_UNREACHABLE_AFTER in a row do; one that never answered is
// UNREACHABLE at once.
import { setTimeout as delay } from 'node:timers/promises';
import { createServer, type Server } from 'nice-grpc';
import { HealthDefinition } from 'nice-grpc-server-health';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '@elexirion/testing';
import { HealthObserver } from '../src/health/health-observer.js';
import type { MonitorContext } from '../src/monitor-area.js';

const SERVING = 1;
const servers: Server[] = [];
const observers: HealthObserver[] = [];
afterEach(async () => {
  for (const observer of observers.splice(0)) observer.close();
  for (const server of servers.splice(0)) server.forceShutdown();
});

/** A health server for the agent whose answers wait `slowMs` while `slow` is set. */
async function agentHealth(): Promise<{ address: string; slow: { ms: number } }> {
  const slow = { ms: 0 };
  const server = createServer();
  server.add(HealthDefinition, {
    async check() {
      if (slow.ms > 0) await delay(slow.ms);
      return { status: SERVING };
    },
    async *watch() {},
  });
  const port = await freePort();
  await server.listen(`127.0.0.1:${port}`);
  servers.push(server);
  return { address: `127.0.0.1:${port}`, slow };
}

function observer(address: string, unreachableAfter: number): HealthObserver {
  const context = {
    clients: { isLocal: () => false },
    host: { addresses: { agent: address } },
    draining: new AbortController().signal,
    config: { MONITOR_HEALTH_SERVICES: ['agent'], MONITOR_HEALTH_CHECK_TIMEOUT_MS: 100, MONITOR_HEALTH_UNREACHABLE_AFTER: unreachableAfter },
  } as unknown as MonitorContext;
  const made = new HealthObserver(context, () => 0);
  observers.push(made);
  return made;
}

const agentCheck = async (health: HealthObserver) => (await health.observe({}, [], [], Date.now())).services.agent;

describe('health observer', () => {
  it('keeps a service that answered before as it was through one late answer, and counts it unreachable after the set number in a row', async () => {
    const { address, slow } = await agentHealth();
    const health = observer(address, 2);
    expect(await agentCheck(health)).toBe('SERVING');
    slow.ms = 300;
    expect(await agentCheck(health)).toBe('SERVING');
    expect(await agentCheck(health)).toBe('UNREACHABLE');
    expect(await agentCheck(health)).toBe('UNREACHABLE');
    // An answer in time resets the count.
    slow.ms = 0;
    expect(await agentCheck(health)).toBe('SERVING');
    slow.ms = 300;
    expect(await agentCheck(health)).toBe('SERVING');
  });

  it('counts a service that never answered unreachable at once, and at the first miss with the setting at 1', async () => {
    const silent = observer(`127.0.0.1:${await freePort()}`, 2);
    expect(await agentCheck(silent)).toBe('UNREACHABLE');
    const { address, slow } = await agentHealth();
    const strict = observer(address, 1);
    expect(await agentCheck(strict)).toBe('SERVING');
    slow.ms = 300;
    expect(await agentCheck(strict)).toBe('UNREACHABLE');
  });
});
