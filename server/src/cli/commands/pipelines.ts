import * as proto from '@elexirion/kit/proto';
import { readFile } from 'node:fs/promises';
import { UsageError, type CommandSpec } from '../args.js';
import type { Context } from '../context.js';
import { ExitCode } from '../exit-codes.js';
import { readStdin } from '../format.js';

export const pipelinesListSpec: CommandSpec = {
  path: ['pipelines', 'list'],
  brief: 'list the pipelines and whether each is valid',
  usage: '',
  summary: 'Lists the pipelines the executor has (ListPipelines): name, steps, inputs, and why an invalid one is invalid.',
  options: {},
  positionals: { min: 0, max: 0, names: '' },
  details: '--json: the ListPipelinesResponse.',
};

export async function pipelinesList(ctx: Context): Promise<number> {
  const answer = await ctx.gateway.listPipelines({}, ctx.unary());
  if (ctx.output.json) {
    ctx.output.document(proto.ListPipelinesResponse.toJSON(answer));
    return ExitCode.OK;
  }
  if (!answer.pipelines.length) {
    ctx.output.note('no pipelines');
    return ExitCode.OK;
  }
  ctx.output.table([
    ['NAME', 'STEPS', 'INPUTS', 'DESCRIPTION'],
    ...answer.pipelines.map((pipeline) => [
      pipeline.name,
      String(pipeline.stepCount),
      pipeline.inputs.map((input) => `${input.name}${input.required ? '' : '?'}`).join(',') || '-',
      pipeline.valid ? pipeline.description : `INVALID: ${pipeline.problem}`,
    ]),
  ]);
  return ExitCode.OK;
}

export const pipelinesValidateSpec: CommandSpec = {
  path: ['pipelines', 'validate'],
  brief: 'check pipeline files: FILE:LINE:COL: message per problem',
  usage: 'FILE... | -',
  summary:
    "Checks pipeline files as the executor would load them (ValidatePipeline with the file's YAML inline) and prints each problem as FILE:LINE:COL: message, the form editors and CI annotate. \"-\" reads stdin.",
  options: {},
  positionals: { min: 1, max: Infinity, names: 'FILE' },
  details:
    'Exit code 0 when every file is valid, 1 when any is invalid, 2 when a file cannot be read. --json: one ValidateResponse per file (problems name the file as given).',
};

/** Problems about the YAML sent inline name the file as the user gave it; others (a prompt file) keep theirs. */
const INLINE_FILE = new Set(['', '<inline>']);

function position(problem: proto.PipelineProblem): string {
  return [problem.file, problem.line || undefined, problem.line && problem.column ? problem.column : undefined].filter((part) => part !== undefined).join(':');
}

export async function pipelinesValidate(ctx: Context): Promise<number> {
  const files: [string, string][] = [];
  for (const file of ctx.positionals) {
    if (file === '-') {
      files.push(['<stdin>', readStdin()]);
      continue;
    }
    try {
      files.push([file, await readFile(file, 'utf8')]);
    } catch (error) {
      throw new UsageError(`cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    }
  }
  let allValid = true;
  for (const [file, yaml] of files) {
    const answer = await ctx.gateway.validatePipeline({ pipeline: '', inlineYaml: yaml }, ctx.unary());
    for (const problem of answer.problems) if (INLINE_FILE.has(problem.file)) problem.file = file;
    allValid &&= answer.valid;
    if (ctx.output.json) {
      (files.length > 1 ? ctx.output.jsonLine.bind(ctx.output) : ctx.output.document.bind(ctx.output))(proto.ValidateResponse.toJSON(answer));
      continue;
    }
    for (const problem of answer.problems) ctx.output.line(`${position(problem)}: ${problem.message}`);
    if (answer.valid) ctx.output.note(`${file}: valid${answer.summary ? ` (pipeline ${answer.summary.name}, ${answer.summary.stepCount} steps)` : ''}`);
    else if (!answer.problems.length) ctx.output.line(`${file}: invalid`);
  }
  return allValid ? ExitCode.OK : ExitCode.FAILED;
}
