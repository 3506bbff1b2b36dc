import { PIPELINE_NAME } from '@elexirion/kit';
import { z } from 'zod';

/**
 * The pipeline format. This zod schema is the one definition: the parser validates with it and
 * `npm run generate` writes the JSON Schema editors use (pipelines/schema/pipeline.schema.json).
 */

/** Node timers hold at most 2^31-1 ms (about 24.8 days). */
export const MAX_DURATION_MS = 2_147_483_647;

const duration = z
  .union([
    z.number().int().positive().max(MAX_DURATION_MS, 'expected at most 2147483647 ms (about 24 days)'),
    z.string().regex(/^\d+(ms|s|m|h)$/, 'expected a duration such as 500ms, 30s, 2m or 1h').refine((text) => (durationMs(text) ?? 0) <= MAX_DURATION_MS, 'expected at most about 24 days'),
  ])
  .describe('A duration: milliseconds as a number, or "500ms", "30s", "2m", "1h" (at most about 24 days).');

export const STEP_NAME = /^[A-Za-z_][\w-]*$/;
export { PIPELINE_NAME };

const stepName = z.string().regex(STEP_NAME, 'expected a step name of letters, digits, _ and - (not starting with a digit or -)');

const promptPart = z.union([
  z.strictObject({ static: z.string().describe('Literal text; templates are resolved.') }),
  z.strictObject({ file: z.string().min(1).describe('A file inside the pipelines folder; its text is templated.') }),
  z.strictObject({
    previous_response: stepName.describe('A step that ran before this one.'),
    extract: z.string().optional().describe('A JSON path into that step\'s JSON output, e.g. plan.files[0].'),
  }),
]);
export const prompt = z.union([z.string().min(1, 'expected a non-empty prompt'), z.array(promptPart).min(1)]);
export type Prompt = z.infer<typeof prompt>;

type Condition =
  | { equals: [string, string] }
  | { not_equals: [string, string] }
  | { contains: [string, string] }
  | { greater_than: [string, string] }
  | { less_than: [string, string] }
  | { empty: string }
  | { not_empty: string }
  | { all: (Condition | string)[] }
  | { any: (Condition | string)[] }
  | { not: Condition | string };

const pair = z.tuple([z.string(), z.string()]);
export const condition: z.ZodType<Condition | string> = z.lazy(() =>
  z.union([
    z.string().min(1).describe('A template; true unless it renders to "", "false", "0", "null", "[]" or "{}" (any case).'),
    z.strictObject({ equals: pair }),
    z.strictObject({ not_equals: pair }),
    z.strictObject({ contains: pair }),
    z.strictObject({ greater_than: pair }),
    z.strictObject({ less_than: pair }),
    z.strictObject({ empty: z.string() }),
    z.strictObject({ not_empty: z.string() }),
    z.strictObject({ all: z.array(condition).min(1) }),
    z.strictObject({ any: z.array(condition).min(1) }),
    z.strictObject({ not: condition }),
  ]),
) as z.ZodType<Condition | string>;
export type WhenCondition = Condition | string;

const common = {
  name: stepName,
  description: z.string().optional(),
  when: condition.optional().describe('Run the step only when this holds; otherwise it is skipped.'),
  timeout: duration.optional().describe('Time limit of this step.'),
};

const llmFields = {
  prompt,
  system: z.string().optional(),
  model: z.string().min(1).optional().describe('A provider alias ("claude_smart", "gemini") or "<provider>/<model>".'),
  preset: z.string().min(1).optional().describe('A preset of the alias: analysis, production, development, chat, test.'),
  temperature: z.number().min(0).max(2).optional(),
  max_tokens: z.number().int().positive().optional(),
  stop: z.array(z.string()).optional(),
};

export const transformOperation = z.union([
  z.strictObject({ op: z.enum(['trim', 'lowercase', 'uppercase', 'json_parse', 'json_stringify', 'lines', 'first', 'last', 'count', 'unique', 'sort']) }),
  z.strictObject({ op: z.literal('json_path'), path: z.string().min(1) }),
  z.strictObject({ op: z.literal('split'), separator: z.string() }),
  z.strictObject({ op: z.literal('join'), separator: z.string() }),
  z.strictObject({ op: z.literal('replace'), find: z.string().min(1), with: z.string() }),
  z.strictObject({ op: z.literal('truncate'), max: z.number().int().positive() }),
  z.strictObject({ op: z.literal('prefix'), text: z.string() }),
  z.strictObject({ op: z.literal('suffix'), text: z.string() }),
  z.strictObject({ op: z.literal('default'), value: z.string() }),
]);
export type TransformOperation = z.infer<typeof transformOperation>;

export const LLM_STEP_TYPES = ['claude', 'gemini', 'llm', 'claude_smart', 'claude_robust', 'gemini_structured'] as const;
export const STEP_TYPES = [...LLM_STEP_TYPES, 'parallel', 'for_each', 'set_variable', 'transform', 'pipeline'] as const;
export type StepType = (typeof STEP_TYPES)[number];

