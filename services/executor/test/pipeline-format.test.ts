// The pipeline format: the JSON Schema editors use (generated, committed, checked here), and the
// loader's answers to bad pipelines (file, line, column and what is wrong).
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { parse } from 'yaml';
import { PipelineError, PipelineLoader, PromptFileError, STEP_TYPES, type Problem } from '@elexirion/executor';
import { Status } from '@elexirion/kit';
import { shippedPipelines } from '@elexirion/testing';
// @ts-expect-error -- a plain .mjs script without type declarations
import { SCHEMA_PATH, pipelineJsonSchema, pipelineJsonSchemaText } from '../../../scripts/generate-pipeline-schema.mjs';

const PIPELINES_DIR = fileURLToPath(new URL('../../../pipelines/', import.meta.url));
// Tracked by git: a user's own unfinished pipeline in pipelines/ is not the project's to check.
const shipped = shippedPipelines();

describe('the JSON Schema for editors (pipelines/schema/pipeline.schema.json)', () => {
  const schema = JSON.parse(readFileSync(SCHEMA_PATH, 'utf8'));
  const ajv = new Ajv2020({ allErrors: true, allowUnionTypes: true });
  const validate = ajv.compile(schema);
  const errorsOf = (document: unknown) => (validate(document) ? [] : (validate.errors ?? []));

  it('is the file the generator writes now (run `npm run generate:pipeline-schema` after changing the format)', () => {
    expect(readFileSync(SCHEMA_PATH, 'utf8'), 'pipelines/schema/pipeline.schema.json is stale: run `npm run build` or `npm run generate:pipeline-schema`').toBe(pipelineJsonSchemaText());
  });

  it('is draft 2020-12 with an id, a title and a description', () => {
    expect(schema.$schema).toBe('https://json-schema.org/draft/2020-12/schema');
    expect(schema.$id).toEqual(expect.any(String));
    expect(schema.title).toEqual(expect.any(String));
    expect(schema.description).toContain('docs/pipelines.md');
    expect(pipelineJsonSchema()).toEqual(schema);
  });

  it('describes recursive steps and conditions once, in $defs, by $ref', () => {
    expect(Object.keys(schema.$defs).sort()).toEqual(['condition', 'step']);
    expect(schema.properties.workflow.properties.steps.items).toEqual({ $ref: '#/$defs/step' });
    const byType = Object.fromEntries(schema.$defs.step.oneOf.map((option: { properties: { type: { const: string } } }) => [option.properties.type.const, option]));
    expect(Object.keys(byType).sort()).toEqual([...STEP_TYPES].sort());
    expect(byType.parallel.properties.steps.items).toEqual({ $ref: '#/$defs/step' });
    expect(byType.for_each.properties.steps.items).toEqual({ $ref: '#/$defs/step' });
    expect(byType.claude.properties.when.$ref).toBe('#/$defs/condition');
  });

  it('makes fields with defaults optional (what authors write, not what the parser returns)', () => {
    const workflow = schema.properties.workflow;
    expect(workflow.required.sort()).toEqual(['name', 'steps']);
    const byType = Object.fromEntries(schema.$defs.step.oneOf.map((option: { properties: { type: { const: string } } }) => [option.properties.type.const, option]));
    expect(byType.claude_robust.required.sort()).toEqual(['name', 'prompt', 'type']);
    expect(byType.claude_robust.properties.retry_count.default).toBe(2);
    expect(byType.for_each.required.sort()).toEqual(['items', 'name', 'steps', 'type']);
    expect(byType.gemini_structured.required.sort()).toEqual(['format', 'name', 'prompt', 'schema', 'type']);
    expect(byType.pipeline.required.sort()).toEqual(['name', 'pipeline', 'type']);
    expect(byType.llm.required.sort()).toEqual(['model', 'name', 'prompt', 'type']);
  });

  it.each(shipped)('accepts the shipped pipeline %s, which names the schema on its first line', (file) => {
    const text = readFileSync(join(PIPELINES_DIR, file), 'utf8');
    expect(text.split('\n')[0]).toBe('# yaml-language-server: $schema=./schema/pipeline.schema.json');
    expect(errorsOf(parse(text))).toEqual([]);
  });

  it('accepts a small document using every step type', () => {
    const document = parse(`
workflow:
  name: every-type
  inputs: { q: {}, n: { type: number, default: 2 } }
  defaults: { model: claude_smart, preset: test, step_timeout: 30s, run_timeout: 600000 }
  steps:
    - { name: a, type: claude, prompt: "{{inputs.q}}" }
    - { name: b, type: gemini, prompt: [{ static: x }, { previous_response: a, extract: "x[0]" }] }
    - { name: c, type: llm, model: mock/mock, prompt: x, temperature: 0.5, max_tokens: 10, stop: ["\\n"] }
    - { name: d, type: claude_smart, preset: analysis, prompt: x, when: { all: [x, { not: { empty: x } }] } }
    - { name: e, type: claude_robust, prompt: x, backoff: 500ms, fallback_action: skip, timeout: 1m }
    - { name: f, type: gemini_structured, format: json, schema: { type: object }, prompt: x }
    - { name: g, type: parallel, max_parallel: 2, steps: [{ name: g1, type: claude, prompt: x }] }
    - { name: h, type: for_each, items: [1, 2], steps: [{ name: h1, type: set_variable, variable: v, value: 1 }] }
    - { name: i, type: transform, input: x, operations: [{ op: trim }, { op: replace, find: a, with: b }] }
    - { name: j, type: pipeline, pipeline: general, inputs: { message: hi } }
  outputs: { out: "{{steps.a.output}}" }
`);
    expect(errorsOf(document)).toEqual([]);
  });

  const broken: [string, unknown, string][] = [
    ['no workflow', { steps: [] }, 'required'],
    ['an unknown top-level key', { workflow: { name: 'x', steps: [{ name: 'a', type: 'claude', prompt: 'x' }] }, extra: 1 }, 'additionalProperties'],
    ['an upper-case pipeline name', { workflow: { name: 'Bad Name', steps: [{ name: 'a', type: 'claude', prompt: 'x' }] } }, 'pattern'],
    ['no steps', { workflow: { name: 'x', steps: [] } }, 'minItems'],
    ['an unknown step type', { workflow: { name: 'x', steps: [{ name: 'a', type: 'gpt', prompt: 'x' }] } }, 'oneOf'],
    ['a step without a prompt', { workflow: { name: 'x', steps: [{ name: 'a', type: 'claude' }] } }, 'oneOf'],
    ['an unknown step field', { workflow: { name: 'x', steps: [{ name: 'a', type: 'claude', prompt: 'x', temprature: 1 }] } }, 'oneOf'],
    ['a bad duration', { workflow: { name: 'x', defaults: { step_timeout: '5 minutes' }, steps: [{ name: 'a', type: 'claude', prompt: 'x' }] } }, 'pattern'],
    ['an unknown input type', { workflow: { name: 'x', inputs: { a: { type: 'date' } }, steps: [{ name: 'a', type: 'claude', prompt: 'x' }] } }, 'enum'],
    ['a bad step inside parallel', { workflow: { name: 'x', steps: [{ name: 'p', type: 'parallel', steps: [{ name: 'a', type: 'claude' }] }] } }, 'oneOf'],
    ['a condition with one operand', { workflow: { name: 'x', steps: [{ name: 'a', type: 'claude', prompt: 'x', when: { equals: ['a'] } }] } }, 'oneOf'],
    ['an unknown transform op', { workflow: { name: 'x', steps: [{ name: 't', type: 'transform', input: 'x', operations: [{ op: 'eval' }] }] } }, 'oneOf'],
    ['structured output without format', { workflow: { name: 'x', steps: [{ name: 's', type: 'gemini_structured', schema: {}, prompt: 'x' }] } }, 'oneOf'],
    ['retry_count over 10', { workflow: { name: 'x', steps: [{ name: 'r', type: 'claude_robust', retry_count: 11, prompt: 'x' }] } }, 'oneOf'],
  ];
  it.each(broken)('rejects %s', (_label, document, keyword) => {
    const errors = errorsOf(document);
    expect(errors.length).toBeGreaterThan(0);
    expect(errors.map((error) => error.keyword)).toContain(keyword);
  });
});

