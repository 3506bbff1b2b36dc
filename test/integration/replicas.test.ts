import { afterAll, describe, expect, it } from 'vitest';
import { connectService } from '@elexirion/kit';
import { eventually, startProvider, stopAll, userMessage, type ProviderUnderTest } from '@elexirion/testing';

// Several replicas of a service as processes on one machine, reached through one gRPC target
// listing them (`<NAME>_ADDRESS=ipv4:127.0.0.1:50054,127.0.0.1:50064`): what restart drills run.

let replicas: ProviderUnderTest[] = [];

afterAll(async () => {
  for (const replica of replicas) await replica.stop();
  replicas = [];
  await stopAll();
});

/** How many Complete calls a replica answered OK, from its /metrics. */
async function answeredBy(replica: ProviderUnderTest): Promise<number> {
  const line = /^grpc_server_handled_total\{[^}]*grpc_method="Complete",grpc_code="OK"\} (\d+)$/m.exec(await replica.metrics());
  return Number(line?.[1] ?? 0);
}

describe('a client whose target lists two replica processes (ipv4:a,b)', () => {
  it('spreads calls over both, and keeps serving when one is killed', async () => {
    replicas = await Promise.all([startProvider({ vendors: false }), startProvider({ vendors: false })]);
    const [first, second] = replicas as [ProviderUnderTest, ProviderUnderTest];
    const { client, close } = connectService('provider', `ipv4:127.0.0.1:${first.grpcPort},127.0.0.1:${second.grpcPort}`, { caller: 'test' });
    const ask = () => client.complete({ model: 'mock', messages: [userMessage('ping')] }, { deadline: new Date(Date.now() + 10_000) });
    try {
      // Round robin: once both connections are up, calls alternate between the replicas.
      const counts = await eventually('both replicas to have answered', async () => {
        await ask();
        const answered = await Promise.all(replicas.map(answeredBy));
        return answered.every((count) => count > 0) ? answered : undefined;
      });
      expect(counts.every((count) => count > 0)).toBe(true);

      first.process.child.kill('SIGKILL');
      await first.process.exited;
      const before = await answeredBy(second);
      for (let call = 0; call < 20; call += 1) expect((await ask()).text).toBe('pong');
      expect((await answeredBy(second)) - before).toBe(20);
    } finally {
      close();
    }
  });
});
