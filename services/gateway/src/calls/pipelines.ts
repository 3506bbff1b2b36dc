import { callOptions, type proto } from '@elexirion/kit';
import { checkPipelineName, invalid } from '../validation.js';
import { callerOf } from '../caller.js';
import { observed, type GatewayDeps } from './gateway-deps.js';

/** An inline pipeline document: a pipeline file is a few KiB; this bounds what one call may make the services parse. */
export const MAX_INLINE_YAML_BYTES = 1024 * 1024;
/** Every input name and value of one run together. */
export const MAX_INPUTS_BYTES = 1024 * 1024;
/** Every prompt override of one run together (names and texts). */
export const MAX_PROMPT_OVERRIDES_BYTES = 1024 * 1024;
export const MAX_PROMPT_OVERRIDES = 100;

// The executor's shapes (services/executor/src/pipeline/schema.ts): refused here, before any hop.
const STEP_NAME = /^[A-Za-z_][\w-]{0,127}$/;
const INPUT_NAME = /^[A-Za-z_]\w{0,127}$/;

const bytes = (text: string) => Buffer.byteLength(text, 'utf8');
const mib = (count: number) => `${(count / (1024 * 1024)).toFixed(count < 1024 * 1024 ? 3 : 1)} MiB`;

/** The pipeline source of a request: a name, or inline YAML within its bound. */
function checkSource(request: { pipeline: string; inlineYaml: string }, inlineNamesPipeline: boolean): void {
  const size = bytes(request.inlineYaml);
  if (size > MAX_INLINE_YAML_BYTES) throw invalid(`inline_yaml: ${mib(size)} is over the limit of ${mib(MAX_INLINE_YAML_BYTES)}`);
  if (request.inlineYaml !== '' && request.inlineYaml.trim() === '') throw invalid('inline_yaml: must not be blank');
  if (!inlineNamesPipeline && request.pipeline !== '' && request.inlineYaml !== '') throw invalid('pipeline and inline_yaml: give one, not both');
  checkPipelineName('pipeline', request.pipeline, request.inlineYaml === '');
}

function checkNamedTexts(field: string, entries: Record<string, string>, name: RegExp, nameRule: string, limitBytes: number, maxCount: number): void {
  const names = Object.keys(entries);
  if (names.length > maxCount) throw invalid(`${field}: ${names.length} entries is over the limit of ${maxCount}`);
  let total = 0;
  for (const key of names) {
    if (!name.test(key)) throw invalid(`${field}: ${JSON.stringify(key.slice(0, 80))} is not ${nameRule}`);
    total += bytes(key) + bytes(entries[key]!);
  }
  if (total > limitBytes) throw invalid(`${field}: ${mib(total)} in all is over the limit of ${mib(limitBytes)}`);
}

/** ExecutePipeline's request: its source, its inputs and its prompt overrides, each within bounds. */
export function checkExecutePipelineRequest(request: proto.ExecutePipelineRequest): void {
  checkSource(request, true);
  checkNamedTexts('inputs', request.inputs, INPUT_NAME, 'an input name (letters, digits and _, not starting with a digit)', MAX_INPUTS_BYTES, 1_000);
  checkNamedTexts(
    'prompt_overrides',
    request.promptOverrides,
    STEP_NAME,
    'a step name (letters, digits, _ and -, not starting with a digit or -)',
    MAX_PROMPT_OVERRIDES_BYTES,
    MAX_PROMPT_OVERRIDES,
  );
  for (const [step, text] of Object.entries(request.promptOverrides)) {
    if (text.trim() === '') throw invalid(`prompt_overrides.${step}: the prompt must not be empty`);
  }
  // Candidates are whole prompts (the executor checks each against its bounds); here their count, names and total size.
  const candidateTexts = Object.fromEntries(
    Object.entries(request.promptCandidates ?? {}).map(([step, template]) => [step, template.prompt + template.system + template.demos.map((demo) => demo.input + demo.output).join('')]),
  );
  checkNamedTexts('prompt_candidates', candidateTexts, STEP_NAME, 'a step name (letters, digits, _ and -, not starting with a digit or -)', MAX_PROMPT_OVERRIDES_BYTES, MAX_PROMPT_OVERRIDES);
  for (const step of Object.keys(candidateTexts)) {
    if (Object.hasOwn(request.promptOverrides, step)) throw invalid(`prompt_candidates.${step}: step "${step}" is in prompt_overrides too; give one or the other`);
  }
  if (request.sessionId.length > 128) throw invalid('session_id: at most 128 characters');
}

/** ExecutePipeline (direct, no routing), ListPipelines, ValidatePipeline. */
export function pipelineCalls(deps: GatewayDeps): Pick<proto.GatewayServiceImplementation, 'executePipeline' | 'listPipelines' | 'validatePipeline'> {
  const { agent, executor } = deps;
  return {
    async executePipeline(request, callContext) {
      checkExecutePipelineRequest(request);
      const started = performance.now();
      const owner = callerOf(callContext)?.keyId ?? '';
      const result = await observed(deps, 'ExecutePipeline', request.pipeline, () =>
        agent.runPipeline({ ...request, owner }, callOptions(callContext)),
        (answer) => ({ jobId: answer.jobId }),
      );
      return {
        result: result.result,
        pipeline: result.pipeline,
        executionTimeMs: Math.round(performance.now() - started),
        jobId: result.jobId,
        usage: result.usage,
        steps: result.steps,
      };
    },
    async listPipelines(_request, callContext) {
      // The executor's pipelines folder, each with its inputs and whether it is valid (and why not).
      return observed(deps, 'ListPipelines', '', () => executor.listPipelines({}, callOptions(callContext)));
    },
    async validatePipeline(request, callContext) {
      checkSource(request, false);
      // An invalid pipeline is an answer (valid: false, each problem at file:line:column), not an error.
      return observed(deps, 'ValidatePipeline', request.pipeline, () =>
        executor.validate({ pipeline: request.pipeline, inlineYaml: request.inlineYaml }, callOptions(callContext)),
      );
    },
  };
}
