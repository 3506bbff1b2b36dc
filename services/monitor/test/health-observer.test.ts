// The health observer against a real grpc.health.v1 server: one check without an answer in time
// does not make a service that answered before UNREACHABLE (a process catching up after a pause
// answers late once); MONITOR_HEALTH_UNREACHABLE_AFTER in a row do; one that never answered is
// UNKNOWN during the start-up grace, UNREACHABLE after it, unless the stored health said otherwise.
import { setTimeout as delay } from 'node:timers/promises';
import { createServer, type Server } from 'nice-grpc';
import { HealthDefinition } from 'nice-grpc-server-health';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '@elexirion/testing';
import { HealthObserver } from '../src/health/health-observer.js';
import type { ServiceCheck } from '../src/health/health-rules.js';
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

function observer(address: string, unreachableAfter: number, startupGraceMs = 0): HealthObserver {
  const context = {
    clients: { isLocal: () => false },
    host: { addresses: { agent: address } },
    draining: new AbortController().signal,
    config: { MONITOR_HEALTH_SERVICES: ['agent'], MONITOR_HEALTH_CHECK_TIMEOUT_MS: 100, MONITOR_HEALTH_UNREACHABLE_AFTER: unreachableAfter, MONITOR_HEALTH_STARTUP_GRACE_MS: startupGraceMs },
  } as unknown as MonitorContext;
  const made = new HealthObserver(context, () => 0);
  observers.push(made);
  return made;
}

const agentCheck = async (health: HealthObserver, stored: Record<string, ServiceCheck> = {}) => (await health.observe({}, [], [], Date.now(), stored)).services.agent;

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

  it('counts a service that never answered UNKNOWN during the start-up grace and UNREACHABLE after it', async () => {
    const starting = observer(`127.0.0.1:${await freePort()}`, 2, 400);
    expect(await agentCheck(starting)).toBe('UNKNOWN');
    expect(await agentCheck(starting, { agent: 'UNKNOWN' })).toBe('UNKNOWN');
    await delay(400);
    expect(await agentCheck(starting)).toBe('UNREACHABLE');
    // With no grace: UNREACHABLE at its first check without an answer.
    expect(await agentCheck(observer(`127.0.0.1:${await freePort()}`, 2))).toBe('UNREACHABLE');
  });

  it('starts from what the stored health said of a service it has not heard from yet (a replica starting late does not flip it)', async () => {
    const silent = observer(`127.0.0.1:${await freePort()}`, 2, 60_000);
    expect(await agentCheck(silent, { agent: 'SERVING' })).toBe('SERVING');
    expect(await agentCheck(silent, { agent: 'SERVING' })).toBe('UNREACHABLE');
    const down = observer(`127.0.0.1:${await freePort()}`, 2);
    expect(await agentCheck(down, { agent: 'UNREACHABLE' })).toBe('UNREACHABLE');
  });
});
