// The gateway's HTTP settings are checked at start: a bad one stops it with a message naming the
// variable, before it serves anything.
import { describe, expect, it } from 'vitest';
import { ConfigError, startHost } from '@elexirion/kit';
import { gatewayService } from '@elexirion/gateway';
import { hostEnv } from '@elexirion/testing';

async function startFailure(extra: NodeJS.ProcessEnv): Promise<ConfigError> {
  const error = await startHost([gatewayService], { env: await hostEnv(extra) }).then(
    async (host) => {
      await host.stop();
      return undefined;
    },
    (failure: unknown) => failure,
  );
  expect(error).toBeInstanceOf(ConfigError);
  return error as ConfigError;
}

describe('the gateway\'s HTTP settings', () => {
  it('refuses CORS origins that are not origins', async () => {
    const error = await startFailure({ GATEWAY_CORS_ORIGINS: 'https://ok.example.com, console.example.com/app' });
    expect(error.issues.join('\n')).toMatch(/GATEWAY_CORS_ORIGINS.*"console\.example\.com\/app" is not an origin/);
  });

  it('refuses an access-log level it does not know, and size limits that are not byte counts', async () => {
    expect((await startFailure({ GATEWAY_ACCESS_LOG_LEVEL: 'loud' })).issues.join('\n')).toContain('GATEWAY_ACCESS_LOG_LEVEL');
    expect((await startFailure({ GATEWAY_MAX_CHAT_REQUEST_BYTES: 'lots' })).issues.join('\n')).toContain('GATEWAY_MAX_CHAT_REQUEST_BYTES');
  });
});
