import { callOptions, type proto } from '@elexirion/kit';
import { checkPipelineName } from '../validation.js';
import { callerOf } from '../caller.js';
import { observed, type GatewayDeps } from './gateway-deps.js';
import { unimplemented } from './unimplemented.js';

/** ExecutePipeline (direct, no routing), ListPipelines, ValidatePipeline. */
export function pipelineCalls(deps: GatewayDeps): Pick<proto.GatewayServiceImplementation, 'executePipeline' | 'listPipelines' | 'validatePipeline'> {
  const { agent } = deps;
  return {
    async executePipeline(request, callContext) {
      checkPipelineName('pipeline', request.pipeline, request.inlineYaml === '');
      const started = performance.now();
      const owner = callerOf(callContext)?.keyId ?? '';
      const result = await observed(deps, 'ExecutePipeline', request.pipeline, () =>
        agent.runPipeline({ ...request, owner }, callOptions(callContext)),
        (answer) => answer.jobId,
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
    async listPipelines() {
      unimplemented('ListPipelines');
    },
    async validatePipeline() {
      unimplemented('ValidatePipeline');
    },
  };
}
