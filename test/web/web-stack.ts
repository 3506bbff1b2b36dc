// What every web page test starts: a nats-server, the platform as `npm start --all-in-one` runs
// it (the mock provider, offline), and a real Chromium pointed at the gateway's HTTP port.
import { startNats, startStack, type NatsServer, type Stack } from '@elexirion/testing';
import { startBrowser, type TestBrowser } from '@elexirion/testing/browser';

export interface WebStack {
  nats: NatsServer;
  stack: Stack;
  /** The gateway's HTTP address, where the pages are. */
  baseUrl: string;
  browser: TestBrowser;
  stop(): Promise<void>;
}

/**
 * Starts it all. `env` reaches the services (e.g. PROVIDER_MOCK_STREAM_CHUNK_DELAY_MS to watch an
 * answer stream in, GATEWAY_AUTH=on with GATEWAY_ADMIN_KEY for keys).
 */
export async function startWebStack(options: { env?: NodeJS.ProcessEnv; shape?: 'all-in-one' | 'one-process-per-service' } = {}): Promise<WebStack> {
  const nats = await startNats();
  let stack: Stack | undefined;
  try {
    stack = await startStack(options.shape ?? 'all-in-one', nats.url, options.env ?? {});
    const browser = await startBrowser();
    const started = stack;
    return {
      nats,
      stack: started,
      baseUrl: `http://127.0.0.1:${started.ports.gatewayHttp}`,
      browser,
      async stop() {
        await browser.close().catch(() => {});
        await started.stop();
        await nats.stop();
      },
    };
  } catch (error) {
    await stack?.stop();
    await nats.stop();
    throw error;
  }
}
