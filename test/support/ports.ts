import { createServer } from 'node:net';

// Ports come from below the kernel's ephemeral range (32768–60999 on Linux), so an outgoing
// connection can never take a port between the moment it is chosen here and the moment a
// spawned process binds it; a port bound with listen(0) could be, and once was.
const FIRST_PORT = 20_000;
const PORT_COUNT = 12_000;
// A random start per process keeps two processes that allocate at once apart; the cursor keeps
// one process from handing out the same port twice.
let cursor = Math.floor(Math.random() * PORT_COUNT);

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** A loopback port nothing listens on right now, outside the ephemeral range. */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < PORT_COUNT; attempt += 1) {
    cursor = (cursor + 1) % PORT_COUNT;
    const port = FIRST_PORT + cursor;
    if (await bindable(port)) return port;
  }
  throw new Error(`no free loopback port in ${FIRST_PORT}-${FIRST_PORT + PORT_COUNT - 1}`);
}

export async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const { connect } = await import('node:net');
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`nothing listened on 127.0.0.1:${port} within ${timeoutMs} ms`);
}