/** Loads and expects a PipelineError; returns its problems. */
async function problemsOf(load: Promise<unknown>): Promise<Problem[]> {
  let caught: unknown;
  try {
    await load;
  } catch (error) {
    caught = error;
  }
  expect(caught, 'the pipeline loaded, but should have been refused').toBeInstanceOf(PipelineError);
  const problems = (caught as PipelineError).problems;
  expect(problems.length).toBeGreaterThan(0);
  for (const problem of problems) expect(problem.message.length).toBeGreaterThan(0);
  return problems;
}

/** "line:column" (1-based) of the nth occurrence of `needle` in `text`, plus `shift` columns. */
function where(text: string, needle: string, nth = 1, shift = 0): string {
  let index = -1;
  for (let count = 0; count < nth; count += 1) {
    index = text.indexOf(needle, index + 1);
    if (index < 0) throw new Error(`"${needle}" occurs fewer than ${nth} times`);
  }
  const before = text.slice(0, index).split('\n');
  return `${before.length}:${before.at(-1)!.length + 1 + shift}`;
}

const step = (name: string, lines: string[] = ['type: claude', 'prompt: hi']) => [`    - name: ${name}`, ...lines.map((line) => `      ${line}`)].join('\n');
const pipeline = (name: string, ...body: string[]) => ['workflow:', `  name: ${name}`, ...body].join('\n') + '\n';

