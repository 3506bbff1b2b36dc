// The prompt calls when the executor is down, with a process per service (so the executor can be
// stopped alone): each call is a clear UNAVAILABLE (503 over REST) naming the executor, not the
// channel's text; and a version promoted before serves runs again once an executor is back.
import { ClientError, Status } from 'nice-grpc-common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { proto } from '@elexirion/kit';
import { eventually, startExecutor, startNats, startStack, stopAll, waitForState, type ExecutorUnderTest, type NatsServer, type Stack } from '@elexirion/testing';

let nats: NatsServer;
let stack: Stack;
let restarted: ExecutorUnderTest | undefined;

beforeAll(async () => {
  nats = await startNats();
  stack = await startStack('one-process-per-service', nats.url, {}, undefined, { monitor: false });
  await eventually('the prompt registry attached', () => stack.gateway.listPromptVersions({ pipeline: '', step: '' }).then(() => true, () => undefined));
}, 120_000);

afterAll(async () => {
  await restarted?.stop();
  await stack?.stop();
  await nats?.stop();
  await stopAll();
});

describe('the prompt calls while the executor is down', () => {
  it('answers UNAVAILABLE naming the executor, over gRPC and REST', async () => {
    const published = await stack.gateway.publishPromptVersion(
      proto.PublishPromptVersionRequest.fromPartial({ pipeline: 'general', step: 'answer', versionId: 'kept', template: { prompt: 'Kept: {{inputs.message}}' }, rolloutWeight: 0 }),
    );
    expect(published.version!.id).toBe('kept');
    await stack.gateway.promotePromptVersion({ pipeline: 'general', step: 'answer', versionId: 'kept', reason: '', expectedRevision: 0 });
    await stack.processes.executor!.stop();

    const calls: [string, () => Promise<unknown>][] = [
      ['ListPromptVersions', () => stack.gateway.listPromptVersions({ pipeline: 'general', step: '' })],
      ['PublishPromptVersion', () => stack.gateway.publishPromptVersion(proto.PublishPromptVersionRequest.fromPartial({ pipeline: 'general', step: 'answer', template: { prompt: 'x' } }))],
      ['GetPromptHistory', () => stack.gateway.getPromptHistory({ pipeline: 'general', step: '', pageSize: 0, pageToken: '' })],
      ['GetPipeline', () => stack.gateway.getPipeline({ pipeline: 'general', inlineYaml: '' })],
    ];
    for (const [method, call] of calls) {
      const error = await call().then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(error, method).toBeInstanceOf(ClientError);
      expect((error as ClientError).code, method).toBe(Status.UNAVAILABLE);
      expect((error as ClientError).details).toBe(`${method}: the executor cannot be reached (pipelines and prompt versions are unavailable until it is back)`);
    }
    const overRest = await fetch(`http://127.0.0.1:${stack.ports.gatewayHttp}/v1/prompts/general/history`);
    expect(overRest.status).toBe(503);

    // A new executor on the same address loads the registry from NATS: runs use the promoted version.
    // The stack's settings but its own HTTP port, where waitForState reads /readyz.
    const { EXECUTOR_HTTP_PORT: _stackHttpPort, ...env } = stack.env;
    restarted = await startExecutor({ providerPort: stack.ports.provider, natsUrl: nats.url, grpcPort: stack.ports.executor, env });
    // Ready once its NATS state (the registry among it) is attached.
    await waitForState(restarted);
    const run = await eventually('a run through the new executor', () =>
      stack.gateway.executePipeline(proto.ExecutePipelineRequest.fromPartial({ pipeline: 'general', inputs: { message: 'after the restart' } })).catch(() => undefined),
      30_000,
    );
    expect(run.steps[0]!.promptVersion).toBe('kept');
    expect(run.result).toContain('Kept: after the restart');
  });
});
