import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { freePort } from './ports.js';

/** The lowest port the kernel gives outgoing connections. */
function firstEphemeralPort(): number {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
  } catch {
    return 32_768;
  }
}

describe('freePort', () => {
  it('hands out distinct, bindable ports that an outgoing connection can never take', async () => {
    const low = firstEphemeralPort();
    const ports: number[] = [];
    for (let i = 0; i < 50; i++) ports.push(await freePort());
    expect(new Set(ports).size).toBe(ports.length);
    for (const port of ports) expect(port).toBeLessThan(low);
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(ports[0], '127.0.0.1', resolve));
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('skips a port something already listens on', async () => {
    const taken: ReturnType<typeof createServer>[] = [];
    try {
      // Occupy the next few ports it would hand out; it must step past every one of them.
      const probe = await freePort();
      for (let port = probe + 1; port < probe + 4; port++) {
        const server = createServer();
        const bound = await new Promise<boolean>((resolve) => {
          server.once('error', () => resolve(false));
          server.listen(port, '127.0.0.1', () => resolve(true));
        });
        if (bound) taken.push(server);
      }
      const next = await freePort();
      const occupied = taken.map((server) => (server.address() as { port: number }).port);
      expect(occupied).not.toContain(next);
    } finally {
      await Promise.all(taken.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
    }
  });
});
