// The route table: the shipped routes.yaml sends each kind of message where the design's
// determine_pipeline does, with the inputs each pipeline needs; a bad file is answered with its
// problems at file:line:col; the JSON Schema for editors is the generated one.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { PipelineLoader } from '@elexirion/executor';
import { RouteTable, decideRoute, type PipelineShape } from '@elexirion/agent';
import { formatProblem, type Problem } from '@elexirion/kit';
// @ts-expect-error -- a plain .mjs script without type declarations
import { ROUTES_SCHEMA_PATH, routesJsonSchemaText } from '../../../scripts/generate-routes-schema.mjs';

const PIPELINES_DIR = fileURLToPath(new URL('../../../pipelines/', import.meta.url));
const ROUTES_TEXT = readFileSync(`${PIPELINES_DIR}routes.yaml`, 'utf8');

function tableOf(text: string): RouteTable {
  const compiled = RouteTable.compile('routes.yaml', text);
  if ('problems' in compiled) throw new Error(compiled.problems.map(formatProblem).join('\n'));
  return compiled.table;
}

function problemsOf(text: string): string[] {
  const compiled = RouteTable.compile('routes.yaml', text);
  if ('table' in compiled) throw new Error('expected problems, the table compiled');
  return compiled.problems.map(formatProblem);
}

/** The shipped pipelines as the executor's ListPipelines describes them. */
async function shippedShapes(): Promise<Map<string, PipelineShape>> {
  const listed = await new PipelineLoader(PIPELINES_DIR).list();
  return new Map(
    listed.map(({ name, loaded }) => [
      name,
      {
        name,
        description: loaded?.pipeline.description ?? '',
        valid: loaded !== undefined,
        inputs: Object.entries(loaded?.pipeline.inputs ?? {}).map(([input, spec]) => ({ name: input, required: spec.required && spec.default === undefined })),
      },
    ]),
  );
}

describe('the shipped routes.yaml', () => {
  const table = tableOf(ROUTES_TEXT);

  it.each([
    ['please refactor this', 'refactor', 'refactor', 'code'],
    ['Can you REFACTOR my parser?', 'refactor', 'refactor', 'code'],
    ['some refactoring, please', 'refactor', 'refactor', 'code'],
    ['analyze this function', 'analyze', 'analysis', 'code'],
    ['Please analyse: def f(): pass', 'analyze', 'analysis', 'code'],
    ['generate a CSV parser in Go', 'generate', 'generate', 'spec'],
    ['hello there', 'general', 'general', 'message'],
    // Whole words only: a keyword inside another word is not a hit.
    ['the prefactored value', 'general', 'general', 'message'],
    ['regenerate the token', 'general', 'general', 'message'],
    ['reanalyzed', 'general', 'general', 'message'],
  ])('routes %j by rule %s to pipeline %s, the message in its %s input', (message, rule, pipeline, input) => {
    const match = table.match(message);
    expect(match.route.name).toBe(rule);
    expect(match.route.pipeline).toBe(pipeline);
    expect(match.matchedBy).toBe(rule === 'general' ? 'default' : 'rule');
    expect(match.inputs).toEqual({ [input]: message });
  });

  it('tries rules in the file\'s order: the first that matches decides, wherever its word is in the message', () => {
    expect(table.match('analyze it, then refactor and generate tests').route.name).toBe('analyze');
    expect(table.match('refactor it, then analyze').route.name).toBe('analyze');
    expect(table.match('generate tests, then refactor').route.name).toBe('refactor');
  });

  it('says why: the keyword, or that no rule matched', () => {
    expect(table.match('Analyse this').reason).toBe('keyword "analyse"');
    expect(table.match('good morning').reason).toBe('no rule matched');
  });

  it('fills the refactor goal from the pattern\'s named group', () => {
    const message = 'Refactor this class to use dependency injection. Thanks!';
    const match = table.match(message);
    expect(match.route.name).toBe('refactor');
    expect(match.reason).toMatch(/^pattern /);
    expect(match.inputs).toEqual({ code: message, goal: 'use dependency injection' });
  });

  it('gives every pipeline it routes to the inputs that pipeline requires, and names only pipelines that exist', async () => {
    expect(table.checkPipelines(await shippedShapes()).map(formatProblem)).toEqual([]);
  });

  it('has a rule for each of the design\'s routes and a default to general', () => {
    expect(table.routes.map((route) => `${route.name} -> ${route.pipeline}`)).toEqual(['analyze -> analysis', 'refactor -> refactor', 'generate -> generate', 'general -> general']);
  });
});

describe('decideRoute without a classifier', () => {
  const table = tableOf(ROUTES_TEXT);

  it('lets an explicit pipeline win, with the input a route to it names', async () => {
    const choice = await decideRoute(table, 'analyze this', { pipeline: 'refactor' });
    expect(choice).toEqual({
      pipeline: 'refactor',
      inputs: { code: 'analyze this' },
      decision: { pipeline: 'refactor', matchedBy: 'explicit', rule: '', confidence: 0, reason: 'the request named the pipeline' },
    });
    expect((await decideRoute(table, 'x', { pipeline: 'triage' })).inputs).toEqual({ message: 'x' });
  });

  it('answers a rule hit and the default with the rule\'s name', async () => {
    expect((await decideRoute(table, 'please refactor this', {})).decision).toEqual({ pipeline: 'refactor', matchedBy: 'rule', rule: 'refactor', confidence: 0, reason: 'keyword "refactor"' });
    expect((await decideRoute(table, 'hi', {})).decision).toEqual({ pipeline: 'general', matchedBy: 'default', rule: 'general', confidence: 0, reason: 'no rule matched' });
  });
});