export type Step =
  | ({ type: 'claude' | 'gemini' | 'claude_smart' } & LlmFields & Common)
  | ({ type: 'llm' } & LlmFields & Common & { model: string })
  | ({ type: 'claude_robust' } & LlmFields &
      Common & { retry_count: number; backoff: number | string; fallback_action: 'fail' | 'skip' | 'default_output' | 'fallback_model'; default_output?: string; fallback_model?: string })
  | ({ type: 'gemini_structured' } & LlmFields & Common & { format: 'json'; schema: Record<string, unknown>; repair: boolean })
  | ({ type: 'parallel' } & Common & { steps: Step[]; max_parallel?: number })
  | ({ type: 'for_each' } & Common & { items: string | unknown[]; as: string; concurrency: number; steps: Step[] })
  | ({ type: 'set_variable' } & Common & { variable: string; value: unknown })
  | ({ type: 'transform' } & Common & { input: string; operations: TransformOperation[] })
  | ({ type: 'pipeline' } & Common & { pipeline: string; inputs: Record<string, string> });

type Common = { name: string; description?: string; when?: WhenCondition; timeout?: number | string };
type LlmFields = { prompt: Prompt; system?: string; model?: string; preset?: string; temperature?: number; max_tokens?: number; stop?: string[] };

export const step: z.ZodType<Step> = z.lazy(() =>
  z.discriminatedUnion('type', [
    z.strictObject({ ...common, type: z.literal('claude'), ...llmFields }),
    z.strictObject({ ...common, type: z.literal('gemini'), ...llmFields }),
    z.strictObject({ ...common, type: z.literal('claude_smart'), ...llmFields }),
    z.strictObject({ ...common, type: z.literal('llm'), ...llmFields, model: z.string().min(1) }),
    z.strictObject({
      ...common,
      type: z.literal('claude_robust'),
      ...llmFields,
      retry_count: z.number().int().min(0).max(10).default(2),
      backoff: duration.default(1000).describe('The longest wait before the first retry; the ceiling doubles each retry, up to 30 s (or backoff when longer), and each wait is random below it (full jitter).'),
      fallback_action: z.enum(['fail', 'skip', 'default_output', 'fallback_model']).default('fail'),
      default_output: z.string().optional(),
      fallback_model: z.string().min(1).optional(),
    }),
    z.strictObject({
      ...common,
      type: z.literal('gemini_structured'),
      ...llmFields,
      format: z.literal('json'),
      schema: z.record(z.string(), z.unknown()).describe('JSON Schema the output must match.'),
      repair: z.boolean().default(true).describe('Ask once more, with the error, when the output is not valid.'),
    }),
    z.strictObject({ ...common, type: z.literal('parallel'), steps: z.array(step).min(1), max_parallel: z.number().int().positive().optional() }),
    z.strictObject({
      ...common,
      type: z.literal('for_each'),
      items: z.union([z.string().min(1), z.array(z.unknown())]).describe('A template that renders to a JSON array, or a literal list.'),
      as: z.string().regex(/^[A-Za-z_]\w*$/).default('item'),
      concurrency: z.number().int().positive().max(64).default(1),
      steps: z.array(step).min(1),
    }),
    z.strictObject({ ...common, type: z.literal('set_variable'), variable: z.string().regex(/^[A-Za-z_]\w*$/), value: z.unknown() }),
    z.strictObject({ ...common, type: z.literal('transform'), input: z.string(), operations: z.array(transformOperation).min(1) }),
    z.strictObject({ ...common, type: z.literal('pipeline'), pipeline: z.string().regex(PIPELINE_NAME, 'expected a pipeline name'), inputs: z.record(z.string(), z.string()).default({}) }),
  ]),
) as z.ZodType<Step>;

export const inputSpec = z.strictObject({
  type: z.enum(['string', 'number', 'boolean', 'list', 'object']).default('string'),
  required: z.boolean().default(false),
  default: z.unknown().optional(),
  description: z.string().optional(),
});
export type InputSpec = z.infer<typeof inputSpec>;

export const pipelineDocument = z.strictObject({
  workflow: z.strictObject({
    name: z.string().regex(PIPELINE_NAME, 'expected a pipeline name of lowercase letters, digits, _ and -'),
    description: z.string().default(''),
    version: z.union([z.string(), z.number()]).optional(),
    inputs: z.record(z.string().regex(/^[A-Za-z_]\w*$/, 'expected an input name of letters, digits and _'), inputSpec).default({}),
    defaults: z
      .strictObject({
        model: z.string().min(1).optional(),
        preset: z.string().min(1).optional(),
        step_timeout: duration.optional(),
        run_timeout: duration.optional(),
      })
      .default({}),
    steps: z.array(step).min(1, 'expected at least one step'),
    outputs: z.record(z.string().regex(/^[A-Za-z_]\w*$/), z.string()).optional().describe('Named results, as templates.'),
  }),
});
export type PipelineDocument = z.infer<typeof pipelineDocument>;
export type Pipeline = PipelineDocument['workflow'];

export function durationMs(value: number | string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'number') return value;
  const match = /^(\d+)(ms|s|m|h)$/.exec(value);
  if (!match) return undefined;
  const amount = Number(match[1]);
  return amount * { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[match[2] as 'ms' | 's' | 'm' | 'h'];
}
