import { LineCounter, parseDocument, isMap, type Document } from 'yaml';
import { z } from 'zod';

/** A pipeline that cannot be used, with where and what: "general.yaml:4:7: steps[0].type: …". */
export class PipelineError extends Error {
  override readonly name = 'PipelineError';
  constructor(
    readonly pipeline: string,
    readonly where: { line: number; col: number } | undefined,
    readonly problem: string,
  ) {
    super(`${pipeline}${where ? `:${where.line}:${where.col}` : ''}: ${problem}`);
  }
}

/** Step types this executor runs; each calls the provider with a model alias or preset. */
export const LLM_STEP_TYPES = ['llm', 'claude', 'gemini', 'claude_smart'] as const;

const inputSchema = z.object({
  type: z.enum(['string', 'number', 'boolean', 'list', 'object']).default('string'),
  required: z.boolean().default(false),
  default: z.unknown().optional(),
  description: z.string().optional(),
});

const stepSchema = z.object({
  name: z.string().regex(/^[A-Za-z_][\w-]*$/, 'expected a step name of letters, digits, _ and -'),
  type: z.string(),
  prompt: z.string().min(1, 'expected a non-empty prompt'),
  system: z.string().optional(),
  model: z.string().optional(),
  preset: z.string().optional(),
  temperature: z.number().min(0).max(2).optional(),
  max_tokens: z.number().int().positive().optional(),
});

const pipelineSchema = z.object({
  workflow: z.object({
    name: z.string().min(1),
    description: z.string().default(''),
    inputs: z.record(z.string(), inputSchema).default({}),
    defaults: z.object({ model: z.string().optional(), preset: z.string().optional() }).default({}),
    steps: z.array(stepSchema).min(1, 'expected at least one step'),
  }),
});

export type Pipeline = z.infer<typeof pipelineSchema>['workflow'];
export type PipelineStep = Pipeline['steps'][number];

function positionOf(doc: Document, lines: LineCounter, path: (string | number)[]): { line: number; col: number } | undefined {
  for (let depth = path.length; depth >= 0; depth -= 1) {
    const node = doc.getIn(path.slice(0, depth), true) as { range?: [number, number, number] } | undefined;
    if (node && typeof node === 'object' && node.range) return lines.linePos(node.range[0]);
  }
  return undefined;
}

/** Parses and checks a pipeline; every problem is a PipelineError with line and column. */
export function parsePipeline(name: string, text: string): Pipeline {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const yamlError = doc.errors[0];
  if (yamlError) {
    const pos = yamlError.linePos?.[0];
    throw new PipelineError(name, pos ? { line: pos.line, col: pos.col } : undefined, `malformed YAML: ${yamlError.message.split('\n')[0]}`);
  }
  if (!isMap(doc.contents)) throw new PipelineError(name, { line: 1, col: 1 }, 'expected a mapping with a "workflow" key');
  const parsed = pipelineSchema.safeParse(doc.toJS());
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const path = issue.path.filter((part): part is string | number => typeof part !== 'symbol');
    throw new PipelineError(name, positionOf(doc, lines, path), `${path.join('.') || '(root)'}: ${issue.message}`);
  }
  const workflow = parsed.data.workflow;
  const seen = new Set<string>();
  workflow.steps.forEach((step, index) => {
    const where = positionOf(doc, lines, ['workflow', 'steps', index, 'type']);
    if (!(LLM_STEP_TYPES as readonly string[]).includes(step.type)) {
      throw new PipelineError(name, where, `workflow.steps.${index}.type: step type "${step.type}" is not supported by this executor (supported: ${LLM_STEP_TYPES.join(', ')})`);
    }
    if (seen.has(step.name)) {
      throw new PipelineError(name, positionOf(doc, lines, ['workflow', 'steps', index, 'name']), `workflow.steps.${index}.name: duplicate step name "${step.name}"`);
    }
    seen.add(step.name);
  });
  return workflow;
}