describe('PipelineLoader: bad pipelines', () => {
  let root: string;
  let dir: string;
  let loader: PipelineLoader;

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'elexirion-pipelines-'));
    dir = join(root, 'pipelines');
    mkdirSync(join(dir, 'prompts'), { recursive: true });
    writeFileSync(join(root, 'secret.txt'), 'not for pipelines');
    writeFileSync(join(dir, 'prompts', 'ok.md'), 'Fine: {{inputs.x}}');
    symlinkSync(join(root, 'secret.txt'), join(dir, 'prompts', 'escape.md'));
    loader = new PipelineLoader(dir);
  });

  afterAll(() => {
    rmSync(root, { recursive: true, force: true });
  });

  /** Writes `<name>.yaml` and loads it by name. */
  function load(name: string, text: string) {
    writeFileSync(join(dir, `${name}.yaml`), text);
    return loader.loadNamed(name);
  }

  it('neither lists nor loads routes.yaml, the agent\'s route table beside the pipelines', async () => {
    writeFileSync(join(dir, 'routes.yaml'), 'routes: []\n');
    expect((await loader.list()).map((entry) => entry.name)).not.toContain('routes');
    await expect(loader.loadNamed('routes')).rejects.toMatchObject({ code: Status.NOT_FOUND, message: expect.stringContaining("the agent's route table") });
  });

  it('refuses malformed YAML, saying so', async () => {
    const problems = await problemsOf(load('malformed', pipeline('malformed', '  steps: [', '    - oops')));
    expect(problems[0]).toMatchObject({ file: 'malformed.yaml', message: expect.stringMatching(/^malformed YAML: /) });
  });

  it('gives malformed YAML problems the line and column of the error', async () => {
    const unclosed = await problemsOf(load('malformed-position', pipeline('malformed-position', '  description: ok', '  steps: [', '    - oops')));
    expect(unclosed[0]).toEqual({ file: 'malformed-position.yaml', line: 5, column: 5, message: 'malformed YAML: Block collections are not allowed within flow collections' });
    const tab = await problemsOf(load('malformed-tab', 'workflow:\n  name: malformed-tab\n\tsteps: []\n'));
    expect(tab[0]).toMatchObject({ file: 'malformed-tab.yaml', line: 3, column: 1, message: expect.stringContaining('Tabs are not allowed') });
    const quote = await problemsOf(load('malformed-quote', 'workflow:\n  name: "malformed-quote\n'));
    expect(quote[0]).toMatchObject({ file: 'malformed-quote.yaml', line: 3, column: 1, message: 'malformed YAML: Missing closing "quote' });
    // Aliases are resolved after parsing, so an unresolved one is reported at 1:1 (not at the alias).
    const alias = await problemsOf(loader.loadInline('workflow:\n  name: *nowhere\n'));
    expect(alias[0]).toMatchObject({ file: '<inline>', line: 1, column: 1, message: expect.stringContaining('Unresolved alias') });
  });

  it('refuses a document that is not a mapping', async () => {
    expect(await problemsOf(load('scalar', 'just some text\n'))).toEqual([{ file: 'scalar.yaml', line: 1, column: 1, message: 'expected a mapping with a "workflow" key' }]);
    expect(await problemsOf(load('nothing', ''))).toEqual([{ file: 'nothing.yaml', line: 1, column: 1, message: 'expected a mapping with a "workflow" key' }]);
  });

  it('refuses duplicate keys and several documents in one file', async () => {
    const duplicate = await problemsOf(load('dupkey', pipeline('dupkey', '  name: dupkey', '  steps:', step('a'))));
    expect(duplicate[0]!.message).toContain('Map keys must be unique');
    const multi = await problemsOf(load('multidoc', pipeline('multidoc', '  steps:', step('a')) + '---\nworkflow: {}\n'));
    expect(multi[0]!.message).toContain('multiple documents');
  });

  it('names an unknown step type, and lists the known ones', async () => {
    const problems = await problemsOf(load('unknown-type', pipeline('unknown-type', '  steps:', step('a', ['type: gpt4', 'prompt: hi']))));
    expect(problems).toEqual([
      {
        file: 'unknown-type.yaml',
        line: 5,
        column: 13,
        message: `workflow.steps.0.type: unknown step type "gpt4" (known: ${STEP_TYPES.join(', ')})`,
      },
    ]);
  });

  it('says a step needs a type', async () => {
    const problems = await problemsOf(load('no-type', pipeline('no-type', '  steps:', step('a', ['prompt: hi']))));
    expect(problems).toEqual([{ file: 'no-type.yaml', line: 4, column: 7, message: 'workflow.steps.0.type: a step needs a type' }]);
  });

  it('names a missing required field, at its step', async () => {
    const problems = await problemsOf(load('no-prompt', pipeline('no-prompt', '  steps:', step('a', ['type: claude']))));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatchObject({ file: 'no-prompt.yaml', line: 4, column: 7 });
    expect(problems[0]!.message).toMatch(/^workflow\.steps\.0\.prompt: /);
    const model = await problemsOf(load('no-model', pipeline('no-model', '  steps:', step('a', ['type: llm', 'prompt: hi']))));
    expect(model[0]).toMatchObject({ file: 'no-model.yaml', line: 4, column: 7, message: 'workflow.steps.0.model: required, and missing' });
  });

  it('reports a missing prompt as missing, not as "Invalid input"', async () => {
    const problems = await problemsOf(load('no-prompt-message', pipeline('no-prompt-message', '  steps:', step('a', ['type: claude']))));
    expect(problems[0]!.message).toMatch(/required|missing/i);
  });

  it('names an unknown field', async () => {
    const problems = await problemsOf(load('unknown-field', pipeline('unknown-field', '  steps:', step('a', ['type: claude', 'prompt: hi', 'temprature: 0.2']))));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatchObject({ file: 'unknown-field.yaml', message: 'workflow.steps.0: unknown field "temprature"; did you mean "temperature"?' });
    const top = await problemsOf(load('unknown-top', 'extra: 1\n' + pipeline('unknown-top', '  steps:', step('a'))));
    expect(top[0]).toMatchObject({ file: 'unknown-top.yaml', line: 1, column: 1, message: '(root): unknown field "extra"' });
  });

  it('suggests the field a misspelt one was meant to be, wherever it is, each at its place', async () => {
    const text = pipeline(
      'misspelt',
      '  defualts: { modle: claude }',
      '  steps:',
      step('a', ['type: claude', 'promt: hi', 'sytem: be brief', 'colour: blue']),
      step('b', ['type: claude', 'prompt: [{ fiel: prompts/ok.md }]', 'when: { equal: ["{{steps.a.output}}", "x"] }']),
      step('c', ['type: transform', 'input: x', 'operations: [{ op: truncate, maxx: 3 }]']),
    );
    const problems = await problemsOf(loader.loadInline(text));
    const at = (needle: string) => where(text, needle);
    expect(problems.map((problem) => `${problem.line}:${problem.column} ${problem.message}`)).toEqual(
      expect.arrayContaining([
        `${at('defualts')} workflow: unknown field "defualts"; did you mean "defaults"?`,
        `${at('promt')} workflow.steps.0: unknown field "promt"; did you mean "prompt"?`,
        `${at('sytem')} workflow.steps.0: unknown field "sytem"; did you mean "system"?`,
        // Nothing allowed is near it: no guess.
        `${at('colour')} workflow.steps.0: unknown field "colour"`,
        `${at('fiel')} workflow.steps.1.prompt.0: unknown field "fiel"; did you mean "file"?`,
        `${at('equal')} workflow.steps.1.when: unknown field "equal"; did you mean "equals"?`,
        `${at('maxx')} workflow.steps.2.operations.0: unknown field "maxx"; did you mean "max"?`,
      ]),
    );
    // A field that is there already is not suggested again.
    const both = await problemsOf(loader.loadInline(pipeline('both', '  steps:', step('a', ['type: claude', 'prompt: hi', 'promt: hi']))));
    expect(both.map((problem) => problem.message)).toEqual(['workflow.steps.0: unknown field "promt"']);
  });

  it('reports an unknown field at the field, not at the start of its step', async () => {
    const problems = await problemsOf(load('unknown-field-at', pipeline('unknown-field-at', '  steps:', step('a', ['type: claude', 'prompt: hi', 'temprature: 0.2']))));
    expect(problems[0]).toMatchObject({ line: 7, column: 7 });
  });

  it('reports a bad value where it is', async () => {
    const problems = await problemsOf(load('bad-values', pipeline('bad-values', '  defaults: { step_timeout: 5 minutes }', '  steps:', step('a', ['type: claude_robust', 'retry_count: 99', 'prompt: hi']))));
    expect(problems).toEqual([
      { file: 'bad-values.yaml', line: 3, column: 29, message: 'workflow.defaults.step_timeout: expected a duration such as 500ms, 30s, 2m or 1h' },
      { file: 'bad-values.yaml', line: 7, column: 20, message: expect.stringMatching(/^workflow\.steps\.0\.retry_count: Too big: expected number to be <=10/) },
    ]);
  });

  const references: [string, string, string][] = [
    ['an undeclared input', '{{inputs.nope}}', 'step "a": {{inputs.nope}} names input "nope", which workflow.inputs does not declare'],
    ['a later step', '{{steps.b.output}}', 'step "a": {{steps.b.output}} names step "b", which does not run before this one'],
    ['its own output', '{{steps.a.output}}', 'step "a": {{steps.a.output}} refers to its own output'],
    ['a variable never set', '{{vars.kind}}', 'step "a": {{vars.kind}} names variable "kind", which no earlier set_variable step sets'],
    ['a loop value outside for_each', '{{loop.item}}', 'step "a": {{loop.item}} uses a loop value outside a for_each step'],
    ['a malformed placeholder', '{{steps.b}}', 'step "a": {{steps.b}} must end in .output or .json[.<path>]: {{steps.<name>.output}}'],
    ['an unknown root', '{{env.HOME}}', 'step "a": {{env.HOME}} is not a known reference'],
  ];
  it.each(references)('refuses a reference to %s, at the template', async (_label, template, message) => {
    const name = `ref-${template.replace(/\W+/g, '-').replace(/^-|-$/g, '').toLowerCase()}`;
    const text = pipeline(name, '  inputs: { x: {} }', '  steps:', step('a', ['type: claude', `prompt: "Say {{inputs.x}} ${template}"`]), step('b'));
    const problems = await problemsOf(load(name, text));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatchObject({ file: `${name}.yaml`, line: 7, column: 15 });
    expect(problems[0]!.message).toContain(message);
  });

  it('checks templates in when:, system, items, set_variable, transform, nested inputs and outputs', async () => {
    const text = pipeline(
      'template-fields',
      '  steps:',
      step('a', ['type: claude', 'prompt: hi', 'when: { any: ["{{vars.x}}", { not: "{{inputs.y}}" }] }', 'system: "{{steps.z.output}}"']),
      step('b', ['type: for_each', 'items: "{{inputs.list}}"', 'steps: [{ name: c, type: set_variable, variable: v, value: "{{loop.other}}" }]']),
      step('d', ['type: transform', 'input: "{{loop.item}}"', 'operations: [{ op: default, value: "{{vars.never}}" }]']),
      step('e', ['type: pipeline', 'pipeline: child', 'inputs: { q: "{{steps.e.output}}" }']),
      '  outputs:',
      '    out: "{{steps.missing.output}}"',
    );
    writeFileSync(join(dir, 'child.yaml'), pipeline('child', '  inputs: { q: {} }', '  steps:', step('a')));
    const problems = await problemsOf(load('template-fields', text));
    const messages = problems.map((problem) => `${problem.line}:${problem.column} ${problem.message}`);
    expect(messages).toEqual([
      `${where(text, '{ any:')} step "a": {{vars.x}} names variable "x", which no earlier set_variable step sets`,
      `${where(text, '{ any:')} step "a": {{inputs.y}} names input "y", which workflow.inputs does not declare`,
      `${where(text, '"{{steps.z.output}}"')} step "a": {{steps.z.output}} names step "z", which does not run before this one`,
      `${where(text, '"{{inputs.list}}"')} step "b": {{inputs.list}} names input "list", which workflow.inputs does not declare`,
      `${where(text, '"{{loop.other}}"')} step "c": {{loop.other}} names loop value "other" (this loop has item, index)`,
      `${where(text, '"{{loop.item}}"')} step "d": {{loop.item}} uses a loop value outside a for_each step`,
      `${where(text, '"{{vars.never}}"')} step "d": {{vars.never}} names variable "never", which no earlier set_variable step sets`,
      `${where(text, '"{{steps.e.output}}"')} step "e": {{steps.e.output}} refers to its own output`,
      `${where(text, '"{{steps.missing.output}}"')} outputs.out: {{steps.missing.output}} names a step that does not exist`,
    ]);
  });

  it('refuses outputs naming a step inside for_each, or a variable never set, when loading', async () => {
    const inner = pipeline(
      'outputs-inner',
      '  steps:',
      step('each', ['type: for_each', 'items: [1, 2]', 'steps: [{ name: inner, type: transform, input: "{{loop.item}}", operations: [{ op: trim }] }]']),
      '  outputs:',
      '    o: "{{steps.inner.output}}"',
    );
    expect((await problemsOf(load('outputs-inner', inner)))[0]).toMatchObject({ file: 'outputs-inner.yaml', line: 9, message: expect.stringContaining('inner') });
    const unset = pipeline('outputs-var', '  steps:', step('a'), '  outputs:', '    o: "{{vars.never}}"');
    expect((await problemsOf(load('outputs-var', unset)))[0]).toMatchObject({ file: 'outputs-var.yaml', line: 8, message: expect.stringContaining('never') });
  });

  it('refuses sibling references inside parallel, and accepts them after it', async () => {
    const problems = await problemsOf(
      load('parallel-refs', pipeline('parallel-refs', '  steps:', step('p', ['type: parallel', 'steps:', '  - { name: x, type: claude, prompt: hi }', '  - { name: y, type: claude, prompt: "{{steps.x.output}}" }']))),
    );
    expect(problems.map((problem) => problem.message)).toEqual(['step "y": {{steps.x.output}} names step "x", which does not run before this one']);
    await expect(
      load('parallel-after', pipeline('parallel-after', '  steps:', step('p', ['type: parallel', 'steps: [{ name: x, type: claude, prompt: hi }]']), step('q', ['type: claude', 'prompt: "{{steps.x.output}} {{steps.p.json.x}}"']))),
    ).resolves.toMatchObject({ name: 'parallel-after' });
  });

  it('names a duplicate step name, at the second one', async () => {
    const text = pipeline('duplicate', '  steps:', step('same'), step('other', ['type: parallel', 'steps: [{ name: same, type: claude, prompt: hi }]']));
    const problems = await problemsOf(load('duplicate', text));
    const [line, column] = where(text, 'name: same', 2, 'name: '.length).split(':').map(Number);
    expect(problems).toEqual([{ file: 'duplicate.yaml', line, column, message: 'duplicate step name "same"' }]);
  });

  it('refuses a cycle of nested pipelines, showing the chain', async () => {
    writeFileSync(join(dir, 'cycle-b.yaml'), pipeline('cycle-b', '  steps:', step('to_a', ['type: pipeline', 'pipeline: cycle-a'])));
    const problems = await problemsOf(load('cycle-a', pipeline('cycle-a', '  steps:', step('to_b', ['type: pipeline', 'pipeline: cycle-b']))));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatchObject({ file: 'cycle-a.yaml', line: 6, column: 17 });
    expect(problems[0]!.message).toBe('pipeline "cycle-b" is not valid: cycle-b.yaml:6:17: pipeline cycle: cycle-a -> cycle-b -> cycle-a');
    const self = await problemsOf(load('cycle-self', pipeline('cycle-self', '  steps:', step('again', ['type: pipeline', 'pipeline: cycle-self']))));
    expect(self).toEqual([{ file: 'cycle-self.yaml', line: 6, column: 17, message: 'pipeline cycle: cycle-self -> cycle-self' }]);
  });

  it('refuses a missing nested pipeline, and nested inputs the child does not have or needs', async () => {
    const missing = await problemsOf(load('nested-missing', pipeline('nested-missing', '  steps:', step('n', ['type: pipeline', 'pipeline: does-not-exist']))));
    expect(missing).toEqual([{ file: 'nested-missing.yaml', line: 6, column: 17, message: 'pipeline "does-not-exist" does not exist' }]);
    writeFileSync(join(dir, 'needs-q.yaml'), pipeline('needs-q', '  inputs: { q: { required: true } }', '  steps:', step('a', ['type: claude', 'prompt: "{{inputs.q}}"'])));
    const inputs = await problemsOf(load('nested-inputs', pipeline('nested-inputs', '  steps:', step('n', ['type: pipeline', 'pipeline: needs-q', 'inputs: { other: x }']))));
    expect(inputs.map((problem) => problem.message)).toEqual(['pipeline "needs-q" has no input "other"', 'pipeline "needs-q" needs input "q"']);
  });

  it('refuses pipelines nested deeper than 8', async () => {
    for (let level = 1; level <= 9; level += 1) {
      const body = level < 9 ? step('down', ['type: pipeline', `pipeline: deep-${level + 1}`]) : step('leaf');
      writeFileSync(join(dir, `deep-${level}.yaml`), pipeline(`deep-${level}`, '  steps:', body));
    }
    const problems = await problemsOf(loader.loadNamed('deep-1'));
    expect(problems[0]!.message).toContain('pipelines nest deeper than 8: deep-1 -> deep-2 -> deep-3 -> deep-4 -> deep-5 -> deep-6 -> deep-7 -> deep-8 -> deep-9');
  });

  it('refuses prompt files outside the pipelines folder: ../, absolute, and a symlink pointing out', async () => {
    const dotdot = await problemsOf(load('file-dotdot', pipeline('file-dotdot', '  steps:', step('a', ['type: claude', 'prompt:', '  - file: ../secret.txt']))));
    expect(dotdot).toEqual([{ file: 'file-dotdot.yaml', line: 7, column: 17, message: 'step "a": prompt file "../secret.txt" is outside the pipelines folder' }]);
    const absolute = join(root, 'secret.txt');
    const abs = await problemsOf(load('file-absolute', pipeline('file-absolute', '  steps:', step('a', ['type: claude', 'prompt:', `  - file: ${absolute}`]))));
    expect(abs).toEqual([{ file: 'file-absolute.yaml', line: 7, column: 17, message: `step "a": "${absolute}" is absolute; prompt files are named relative to the pipelines folder` }]);
    const link = await problemsOf(load('file-symlink', pipeline('file-symlink', '  steps:', step('a', ['type: claude', 'prompt:', '  - static: hi', '  - file: prompts/escape.md']))));
    expect(link).toEqual([{ file: 'file-symlink.yaml', line: 8, column: 17, message: 'step "a": prompt file "prompts/escape.md" is outside the pipelines folder' }]);
    const sneaky = await problemsOf(load('file-sneaky', pipeline('file-sneaky', '  steps:', step('a', ['type: claude', 'prompt: [{ file: prompts/../../secret.txt }]']))));
    expect(sneaky[0]!.message).toBe('step "a": prompt file "prompts/../../secret.txt" is outside the pipelines folder');
    const none = await problemsOf(load('file-missing', pipeline('file-missing', '  steps:', step('a', ['type: claude', 'prompt: [{ file: prompts/none.md }]']))));
    expect(none[0]!.message).toBe('step "a": prompt file "prompts/none.md" does not exist');
    await expect(load('file-ok', pipeline('file-ok', '  inputs: { x: {} }', '  steps:', step('a', ['type: claude', 'prompt: [{ file: prompts/ok.md }]'])))).resolves.toMatchObject({ name: 'file-ok' });
    await expect(loader.readPromptFile('prompts/ok.md')).resolves.toBe('Fine: {{inputs.x}}');
  });

  it('answers the same for a prompt file outside the folder whether it exists or not', async () => {
    mkdirSync(join(root, 'outside'), { recursive: true });
    writeFileSync(join(root, 'outside', 'there.md'), 'outside');
    symlinkSync(join(root, 'outside'), join(dir, 'prompts', 'out'));
    const messageFor = async (file: string) => {
      const [problem] = await problemsOf(loader.loadInline(pipeline('probe', '  steps:', step('a', ['type: claude', `prompt: [{ file: "${file}" }]`]))));
      return problem!.message.replace(file, '<file>');
    };
    const outside = 'step "a": prompt file "<file>" is outside the pipelines folder';
    // A name that leaves the folder, and a name inside that a linked folder leads out of.
    expect(await messageFor('../secret.txt')).toBe(outside);
    expect(await messageFor('../no-such-file.txt')).toBe(outside);
    expect(await messageFor('prompts/out/there.md')).toBe(outside);
    expect(await messageFor('prompts/out/not-there.md')).toBe(outside);
    expect(await messageFor('prompts/out/no-dir/not-there.md')).toBe(outside);
    expect(await messageFor('prompts/no-dir/not-there.md')).toBe('step "a": prompt file "<file>" does not exist');
  });

  it('fails reading a prompt file that went away with FAILED_PRECONDITION, naming it', async () => {
    writeFileSync(join(dir, 'prompts', 'brief.md'), 'brief');
    await expect(loader.readPromptFile('prompts/brief.md')).resolves.toBe('brief');
    rmSync(join(dir, 'prompts', 'brief.md'));
    const error = await loader.readPromptFile('prompts/brief.md').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(PromptFileError);
    expect(error).toMatchObject({ code: Status.FAILED_PRECONDITION, message: 'prompt file "prompts/brief.md" does not exist' });
    await expect(loader.readPromptFile('../secret.txt')).rejects.toMatchObject({ code: Status.FAILED_PRECONDITION, message: 'prompt file "../secret.txt" is outside the pipelines folder' });
  });

  it('refuses a prompt file that is a directory when loading', async () => {
    const problems = await problemsOf(load('file-directory', pipeline('file-directory', '  steps:', step('a', ['type: claude', 'prompt: [{ file: prompts }]']))));
    expect(problems[0]!.message).toContain('prompts');
  });

  it('refuses a workflow.name that is not the file name, at the name', async () => {
    const problems = await problemsOf(load('mismatch', pipeline('other-name', '  steps:', step('a'))));
    expect(problems).toEqual([{ file: 'mismatch.yaml', line: 2, column: 9, message: 'workflow.name is "other-name" but the file is mismatch.yaml' }]);
  });

  it('checks claude_robust fallbacks', async () => {
    const problems = await problemsOf(
      load('robust', pipeline('robust', '  steps:', step('a', ['type: claude_robust', 'fallback_action: default_output', 'prompt: hi']), step('b', ['type: claude_robust', 'fallback_action: fallback_model', 'prompt: hi']))),
    );
    expect(problems.map((problem) => `${problem.line}:${problem.column} ${problem.message}`)).toEqual([
      '6:24 step "a": fallback_action default_output needs default_output',
      '10:24 step "b": fallback_action fallback_model needs fallback_model',
    ]);
  });

  it('refuses more than 500 steps', async () => {
    const steps = Array.from({ length: 501 }, (_, index) => `    - { name: s${index}, type: claude, prompt: hi }`).join('\n');
    const problems = await problemsOf(load('too-many', pipeline('too-many', '  steps:', steps)));
    expect(problems).toEqual([{ file: 'too-many.yaml', line: 4, column: 5, message: '501 steps is over the limit of 500' }]);
  });

  it('refuses inline YAML over 256 KiB before parsing it', async () => {
    const text = pipeline('big', `  description: "${'x'.repeat(256 * 1024)}"`, '  steps:', step('a'));
    expect(await problemsOf(loader.loadInline(text))).toEqual([{ file: '<inline>', message: 'inline YAML is over 262144 bytes' }]);
    const justUnder = pipeline('big', `  description: "${'x'.repeat(255 * 1024)}"`, '  steps:', step('a'));
    await expect(loader.loadInline(justUnder)).resolves.toMatchObject({ name: 'big', file: '<inline>' });
  });

  it('reports inline problems as <inline>, with line and column', async () => {
    const problems = await problemsOf(loader.loadInline(pipeline('inline', '  steps:', step('a', ['type: claude', 'prompt: "{{inputs.q}}"']))));
    expect(problems).toEqual([{ file: '<inline>', line: 6, column: 15, message: 'step "a": {{inputs.q}} names input "q", which workflow.inputs does not declare' }]);
  });

  it('refuses an alias bomb without expanding it', async () => {
    const levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]'];
    for (let level = 1; level < 9; level += 1) {
      const previous = String.fromCharCode(96 + level);
      const name = String.fromCharCode(97 + level);
      levels.push(`${name}: &${name} [${Array(9).fill(`*${previous}`).join(',')}]`);
    }
    // Refused by its alias count; expanded, its 9^9 nodes would not fit in the test's time or memory.
    const problems = await problemsOf(loader.loadInline(`${levels.join('\n')}\n`));
    expect(problems[0]!.message).toContain('malformed YAML: Excessive alias count');
  });
});

describe('PipelineLoader: the shipped pipelines', () => {
  const loader = new PipelineLoader(PIPELINES_DIR);

  it.each(shipped)('%s loads without problems', async (file) => {
    const loaded = await loader.loadNamed(file.slice(0, -'.yaml'.length));
    expect(loaded.name).toBe(file.slice(0, -'.yaml'.length));
    expect(loaded.file).toBe(file);
  });

  it('lists every shipped pipeline as valid', async () => {
    const listed = new Map((await loader.list()).map((entry) => [entry.name, entry]));
    expect(shipped.length).toBeGreaterThan(0);
    // Each problem names its file, line and column.
    const problems = shipped.flatMap((file) => {
      const entry = listed.get(file.slice(0, -'.yaml'.length));
      return !entry ? [`pipelines/${file}: not listed`] : entry.error ? [entry.error.message] : [];
    });
    expect(problems).toEqual([]);
  });
});
