import { ServerError, Status } from '@elexirion/kit';
import { requestFields, type GatewayDeps, type RequestFacts } from './gateway-deps.js';

/**
 * A public stream with its one "request" telemetry event at its end, as `observed` gives a unary
 * call: succeeded after the last message, failed with the stream's error, or CANCELLED when the
 * client went away before the end. `factsOf` finds the job, run and route in the messages as they
 * pass (a failed stream's event keeps what was seen before it failed).
 */
export async function* observedStream<T>(
  deps: GatewayDeps,
  method: string,
  pipeline: string,
  stream: AsyncIterable<T>,
  factsOf: (message: T) => RequestFacts,
): AsyncGenerator<T, void, undefined> {
  const call = deps.context.events.begin('request');
  const seen: RequestFacts = {};
  let settled = false;
  try {
    for await (const message of stream) {
      const facts = factsOf(message);
      seen.jobId = facts.jobId || seen.jobId;
      seen.runId = facts.runId || seen.runId;
      seen.route = facts.route || seen.route;
      yield message;
    }
    settled = true;
    call.succeeded({ gatewayRequest: { method, pipeline, ...requestFields(seen) } });
  } catch (error) {
    settled = true;
    call.failed(error, (errorMessage) => ({ gatewayRequest: { method, pipeline, ...requestFields(seen), errorMessage } }));
    throw error;
  } finally {
    if (!settled) {
      call.failed(new ServerError(Status.CANCELLED, `${method}: the client went away before the end`), (errorMessage) => ({ gatewayRequest: { method, pipeline, ...requestFields(seen), errorMessage } }));
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
