// The `elexirion` binary end to end: `elexirion serve --services all` hosts the real services
// (NATS, the mock provider) with API keys on, and the client commands, run as child processes,
// talk to its gateway with a key the CLI itself created. The command-by-command behaviour is
// cli.test.ts (a scripted Gateway).

import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, freePort, onFreshPorts, spawnNode, startNats, stopAll, waitServing, type NatsServer, type Spawned } from '@elexirion/testing';
import { cli } from './cli-harness.js';

let nats: NatsServer;
let served: Spawned;
let env: NodeJS.ProcessEnv;
let folder: string;
/** The bootstrap admin secret the gateway is started with. */
const ADMIN_KEY = randomBytes(24).toString('hex');
let admin: NodeJS.ProcessEnv;

/** `elexirion serve --services all` on free ports (the subcommand form; the old form is what startStack uses). */
async function serve(): Promise<{ spawned: Spawned; grpcPort: number }> {
  return onFreshPorts(async () => {
    const grpcPort = await freePort();
    const spawned = spawnNode('elexirion serve', 'server/dist/main.js', {
      BIND_HOST: '127.0.0.1',
      LOG_LEVEL: 'info',
      NATS_URL: nats.url,
      GATEWAY_GRPC_PORT: String(grpcPort),
      GATEWAY_HTTP_PORT: String(await freePort()),
      GATEWAY_AUTH: 'on',
      GATEWAY_ADMIN_KEY: ADMIN_KEY,
    }, ['serve', '--services', 'all']);
    try {
      await waitServing(grpcPort, 'elexirion.v1.Gateway', spawned);
    } catch (error) {
      await spawned.stop();
      throw error;
    }
    return { spawned, grpcPort };
  });
}

beforeAll(async () => {
  nats = await startNats();
  const started = await serve();
  served = started.spawned;
  admin = { ELEXIRION_ADDRESS: `127.0.0.1:${started.grpcPort}`, ELEXIRION_API_KEY: ADMIN_KEY };
  // The commands below run with a key the CLI made, holding the scopes they need.
  // The gateway serves before its key store has attached to NATS: until then key calls are UNAVAILABLE (exit 5).
  const created = await eventually('the first key', async () => {
    const attempt = await cli(['keys', 'create', 'cli-stack', '--scope', 'chat,jobs,pipelines'], admin);
    return attempt.code === 5 ? undefined : attempt;
  });
  expect(created.code, created.stderr).toBe(0);
  env = { ELEXIRION_ADDRESS: admin.ELEXIRION_ADDRESS, ELEXIRION_API_KEY: created.stdout.trim() };
  folder = mkdtempSync(join(tmpdir(), 'elexirion-cli-stack-'));
});

afterAll(async () => {
  await served?.stop();
  await nats?.stop();
  await stopAll();
  if (folder) rmSync(folder, { recursive: true, force: true });
});

