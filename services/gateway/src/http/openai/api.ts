import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { ClientError, ElexirionError, failureMessage, httpRoutes, proto, ServerError, Status, statusOf, type HttpRoutes, type Logger, type ServiceClient } from '@elexirion/kit';
import { httpCallOptions } from '../../caller.js';
import { sendEventStream, type ServerSentEvent } from '../sse.js';
import { PipelineCatalog } from './pipeline-catalog.js';
import {
  badRequest,
  chatCompletion,
  chatCompletionBody,
  ChunkWriter,
  completeRequest,
  completionId,
  lastUserText,
  modelList,
  OpenAiError,
  openAiErrorOf,
  PIPELINE_MODEL_PREFIX,
  pipelineUnsupported,
  unsupportedParameter,
  type ChatCompletionBody,
} from './wire.js';

type CallOptions = ReturnType<typeof httpCallOptions>;
type Gateway = ServiceClient<'gateway'>;

/** The input a pipeline run as a model gets the user's message in. */
const MESSAGE_INPUT = 'message';

/** The OpenAI-shaped error for anything a route throws. */
function openAiErrorFor(error: unknown, request: FastifyRequest, logger: Logger): OpenAiError {
  if (error instanceof OpenAiError) return error;
  if (error instanceof ClientError || error instanceof ServerError || error instanceof ElexirionError) return openAiErrorOf(statusOf(error), failureMessage(error));
  const fastifyError = error as Partial<FastifyError>;
  if (fastifyError.validation?.length) {
    // The body's schema: name the field as OpenAI does ("messages[0].role").
    const issue = fastifyError.validation[0]!;
    const param = issue.instancePath.slice(1).replace(/\/(\d+)(?=\/|$)/g, '[$1]').replaceAll('/', '.');
    return badRequest(param || null, `${param || 'body'}: ${issue.message ?? 'invalid'}`);
  }
  // Fastify's own refusals: malformed JSON, a body over the limit, an unsupported content type.
  if (fastifyError.statusCode !== undefined && fastifyError.statusCode >= 400 && fastifyError.statusCode < 500) {
    return new OpenAiError(fastifyError.statusCode, `body: ${fastifyError.message}`, 'invalid_request_error', null, 'INVALID_ARGUMENT');
  }
  logger.error({ err: error, method: request.method, url: request.url }, 'unexpected error in the OpenAI-compatible API');
  return new OpenAiError(500, 'internal error', 'server_error', null, 'INTERNAL');
}

/** A stream's failure after its first chunk, as OpenAI sends it: a data event holding the error (OpenAI clients raise it). */
function streamError(error: unknown): ServerSentEvent {
  const failure = error instanceof OpenAiError ? error : openAiErrorOf(statusOf(error), failureMessage(error));
  return { data: failure.body() };
}

const DONE: ServerSentEvent = { text: '[DONE]' };

/**
 * OpenAI's Chat Completions API (`POST /v1/chat/completions`, streaming or not, and
 * `GET /v1/models`), so OpenAI clients use the platform as their gateway. Every call goes into the
 * gateway's own gRPC implementation in-process with the request's key: keys, scopes, limits,
 * budgets and telemetry apply as on every other path. Errors answer in OpenAI's shape.
 */
export function openAiApi(gateway: () => Gateway, executor: () => ServiceClient<'executor'>, logger: Logger): HttpRoutes {
  // GET /v1/models' `created`: the models are as old as this process's configuration.
  const created = Math.floor(Date.now() / 1000);
  const pipelines = new PipelineCatalog(executor);

  return httpRoutes('/v1', async (app) => {
    app.setErrorHandler((error, request, reply) => {
      const failure = openAiErrorFor(error, request, logger);
      void reply.code(failure.status).send(failure.body());
    });

    app.post(
      '/chat/completions',
      {
        schema: {
          summary: 'OpenAI-compatible chat completion',
          description:
            'OpenAI\'s Chat Completions API. `model` is a model alias, "<provider>/<model>", or "pipeline/<name>" (the last user message is the pipeline\'s `message` input, or its only one; temperature and max_tokens do not apply to pipelines). Streams as OpenAI does (`data: {chunk}` ... `data: [DONE]`; a failure after the first chunk is a `data: {"error": ...}` event and no `[DONE]`). Tools, n>1, log probabilities, audio and sampling settings other than temperature are refused with 400.',
          body: chatCompletionBody,
        },
      },
      async (request, reply) => {
        const body = request.body;
        const refused = unsupportedParameter(body);
        if (refused) throw refused;
        const options = httpCallOptions(request, reply);
        if (body.model.startsWith(PIPELINE_MODEL_PREFIX)) return pipelineCompletion(gateway(), pipelines, body, options, reply);
        const complete = completeRequest(body);
        // Structured output is not streamed by the provider: a streaming client gets the whole
        // answer as one chunk.
        if (!body.stream || complete.jsonSchema !== '') {
          const answer = await gateway().complete(complete, options);
          // With a schema the validated JSON (canonical text), else what the model wrote.
          const content = answer.json || answer.text;
          if (!body.stream) return chatCompletion(completionId(), body.model, content, answer.finishReason, answer.usage);
          return sendEventStream(reply, () => oneChunkStream(body, content, answer.finishReason, answer.usage));
        }
        return sendEventStream(reply, () => modelStream(gateway(), body, complete, options));
      },
    );

    app.get('/models', { schema: { summary: 'OpenAI-compatible model list', description: 'The model aliases, and the valid pipelines as "pipeline/<name>" when the key may run pipelines.' } }, async (request, reply) => {
      const options = httpCallOptions(request, reply);
      const [models, pipelines] = await Promise.all([gateway().listModels({}, options), runnablePipelines(gateway(), options)]);
      return modelList(
        models.aliases.map((alias) => alias.name),
        pipelines.map((each) => each.name),
        created,
      );
    });
  });
}

