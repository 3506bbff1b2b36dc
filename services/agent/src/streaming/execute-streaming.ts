import { ServerError, Status, type ServiceClient, type proto } from '@elexirion/kit';
import type { CallOptions } from 'nice-grpc-common';

/** A run's progress as the agent's streams send it on (the executor's events but its final one). */
export type RunEvent = Omit<proto.ExecuteStreamResponse, 'runFinished'>;

/**
 * Runs `request` through the executor's ExecuteStream, handing each event to `forward` as it
 * arrives (awaited: the stream's reader paces the run), and answers the run's final result.
 * RunStarted names the agent's job id, which GetJob answers, rather than the executor's run id.
 */
export async function executeStreaming(
  executor: Pick<ServiceClient<'executor'>, 'executeStream'>,
  request: proto.ExecuteRequest,
  options: CallOptions,
  forward: (event: RunEvent) => Promise<void>,
): Promise<proto.ExecuteResponse> {
  let finished: proto.ExecuteResponse | undefined;
  for await (const message of executor.executeStream({ request }, options)) {
    if (message.runFinished) finished = message.runFinished;
    else if (message.runStarted) await forward({ runStarted: { ...message.runStarted, runId: request.jobId } });
    else await forward(message);
  }
  if (!finished) throw new ServerError(Status.UNAVAILABLE, 'the executor\'s stream ended without the run\'s result');
  return finished;
}
