import { readFile, readdir, realpath, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { ElexirionError, ROUTE_TABLE_NAME, Status, formatProblem, nodeAt, parseYamlDocument, positionIn, validateYamlDocument, type Problem, type YamlIssue } from '@elexirion/kit';
import { conditionTemplates } from './conditions.js';
import { modelReferencesOf, type ModelReference } from './models.js';
import { LLM_STEP_TYPES, PIPELINE_NAME, STEP_TYPES, pipelineDocument, type Pipeline, type Step } from './schema.js';
import { TemplateError, referencesOf } from './templates.js';

export { formatProblem, type Problem };

/** A pipeline that cannot be used; each problem says where ("general.yaml:4:7: ..."). */
export class PipelineError extends ElexirionError {
  override readonly name = 'PipelineError';
  constructor(readonly problems: Problem[]) {
    super(Status.INVALID_ARGUMENT, problems.map(formatProblem).join('\n'));
  }
}

/**
 * A prompt file that cannot be used. While loading it is one of the pipeline's problems; at run
 * time (the file went away or changed since) the folder is not what the pipeline needs.
 */
export class PromptFileError extends ElexirionError {
  override readonly name = 'PromptFileError';
  constructor(message: string, options?: ErrorOptions) {
    super(Status.FAILED_PRECONDITION, message, options);
  }
}

export class PipelineNotFoundError extends ElexirionError {
  override readonly name = 'PipelineNotFoundError';
  constructor(message: string) {
    super(Status.NOT_FOUND, message);
  }
}

export interface LoadedPipeline {
  name: string;
  file: string;
  pipeline: Pipeline;
  /** Pipelines its `pipeline` steps call, by name, loaded and checked. */
  children: ReadonlyMap<string, LoadedPipeline>;
  /** The models and presets its steps call, for the check against the provider's (checkModels). */
  models: readonly ModelReference[];
}

export const MAX_INLINE_BYTES = 256 * 1024;
const MAX_NESTING = 8;
const MAX_STEPS = 500;

interface CacheEntry {
  mtimeMs: number;
  size: number;
  loaded: LoadedPipeline;
  /** When the file was last seen unchanged; within FRESH_MS no stat is made. */
  checkedAt: number;
}

/** An edited pipeline is picked up within this long; a busy executor stats each file at most this often. */
const FRESH_MS = 1_000;

/**
 * Loads pipelines from one folder (names are plain stems: nothing can escape it) or inline YAML,
 * checks them completely before anything runs, and caches by file modification time.
 */
export class PipelineLoader {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly root: string;

  constructor(directory: string) {
    this.root = resolve(directory);
  }

  get directory(): string {
    return this.root;
  }

  async loadNamed(name: string): Promise<LoadedPipeline> {
    return this.named(name, []);
  }

  /** A named pipeline's YAML as written; load it first (loadNamed checks the name and the file). */
  async readSource(name: string): Promise<string> {
    return readFile(join(this.root, `${name}.yaml`), 'utf8');
  }

  async loadInline(text: string): Promise<LoadedPipeline> {
    if (Buffer.byteLength(text) > MAX_INLINE_BYTES) {
      throw new PipelineError([{ file: '<inline>', message: `inline YAML is over ${MAX_INLINE_BYTES} bytes` }]);
    }
    return this.compile('<inline>', text, []);
  }

  /** Every pipeline in the folder, loaded or with the reason it cannot be (routes.yaml is the agent's, not one). */
  async list(): Promise<{ name: string; loaded?: LoadedPipeline; error?: PipelineError }[]> {
    let names: string[];
    try {
      names = (await readdir(this.root)).filter((file) => file.endsWith('.yaml')).map((file) => file.slice(0, -5)).filter((name) => PIPELINE_NAME.test(name) && name !== ROUTE_TABLE_NAME).sort();
    } catch {
      return [];
    }
    return Promise.all(
      names.map(async (name) => {
        try {
          return { name, loaded: await this.loadNamed(name) };
        } catch (error) {
          if (error instanceof PipelineError) return { name, error };
          return { name, error: new PipelineError([{ file: `${name}.yaml`, message: (error as Error).message }]) };
        }
      }),
    );
  }

  /** Text of a prompt file, which must lie inside the pipelines folder; PromptFileError when it cannot be had. */
  async readPromptFile(file: string): Promise<string> {
    const path = await this.insideRoot(file);
    try {
      return await readFile(path, 'utf8');
    } catch (error) {
      throw new PromptFileError(`prompt file "${file}" cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`, { cause: error });
    }
  }

  /**
   * The real path of a prompt file inside the folder. What it answers never depends on anything
   * outside the folder: a name that leaves it is refused before the file system is asked, and a
   * missing file behind a link that leads out is "outside", as an existing one is.
   */
  private async insideRoot(file: string): Promise<string> {
    if (isAbsolute(file)) throw new PromptFileError(`"${file}" is absolute; prompt files are named relative to the pipelines folder`);
    const outside = () => new PromptFileError(`prompt file "${file}" is outside the pipelines folder`);
    const candidate = resolve(this.root, file);
    if (!isWithin(this.root, candidate)) throw outside();
    const rootReal = await realpath(this.root);
    const real = await realpath(candidate).catch(() => undefined);
    if (real === undefined) {
      // Missing: "does not exist" only when the nearest existing folder on its way is inside.
      throw (await this.nearestExistingInside(candidate, rootReal)) ? new PromptFileError(`prompt file "${file}" does not exist`) : outside();
    }
    if (!isWithin(rootReal, real)) throw outside();
    if (!(await stat(real)).isFile()) throw new PromptFileError(`prompt file "${file}" is not a file`);
    return real;
  }

  private async nearestExistingInside(candidate: string, rootReal: string): Promise<boolean> {
    for (let path = dirname(candidate); isWithin(this.root, path) || path === this.root; path = dirname(path)) {
      const real = await realpath(path).catch(() => undefined);
      if (real !== undefined) return real === rootReal || isWithin(rootReal, real);
    }
    return false;
  }

  private async named(name: string, stack: string[]): Promise<LoadedPipeline> {
    if (!PIPELINE_NAME.test(name)) throw new PipelineError([{ file: name, message: `"${name}" is not a pipeline name (lowercase letters, digits, _ and -, at most 64)` }]);
    if (name === ROUTE_TABLE_NAME) throw new PipelineNotFoundError(`"${name}" is the agent's route table (${name}.yaml), not a pipeline`);
    const path = join(this.root, `${name}.yaml`);
    const recent = this.cache.get(name);
    if (recent && stack.length === 0 && Date.now() - recent.checkedAt < FRESH_MS) return recent.loaded;
    let info;
    try {
      info = await stat(path);
    } catch {
      throw new PipelineNotFoundError(`pipeline "${name}" does not exist`);
    }
    const cached = this.cache.get(name);
    // Children are re-checked through their own cache entries, so an edit anywhere is seen.
    if (cached && cached.mtimeMs === info.mtimeMs && cached.size === info.size && stack.length === 0) {
      const fresh = await this.childrenFresh(cached.loaded);
      if (fresh) {
        cached.checkedAt = Date.now();
        return cached.loaded;
      }
    }
    const text = await readFile(path, 'utf8');
    const loaded = await this.compile(`${name}.yaml`, text, stack, name);
    this.cache.set(name, { mtimeMs: info.mtimeMs, size: info.size, loaded, checkedAt: Date.now() });
    return loaded;
  }

  private async childrenFresh(loaded: LoadedPipeline): Promise<boolean> {
    for (const [name, child] of loaded.children) {
      const entry = this.cache.get(name);
      if (!entry || entry.loaded !== child) return false;
      const info = await stat(join(this.root, `${name}.yaml`)).catch(() => undefined);
      if (!info || info.mtimeMs !== entry.mtimeMs || info.size !== entry.size) return false;
    }
    return true;
  }

  private async compile(file: string, text: string, stack: string[], expectedName?: string): Promise<LoadedPipeline> {
    const read = parseYamlDocument(file, text, 'expected a mapping with a "workflow" key');
    if ('problems' in read) throw new PipelineError(read.problems);
    const document = read.document;
    const parsed = validateYamlDocument(pipelineDocument, document, describeIssue);
    if ('problems' in parsed) throw new PipelineError(parsed.problems);
    const problems: Problem[] = [];
    const pipeline = parsed.data.workflow;
    const at = (path: (string | number)[]) => ({ file, ...positionIn(document, path) });
    if (expectedName && pipeline.name !== expectedName) {
      problems.push({ ...at(['workflow', 'name']), message: `workflow.name is "${pipeline.name}" but the file is ${expectedName}.yaml` });
    }
    const stepCount = countSteps(pipeline.steps);
    if (stepCount > MAX_STEPS) problems.push({ ...at(['workflow', 'steps']), message: `${stepCount} steps is over the limit of ${MAX_STEPS}` });
    await this.checkSteps(pipeline, at, problems);

    // Nested pipelines: loaded now, so a missing one or a cycle is found before anything runs.
    const children = new Map<string, LoadedPipeline>();
    const chain = [...stack, pipeline.name];
    for (const { step, path } of walkSteps(pipeline.steps, ['workflow', 'steps'])) {
      if (step.type !== 'pipeline') continue;
      const where = at([...path, 'pipeline']);
      if (chain.includes(step.pipeline)) {
        problems.push({ ...where, message: `pipeline cycle: ${[...chain, step.pipeline].join(' -> ')}` });
        continue;
      }
      if (chain.length >= MAX_NESTING) {
        problems.push({ ...where, message: `pipelines nest deeper than ${MAX_NESTING}: ${[...chain, step.pipeline].join(' -> ')}` });
        continue;
      }
      try {
        const child = await this.named(step.pipeline, chain);
        children.set(step.pipeline, child);
        for (const name of Object.keys(step.inputs)) {
          if (!Object.hasOwn(child.pipeline.inputs, name)) problems.push({ ...at([...path, 'inputs', name]), message: `pipeline "${step.pipeline}" has no input "${name}"` });
        }
        for (const [name, spec] of Object.entries(child.pipeline.inputs)) {
          if (spec.required && spec.default === undefined && !Object.hasOwn(step.inputs, name)) {
            problems.push({ ...at([...path, 'inputs']), message: `pipeline "${step.pipeline}" needs input "${name}"` });
          }
        }
      } catch (error) {
        if (error instanceof PipelineNotFoundError) problems.push({ ...where, message: error.message });
        else if (error instanceof PipelineError) problems.push({ ...where, message: `pipeline "${step.pipeline}" is not valid: ${error.problems.map(formatProblem).join('; ')}` });
        else throw error;
      }
    }
    if (problems.length > 0) throw new PipelineError(problems);
    const models = modelReferencesOf(pipeline, walkSteps(pipeline.steps, ['workflow', 'steps']), at);
    return { name: pipeline.name, file, pipeline, children, models };
  }

  /** Static checks: names, references, files, step-specific rules. */
  private async checkSteps(pipeline: Pipeline, at: (path: (string | number)[]) => Omit<Problem, 'message'>, problems: Problem[]): Promise<void> {
    const names = new Set<string>();
    const inputs = new Set(Object.keys(pipeline.inputs));
    const visit = async (steps: Step[], base: (string | number)[], visible: Set<string>, vars: Set<string>, loop: Set<string> | undefined, concurrent: boolean) => {
      const siblings = new Set(visible);
      for (const [index, step] of steps.entries()) {
        const path = [...base, index];
        if (names.has(step.name)) problems.push({ ...at([...path, 'name']), message: `duplicate step name "${step.name}"` });
        names.add(step.name);
        const seen = concurrent ? visible : siblings;
        for (const { template, field } of templatesOf(step)) {
          let references;
          try {
            references = referencesOf(template);
          } catch (error) {
            if (error instanceof TemplateError) {
              problems.push({ ...at([...path, ...field]), message: `step "${step.name}": ${error.message}` });
              continue;
            }
            throw error;
          }
          for (const reference of references) {
            const problem =
              reference.kind === 'input' && !inputs.has(reference.name)
                ? `names input "${reference.name}", which workflow.inputs does not declare`
                : reference.kind === 'step' && !seen.has(reference.step)
                  ? reference.step === step.name
                    ? 'refers to its own output'
                    : `names step "${reference.step}", which does not run before this one`
                  : reference.kind === 'var' && !vars.has(reference.name)
                    ? `names variable "${reference.name}", which no earlier set_variable step sets`
                    : reference.kind === 'loop' && !loop?.has(reference.name)
                      ? loop
                        ? `names loop value "${reference.name}" (this loop has ${[...loop].join(', ')})`
                        : 'uses a loop value outside a for_each step'
                      : undefined;
            if (problem) problems.push({ ...at([...path, ...field]), message: `step "${step.name}": {{${reference.text}}} ${problem}` });
          }
        }
        if ('prompt' in step && Array.isArray(step.prompt)) {
          for (const [partIndex, part] of step.prompt.entries()) {
            if ('previous_response' in part && !seen.has(part.previous_response)) {
              problems.push({ ...at([...path, 'prompt', partIndex, 'previous_response']), message: `step "${step.name}": previous_response names step "${part.previous_response}", which does not run before this one` });
            }
            if ('file' in part) {
              try {
                await this.insideRoot(part.file);
              } catch (error) {
                if (!(error instanceof PromptFileError)) throw error;
                problems.push({ ...at([...path, 'prompt', partIndex, 'file']), message: `step "${step.name}": ${error.message}` });
              }
            }
          }
        }
        if (step.type === 'claude_robust') {
          if (step.fallback_action === 'default_output' && step.default_output === undefined) {
            problems.push({ ...at([...path, 'fallback_action']), message: `step "${step.name}": fallback_action default_output needs default_output` });
          }
          if (step.fallback_action === 'fallback_model' && !step.fallback_model) {
            problems.push({ ...at([...path, 'fallback_action']), message: `step "${step.name}": fallback_action fallback_model needs fallback_model` });
          }
        }
        if (step.type === 'parallel') {
          await visit(step.steps, [...path, 'steps'], new Set(seen), vars, loop, true);
          for (const child of step.steps) siblings.add(child.name);
        }
        if (step.type === 'for_each') {
          await visit(step.steps, [...path, 'steps'], new Set(seen), new Set(vars), new Set([...(loop ?? []), step.as, 'item', 'index']), false);
        }
        if (step.type === 'set_variable') vars.add(step.variable);
        siblings.add(step.name);
      }
    };
    await visit(pipeline.steps, ['workflow', 'steps'], new Set(), new Set(), undefined, false);
    // Outputs see what the end of the run sees: top-level steps, parallel children, top-level variables.
    const finalSteps = new Set<string>();
    const finalVars = new Set<string>();
    for (const step of pipeline.steps) {
      finalSteps.add(step.name);
      if (step.type === 'parallel') for (const child of step.steps) finalSteps.add(child.name);
      if (step.type === 'set_variable') finalVars.add(step.variable);
    }
    if (pipeline.outputs) {
      for (const [name, template] of Object.entries(pipeline.outputs)) {
        try {
          for (const reference of referencesOf(template)) {
            const where = at(['workflow', 'outputs', name]);
            if (reference.kind === 'step' && !finalSteps.has(reference.step)) {
              problems.push({ ...where, message: `outputs.${name}: {{${reference.text}}} names ${names.has(reference.step) ? 'a step inside a for_each, whose values stay in each iteration' : 'a step that does not exist'}` });
            }
            if (reference.kind === 'var' && !finalVars.has(reference.name)) problems.push({ ...where, message: `outputs.${name}: {{${reference.text}}} names a variable no top-level set_variable step sets` });
            if (reference.kind === 'input' && !inputs.has(reference.name)) problems.push({ ...where, message: `outputs.${name}: {{${reference.text}}} names an undeclared input` });
            if (reference.kind === 'loop') problems.push({ ...where, message: `outputs.${name}: loop values do not exist outside a for_each step` });
          }
        } catch (error) {
          problems.push({ ...at(['workflow', 'outputs', name]), message: `outputs.${name}: ${(error as Error).message}` });
        }
      }
    }
  }
}

/** `path` lies strictly inside `folder`; "..data/x" is inside (Kubernetes mounts ConfigMaps through ..-prefixed folders), "../x" is not. */
function isWithin(folder: string, path: string): boolean {
  const within = relative(folder, path);
  return within !== '' && within !== '..' && !within.startsWith(`..${sep}`) && !isAbsolute(within);
}

function* walkSteps(steps: Step[], base: (string | number)[]): Generator<{ step: Step; path: (string | number)[] }> {
  for (const [index, step] of steps.entries()) {
    const path = [...base, index];
    yield { step, path };
    if (step.type === 'parallel' || step.type === 'for_each') yield* walkSteps(step.steps, [...path, 'steps']);
  }
}

export function countSteps(steps: Step[]): number {
  return [...walkSteps(steps, [])].length;
}

/** The templates a step holds, with the field each is in (for the error position). */
function templatesOf(step: Step): { template: string; field: (string | number)[] }[] {
  const found: { template: string; field: (string | number)[] }[] = [];
  if (step.when) for (const template of conditionTemplates(step.when)) found.push({ template, field: ['when'] });
  if ('prompt' in step) {
    if (typeof step.prompt === 'string') found.push({ template: step.prompt, field: ['prompt'] });
    else step.prompt.forEach((part, index) => 'static' in part && found.push({ template: part.static, field: ['prompt', index, 'static'] }));
  }
  if ('system' in step && step.system) found.push({ template: step.system, field: ['system'] });
  if (step.type === 'claude_robust' && step.default_output) found.push({ template: step.default_output, field: ['default_output'] });
  if (step.type === 'for_each' && typeof step.items === 'string') found.push({ template: step.items, field: ['items'] });
  if (step.type === 'set_variable' && typeof step.value === 'string') found.push({ template: step.value, field: ['value'] });
  if (step.type === 'transform') {
    found.push({ template: step.input, field: ['input'] });
    step.operations.forEach((operation, index) => {
      for (const [key, value] of Object.entries(operation)) if (key !== 'op' && typeof value === 'string') found.push({ template: value, field: ['operations', index, key] });
    });
  }
  if (step.type === 'pipeline') for (const [name, template] of Object.entries(step.inputs)) found.push({ template, field: ['inputs', name] });
  return found;
}

/** Words for a step without a type or with an unknown one, naming the known ones; zod's otherwise. */
function describeIssue(issue: YamlIssue, raw: unknown, path: (string | number)[]): string | undefined {
  const node = nodeAt(raw, path);
  if (node === undefined && issue.code !== 'unrecognized_keys') return path.at(-1) === 'type' ? 'a step needs a type' : undefined;
  if (issue.code === 'invalid_union' || issue.code === 'invalid_value') {
    if (path.at(-1) === 'type' || (node && typeof node === 'object' && 'type' in node)) {
      const type = path.at(-1) === 'type' ? node : (node as { type: unknown }).type;
      if (typeof type !== 'string') return 'a step needs a type';
      if (!(STEP_TYPES as readonly string[]).includes(type)) return `unknown step type "${type}" (known: ${STEP_TYPES.join(', ')})`;
    }
  }
  return undefined;
}

export function isLlmStep(step: Step): step is Extract<Step, { prompt: unknown }> {
  return (LLM_STEP_TYPES as readonly string[]).includes(step.type);
}

