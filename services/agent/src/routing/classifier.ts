import { callOptions, failureMessage, proto, statusNameOf, type ServiceClient } from '@elexirion/kit';
import type { PipelineShape } from '@elexirion/kit';

/** The classifier's answer: a pipeline among the candidates and how sure it is. */
export type ClassifierVerdict = { pipeline: string; confidence: number } | { failure: string };

export interface ClassifierOptions {
  /** A provider model alias ("claude_fast"). */
  model: string;
  timeoutMs: number;
}

/** Only the start of a long message is sent: enough to tell what is asked, at a bounded cost. */
const MAX_MESSAGE_CHARS = 4_000;

const SYSTEM = [
  'You route a user message to the one pipeline best suited to answer it.',
  'Choose among the pipelines listed, by their descriptions. Answer with JSON only:',
  '{"pipeline": "<name>", "confidence": <a number from 0 to 1: how sure you are that this pipeline fits>}.',
].join('\n');

/**
 * One LLM call through the provider that picks a pipeline by description, with structured output
 * (the provider parses and checks the answer against a JSON Schema of the candidates). It never
 * throws for its own failure: a timeout, an error or an answer out of the schema is a verdict
 * saying so, and the rules decide; only the caller's own cancellation propagates.
 */
export class RouteClassifier {
  private candidates: { names: string[]; listing: string; jsonSchema: string } | undefined;

  constructor(
    private readonly provider: () => ServiceClient<'provider'>,
    private readonly options: ClassifierOptions,
  ) {}

  /** The pipelines it may choose (those the route table routes to), with their descriptions; built once per change. */
  setCandidates(pipelines: readonly PipelineShape[]): void {
    const names = pipelines.map((pipeline) => pipeline.name);
    this.candidates =
      names.length === 0
        ? undefined
        : {
            names,
            listing: pipelines.map((pipeline) => `- ${pipeline.name}: ${pipeline.description || '(no description)'}`).join('\n'),
            jsonSchema: JSON.stringify({
              type: 'object',
              required: ['pipeline', 'confidence'],
              additionalProperties: false,
              properties: { pipeline: { enum: names }, confidence: { type: 'number', minimum: 0, maximum: 1 } },
            }),
          };
  }

  get ready(): boolean {
    return this.candidates !== undefined;
  }

  async classify(message: string, context?: Parameters<typeof callOptions>[0]): Promise<ClassifierVerdict> {
    const candidates = this.candidates;
    if (!candidates) return { failure: 'classifier not ready (the pipelines are not listed yet)' };
    const text = message.length > MAX_MESSAGE_CHARS ? `${message.slice(0, MAX_MESSAGE_CHARS)}\n[...]` : message;
    let answer: proto.CompleteResponse;
    try {
      answer = await this.provider().complete(
        {
          model: this.options.model,
          system: SYSTEM,
          messages: [{ role: proto.Role.ROLE_USER, content: `Pipelines:\n${candidates.listing}\n\nMessage:\n${text}` }],
          temperature: 0,
          maxTokens: 64,
          jsonSchema: candidates.jsonSchema,
        },
        context ? callOptions(context, { timeoutMs: this.options.timeoutMs }) : { deadline: new Date(Date.now() + this.options.timeoutMs) },
      );
    } catch (error) {
      if (context?.signal.aborted) throw error;
      return { failure: `classifier failed (${statusNameOf(error)}: ${failureMessage(error)})` };
    }
    if (!answer.json) return { failure: `classifier answered no valid JSON (${answer.jsonError || 'empty'})` };
    const verdict = JSON.parse(answer.json) as { pipeline: string; confidence: number };
    // The provider checked the answer against the schema; the candidates may have changed since.
    if (!candidates.names.includes(verdict.pipeline)) return { failure: `classifier chose "${verdict.pipeline}", which is not a candidate` };
    return { pipeline: verdict.pipeline, confidence: verdict.confidence };
  }
}