describe('elexirion against the real services', () => {
  it('chat --no-stream answers through the gateway, the agent, the executor and the provider', async () => {
    const { code, stdout, stderr } = await cli(['chat', '--no-stream', '--pipeline', 'general', 'Say hello.'], env);
    expect(code, stderr).toBe(0);
    expect(stdout.trim()).not.toBe('');
    expect(stderr).toMatch(/^pipeline: general · job \S+ · /m);
    expect(stderr).toMatch(/^usage: \d+ in \/ \d+ out tokens · \$/m);
  });

  it('chat --no-stream --json prints the ChatResponse', async () => {
    const { code, stdout } = await cli(['chat', '--no-stream', '--json', '--pipeline', 'general', 'Say hello.'], env);
    expect(code).toBe(0);
    const answer = JSON.parse(stdout);
    expect(answer).toMatchObject({ pipelineUsed: 'general', response: expect.any(String), jobId: expect.any(String) });
  });

  it('answers a pipeline that does not exist with NOT_FOUND and exit code 4, naming it', async () => {
    const { code, stderr } = await cli(['chat', '--no-stream', '--pipeline', 'no-such-pipeline', 'hi'], env);
    expect(code).toBe(4);
    expect(stderr).toBe('elexirion: NOT_FOUND: pipeline "no-such-pipeline" does not exist\n');
  });

  it('chat streams the answer and ends with its usage', async () => {
    const { code, stdout, stderr } = await cli(['chat', '--pipeline', 'general', 'Say hello.'], env);
    expect(code, stderr).toBe(0);
    expect(stdout.trim()).not.toBe('');
    expect(stderr).toMatch(/^usage: \d+ in \/ \d+ out tokens/m);
    const json = await cli(['chat', '--json', '--pipeline', 'general', 'Say hello.'], env);
    const events = json.stdout.trimEnd().split('\n').map((line) => JSON.parse(line));
    expect(events.at(-1).done.pipelineUsed).toBe('general');
  });

  it('pipelines list shows the repository\'s pipelines; validate passes them and positions a problem', async () => {
    const list = await cli(['pipelines', 'list'], env);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/^general +\d+ /m);
    const valid = await cli(['pipelines', 'validate', 'pipelines/general.yaml'], env);
    expect(valid.code, valid.stdout + valid.stderr).toBe(0);
    const broken = join(folder, 'broken.yaml');
    writeFileSync(broken, 'workflow:\n  name: broken\n  steps:\n    - name: a\n      type: claude_fats\n      prompt: hi\n');
    const invalid = await cli(['pipelines', 'validate', broken], env);
    expect(invalid.code).toBe(1);
    expect(invalid.stdout).toMatch(new RegExp(`^${broken.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:5:\\d+: .*claude_fats`, 'm'));
  });

  it('jobs submit --watch follows the job to its end; get and list find it', async () => {
    const submitted = await cli(['jobs', 'submit', '--pipeline', 'general', '--watch', 'Say hello.'], env);
    expect(submitted.code, submitted.stderr).toBe(0);
    const jobId = submitted.stdout.split('\n')[0]!;
    expect(submitted.stderr).toContain(`job ${jobId} succeeded`);
    const got = await cli(['jobs', 'get', jobId, '--json'], env);
    expect(JSON.parse(got.stdout).job.status).toBe('JOB_STATUS_SUCCEEDED');
    const listed = await cli(['jobs', 'list', '--pipeline', 'general'], env);
    expect(listed.stdout).toContain(jobId);
    const missing = await cli(['jobs', 'get', '00000000-0000-4000-8000-000000000000'], env);
    expect(missing.code).toBe(4);
  });

  it('models lists the aliases the provider serves', async () => {
    const { code, stdout } = await cli(['models'], env);
    expect(code).toBe(0);
    expect(stdout).toMatch(/^ALIAS +TARGETS +PRESETS$/m);
  });

  it('keys create, list and revoke manage keys; a missing, revoked or unscoped key exits 3 and is never printed', async () => {
    const noKey = await cli(['pipelines', 'list'], { ELEXIRION_ADDRESS: env.ELEXIRION_ADDRESS });
    expect(noKey.code).toBe(3);
    expect(noKey.stderr).toMatch(/UNAUTHENTICATED/);
    // A chat-only key may chat but not list jobs.
    const created = await cli(['keys', 'create', 'chat-only', '--scope', 'chat', '--json'], admin);
    expect(created.code, created.stderr).toBe(0);
    const { key, secret } = JSON.parse(created.stdout) as { key: { keyId: string; scopes: string[] }; secret: string };
    expect(key.scopes).toEqual(['chat']);
    const chatOnly = { ELEXIRION_ADDRESS: env.ELEXIRION_ADDRESS, ELEXIRION_API_KEY: secret };
    const denied = await cli(['jobs', 'list'], chatOnly);
    expect(denied.code).toBe(3);
    expect(denied.stderr).toMatch(/PERMISSION_DENIED/);
    expect(denied.stdout + denied.stderr).not.toContain(secret);
    expect((await cli(['chat', '--no-stream', '--pipeline', 'general', 'hi'], chatOnly)).code).toBe(0);
    // Only an admin key manages keys.
    expect((await cli(['keys', 'list'], chatOnly)).code).toBe(3);
    const listed = await cli(['keys', 'list', '--json'], admin);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toContain(key.keyId);
    expect(listed.stdout).not.toContain(secret);
    const revoked = await cli(['keys', 'revoke', key.keyId], admin);
    expect(revoked.code, revoked.stderr).toBe(0);
    const refused = await cli(['chat', '--no-stream', '--pipeline', 'general', 'hi'], chatOnly);
    expect(refused.code).toBe(3);
    expect(refused.stderr).toMatch(/UNAUTHENTICATED/);
  });
});
