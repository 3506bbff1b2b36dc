import { ServerError, Status } from '@elexirion/kit';
import type { GatewayDeps } from './gateway-deps.js';

/**
 * A public stream with its one "request" telemetry event at its end, as `observed` gives a unary
 * call: succeeded after the last message, failed with the stream's error, or CANCELLED when the
 * client went away before the end. `jobIdOf` finds the job id in the messages as they pass.
 */
export async function* observedStream<T>(
  deps: GatewayDeps,
  method: string,
  pipeline: string,
  stream: AsyncIterable<T>,
  jobIdOf: (message: T) => string | undefined,
): AsyncGenerator<T, void, undefined> {
  const call = deps.context.events.begin('request');
  let jobId = '';
  let settled = false;
  try {
    for await (const message of stream) {
      jobId = jobIdOf(message) || jobId;
      yield message;
    }
    settled = true;
    call.succeeded({ gatewayRequest: { method, pipeline, jobId } });
  } catch (error) {
    settled = true;
    call.failed(error, (errorMessage) => ({ gatewayRequest: { method, pipeline, jobId, errorMessage } }));
    throw error;
  } finally {
    if (!settled) {
      call.failed(new ServerError(Status.CANCELLED, `${method}: the client went away before the end`), (errorMessage) => ({ gatewayRequest: { method, pipeline, jobId, errorMessage } }));
    }
  }
}
