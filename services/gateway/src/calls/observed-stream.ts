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

/**
 * An agent stream as the gateway's: progress events pass unchanged (the two messages have the
 * same progress fields), the final `done` becomes the gateway's answer, which adds what the
 * gateway measures (the execution time).
 */
export async function* withFinalAnswer<Out extends { done?: unknown }, In extends { done?: unknown }>(
  events: AsyncIterable<In>,
  answer: (done: NonNullable<In['done']>) => NonNullable<Out['done']>,
): AsyncGenerator<Out> {
  for await (const { done, ...progress } of events) yield (done === undefined ? progress : { done: answer(done as NonNullable<In['done']>) }) as Out;
}