describe('a bad routes.yaml', () => {
  it('names a misspelt field where it is written, with what it may have meant', () => {
    expect(problemsOf('rules:\n  - name: a\n    keywords: [x]\n    pipline: general\ndefault: { pipeline: general }\n')).toEqual([
      'routes.yaml:2:5: rules.0.pipeline: required, and missing',
      'routes.yaml:4:5: rules.0: unknown field "pipline"; did you mean "pipeline"?',
    ]);
    expect(problemsOf('rules: []\ndefualt: { pipeline: general }\n')).toEqual(['routes.yaml:1:1: default: required, and missing', 'routes.yaml:2:1: (root): unknown field "defualt"; did you mean "default"?']);
  });

  it('refuses a regular expression that does not compile, at the pattern', () => {
    expect(problemsOf('rules:\n  - name: a\n    pipeline: general\n    patterns:\n      - ok\n      - "(unclosed"\ndefault: { pipeline: general }\n')).toEqual([
      'routes.yaml:6:9: rules.0.patterns.1: Invalid regular expression: /(unclosed/iu: Unterminated group',
    ]);
  });

  it('refuses a rule that can match nothing, duplicate names, and bad names', () => {
    expect(problemsOf('rules:\n  - name: a\n    pipeline: general\ndefault: { pipeline: general }\n')).toEqual(['routes.yaml:2:5: rules.0: a rule needs keywords or patterns (or both)']);
    expect(problemsOf('rules:\n  - { name: a, keywords: [x], pipeline: general }\n  - { name: a, keywords: [y], pipeline: general }\ndefault: { name: a, pipeline: general }\n')).toEqual([
      'routes.yaml:3:13: rules.1.name: "a" is already the name of rules.0',
      'routes.yaml:4:18: default.name: "a" is already the name of rules.0',
    ]);
    expect(problemsOf('rules: []\ndefault: { pipeline: "../etc", input: "1x" }\n')).toEqual([
      'routes.yaml:2:22: default.pipeline: expected a pipeline name (lowercase letters, digits, _ and -, at most 64)',
      'routes.yaml:2:39: default.input: expected an input name (letters, digits and _, not starting with a digit)',
    ]);
  });

  it('refuses malformed YAML and a document that is not a mapping, with positions', () => {
    expect(problemsOf('rules: [\n')[0]).toMatch(/^routes\.yaml:2:1: malformed YAML: /);
    expect(problemsOf('- a\n')).toEqual(['routes.yaml:1:1: expected a mapping with "rules" and "default"']);
  });

  it('reports routes to pipelines that do not exist, inputs they lack, and required inputs left empty', async () => {
    const table = tableOf(
      [
        'rules:',
        '  - { name: a, keywords: [x], pipeline: refactr, input: code }',
        '  - { name: b, keywords: [y], pipeline: refactor }',
        '  - { name: c, keywords: [z], pipeline: generate, input: spec, inputs: { langauge: Go } }',
        '  - { name: d, patterns: ["for (?<topic>\\\\w+)"], pipeline: general }',
        'default: { pipeline: general }',
      ].join('\n'),
    );
    const problems: Problem[] = table.checkPipelines(await shippedShapes());
    expect(problems.map(formatProblem)).toEqual([
      'routes.yaml:2:41: route "a": pipeline "refactr" does not exist; did you mean "refactor"?',
      // No input: written: the rule itself.
      'routes.yaml:3:5: route "b": pipeline "refactor" has no input "message"',
      'routes.yaml:3:41: route "b": pipeline "refactor" needs input "code", which the route does not fill (input: or inputs:)',
      'routes.yaml:4:72: route "c": pipeline "generate" has no input "langauge"; did you mean "language"?',
      'routes.yaml:5:26: route "d": the named group "topic" fills no input of pipeline "general"',
    ]);
  });
});

describe('the JSON Schema for editors (pipelines/schema/routes.schema.json)', () => {
  const schema = JSON.parse(readFileSync(ROUTES_SCHEMA_PATH, 'utf8'));
  const validate = new Ajv2020({ allErrors: true }).compile(schema);

  it('is the file the generator writes now (run `npm run generate:routes-schema` after changing the format)', () => {
    expect(readFileSync(ROUTES_SCHEMA_PATH, 'utf8'), 'pipelines/schema/routes.schema.json is stale: run `npm run generate:routes-schema`').toBe(routesJsonSchemaText());
  });

  it('accepts the shipped routes.yaml, which names it on its first line, and refuses a misspelt field', () => {
    expect(ROUTES_TEXT.split('\n')[0]).toBe('# yaml-language-server: $schema=./schema/routes.schema.json');
    expect(validate(parse(ROUTES_TEXT)), JSON.stringify(validate.errors)).toBe(true);
    expect(validate(parse('rules: [{ name: a, keywords: [x], pipline: general }]\ndefault: { pipeline: general }'))).toBe(false);
  });
});