/** The valid pipelines, or none when the key may not run pipelines (a list of models it can use). */
async function runnablePipelines(gateway: Gateway, options: CallOptions): Promise<proto.PipelineSummary[]> {
  try {
    return (await gateway.listPipelines({}, options)).pipelines.filter((each) => each.valid);
  } catch (error) {
    if (error instanceof ClientError && error.code === Status.PERMISSION_DENIED) return [];
    throw error;
  }
}

async function* modelStream(gateway: Gateway, body: ChatCompletionBody, request: proto.CompleteRequest, options: CallOptions): AsyncIterable<ServerSentEvent> {
  const chunks = new ChunkWriter(body.model, body.stream_options?.include_usage === true);
  let started = false;
  let done: proto.CompleteResponse | undefined;
  try {
    for await (const message of gateway.completeStream(request, options)) {
      // The role chunk waits for the first message: a refusal before it (no key, over a limit, an
      // unknown model) is an ordinary HTTP error, not a 200 stream.
      if (!started) {
        started = true;
        yield { data: chunks.role() };
      }
      if (message.delta) yield { data: chunks.delta(message.delta) };
      else if (message.done) done = message.done;
    }
    // After the stream's own end, not at its last message: a stream left early counts as
    // cancelled all the way down (its request event, the provider's call).
    if (!done) throw new ServerError(Status.INTERNAL, 'the completion stream ended without its final message');
    yield* ending(chunks, body, done.finishReason, done.usage);
  } catch (error) {
    if (!started) throw error;
    yield streamError(error);
  }
}

function* ending(chunks: ChunkWriter, body: ChatCompletionBody, reason: string, usage: proto.Usage | undefined): Iterable<ServerSentEvent> {
  yield { data: chunks.finish(reason) };
  if (body.stream_options?.include_usage) yield { data: chunks.usage(usage) };
  yield DONE;
}

async function* oneChunkStream(body: ChatCompletionBody, content: string, reason: string, usage: proto.Usage | undefined): AsyncIterable<ServerSentEvent> {
  const chunks = new ChunkWriter(body.model, body.stream_options?.include_usage === true);
  yield { data: chunks.role() };
  if (content) yield { data: chunks.delta(content) };
  yield* ending(chunks, body, reason, usage);
}

// ---------------------------------------------------------------- pipelines as models

/**
 * The input a pipeline run as a model gets the user's message in: its `message` input, else its
 * only input, else its only required one; otherwise `message`, and the run names what it lacks.
 */
function messageInput(summary: proto.PipelineSummary | undefined): string {
  if (!summary) return MESSAGE_INPUT;
  const { inputs } = summary;
  const required = inputs.filter((each) => each.required);
  const chosen = inputs.find((each) => each.name === MESSAGE_INPUT) ?? (inputs.length === 1 ? inputs[0] : required.length === 1 ? required[0] : undefined);
  return chosen?.name ?? MESSAGE_INPUT;
}

async function pipelineCompletion(gateway: Gateway, pipelines: PipelineCatalog, body: ChatCompletionBody, options: CallOptions, reply: FastifyReply) {
  const refused = pipelineUnsupported(body);
  if (refused) throw refused;
  const text = lastUserText(body);
  const name = body.model.slice(PIPELINE_MODEL_PREFIX.length);
  const summary = await pipelines.find(name);
  const request: proto.ExecutePipelineRequest = { pipeline: name, inputs: { [messageInput(summary)]: text }, promptOverrides: {}, promptCandidates: {}, inlineYaml: '', sessionId: body.user ?? '' };
  if (!body.stream) {
    const answer = await gateway.executePipeline(request, options);
    return chatCompletion(completionId(), body.model, answer.result, 'stop', answer.usage);
  }
  return sendEventStream(reply, () => pipelineStream(gateway, body, request, summary?.stepCount === 1, options));
}

/**
 * A pipeline run as chunks. The answer is the last step's output, so only a one-step pipeline's
 * text deltas are the answer as it is written; a longer pipeline's answer comes whole at the end
 * (its earlier steps' text is not the answer).
 */
async function* pipelineStream(gateway: Gateway, body: ChatCompletionBody, request: proto.ExecutePipelineRequest, live: boolean, options: CallOptions): AsyncIterable<ServerSentEvent> {
  const chunks = new ChunkWriter(body.model, body.stream_options?.include_usage === true);
  let started = false;
  let streamed = '';
  let done: proto.ExecutePipelineResponse | undefined;
  try {
    for await (const event of gateway.executePipelineStream(request, options)) {
      if (!started) {
        started = true;
        yield { data: chunks.role() };
      }
      if (event.textDelta && live && event.textDelta.text) {
        streamed += event.textDelta.text;
        yield { data: chunks.delta(event.textDelta.text) };
      } else if (event.done) done = event.done;
    }
    // After the stream's own end, as modelStream does.
    if (!done) throw new ServerError(Status.INTERNAL, 'the pipeline stream ended without its final message');
    // What was streamed is the start of the result (all of it, for a one-step pipeline).
    if (!done.result.startsWith(streamed)) throw new ServerError(Status.INTERNAL, `pipeline "${request.pipeline}": its output differs from the text streamed (a step was retried after writing)`);
    if (done.result.length > streamed.length) yield { data: chunks.delta(done.result.slice(streamed.length)) };
    yield* ending(chunks, body, 'stop', done.usage);
  } catch (error) {
    if (!started) throw error;
    yield streamError(error);
  }
}
