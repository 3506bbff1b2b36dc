import { createHash } from 'node:crypto';
import { z } from 'zod';
import { PIPELINE_NAME } from '../host/catalog.js';
import { didYouMean } from '../yaml/suggest.js';
import { parseYamlDocument, positionIn, validateYamlDocument, type Problem } from '../yaml/yaml-document.js';

// routes.yaml: the ordered rules that send a chat message to a pipeline, checked like a pipeline
// (zod, problems at file:line:col, "did you mean"), compiled once so matching a message is a few
// precompiled regular expressions and nothing else. In the kit because two services read the same
// file: the agent (which adds its classifier on top) and the gateway (its copy for when the agent
// is unavailable).

const INPUT_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const inputName = z.string().regex(INPUT_NAME, 'expected an input name (letters, digits and _, not starting with a digit)');
const pipelineName = z.string().regex(PIPELINE_NAME, 'expected a pipeline name (lowercase letters, digits, _ and -, at most 64)');
const ruleName = z.string().regex(PIPELINE_NAME, 'expected a rule name (lowercase letters, digits, _ and -, at most 64)');

/** Where a matched message goes: the pipeline, and which of its inputs get what. */
const target = {
  pipeline: pipelineName.describe('The pipeline a matching message runs (a file stem in the pipelines folder).'),
  input: inputName.default('message').describe('The pipeline input that receives the whole message (default "message").'),
  inputs: z.record(inputName, z.string()).default({}).describe('Fixed values for other inputs of the pipeline.'),
  description: z.string().optional().describe('What the rule is for, for people reading the file.'),
};

const routeRule = z
  .strictObject({
    name: ruleName.describe('Names the rule in answers (RouteDecision.rule) and logs.'),
    keywords: z
      .array(z.string().trim().min(1, 'a keyword cannot be empty'))
      .optional()
      .describe('Matches when the message holds any of these as whole words, case-insensitively ("clean up" is two words in a row).'),
    patterns: z
      .array(z.string().min(1, 'a pattern cannot be empty'))
      .optional()
      .describe('Matches when any of these JavaScript regular expressions (flags i and u) finds a match; named groups fill the pipeline inputs of the same name.'),
    ...target,
  })
  .refine((rule) => (rule.keywords?.length ?? 0) + (rule.patterns?.length ?? 0) > 0, { message: 'a rule needs keywords or patterns (or both)' });

const defaultRoute = z.strictObject({
  name: ruleName.default('default').describe('Names the route in answers when no rule matched.'),
  ...target,
});

/** The one definition of routes.yaml; the JSON Schema for editors is generated from it. */
export const routeTableDocument = z.strictObject({
  rules: z.array(routeRule).default([]).describe('Tried in order; the first rule that matches the message decides.'),
  default: defaultRoute.describe('Where a message that no rule matches goes.'),
});

export type RouteTableDocument = z.output<typeof routeTableDocument>;

/** How a pipeline's inputs look, as the executor's ListPipelines says. */
export interface PipelineShape {
  name: string;
  description: string;
  valid: boolean;
  inputs: { name: string; required: boolean }[];
}

export interface CompiledRoute {
  name: string;
  pipeline: string;
  input: string;
  inputs: Readonly<Record<string, string>>;
  /** Its place in the file, for problems found later (a pipeline that does not exist). */
  at: { pipeline: Omit<Problem, 'message'>; input: Omit<Problem, 'message'>; inputs: Omit<Problem, 'message'>; groups: Omit<Problem, 'message'> };
  /** Named groups of its patterns, which fill inputs of those names. */
  groups: readonly string[];
}

interface CompiledRule extends CompiledRoute {
  /** Every keyword as one expression; undefined without keywords. */
  keywords?: RegExp;
  patterns: readonly { source: string; regex: RegExp }[];
}

/** Which rule a message matched, and on what. */
export interface RuleMatch {
  route: CompiledRoute;
  /** `keyword "refactor"`, `pattern "..."`, or "no rule matched" for the default route. */
  reason: string;
  matchedBy: 'rule' | 'default';
  inputs: Record<string, string>;
}

/** Which text a table was compiled from: the first 12 hex digits of its sha256. */
export function revisionOf(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 12);
}

/** Letters, digits and _ in any script: what a keyword may not touch on either side. */
const WORD_CHAR = '[\\p{L}\\p{N}_]';

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
}

/** Keywords as one case-insensitive expression: whole words, longest first, inner spaces as any whitespace. */
function keywordRegex(keywords: readonly string[]): RegExp {
  const alternatives = [...new Set(keywords.map((keyword) => keyword.toLowerCase()))]
    .sort((a, b) => b.length - a.length)
    .map((keyword) => keyword.split(/\s+/).map(escapeRegex).join('\\s+'));
  return new RegExp(`(?<!${WORD_CHAR})(?:${alternatives.join('|')})(?!${WORD_CHAR})`, 'iu');
}

/** A checked, compiled routes.yaml. Matching never allocates a regular expression or does I/O. */
export class RouteTable {
  private constructor(
    private readonly rules: readonly CompiledRule[],
    readonly defaultRoute: CompiledRoute,
    /** sha256 of the file's text, first 12 hex digits: which table is in use, in logs and metrics. */
    readonly revision: string,
    readonly file: string,
  ) {}

  get ruleCount(): number {
    return this.rules.length;
  }

  /** Every route, rules in order then the default, for checks and the classifier's candidates. */
  get routes(): readonly CompiledRoute[] {
    return [...this.rules, this.defaultRoute];
  }

  /** The first rule the message matches (by a pattern, else a keyword), else the default route. */
  match(message: string): RuleMatch {
    for (const rule of this.rules) {
      // Patterns first: they are the more specific, and their named groups fill inputs.
      for (const pattern of rule.patterns) {
        const found = pattern.regex.exec(message);
        if (found) return { route: rule, matchedBy: 'rule', reason: `pattern ${JSON.stringify(pattern.source)}`, inputs: inputsFor(rule, message, found.groups) };
      }
      const word = rule.keywords?.exec(message);
      if (word) return { route: rule, matchedBy: 'rule', reason: `keyword "${word[0].toLowerCase()}"`, inputs: inputsFor(rule, message) };
    }
    return this.fallThrough(message, 'no rule matched');
  }

  /** The default route, with why it was taken. */
  fallThrough(message: string, reason: string): RuleMatch {
    return { route: this.defaultRoute, matchedBy: 'default', reason, inputs: inputsFor(this.defaultRoute, message) };
  }

  /** The first route to `pipeline` (rules in order, then the default), for a pipeline chosen otherwise. */
  routeTo(pipeline: string): CompiledRoute | undefined {
    return this.rules.find((rule) => rule.pipeline === pipeline) ?? (this.defaultRoute.pipeline === pipeline ? this.defaultRoute : undefined);
  }

  /**
   * Problems of the routes against the pipelines the executor has: a pipeline that does not exist
   * or is not valid, an input it does not declare, a required input no route fills.
   */
  checkPipelines(pipelines: ReadonlyMap<string, PipelineShape>): Problem[] {
    const problems: Problem[] = [];
    const known = [...pipelines.keys()];
    for (const route of this.routes) {
      const label = `route "${route.name}"`;
      const pipeline = pipelines.get(route.pipeline);
      if (!pipeline) {
        problems.push({ ...route.at.pipeline, message: `${label}: pipeline "${route.pipeline}" does not exist${didYouMean(route.pipeline, known)}` });
        continue;
      }
      if (!pipeline.valid) {
        problems.push({ ...route.at.pipeline, message: `${label}: pipeline "${route.pipeline}" is not valid` });
        continue;
      }
      const declared = new Set(pipeline.inputs.map((input) => input.name));
      const names = pipeline.inputs.map((input) => input.name);
      if (!declared.has(route.input)) problems.push({ ...route.at.input, message: `${label}: pipeline "${route.pipeline}" has no input "${route.input}"${didYouMean(route.input, names)}` });
      for (const name of Object.keys(route.inputs)) {
        if (!declared.has(name)) problems.push({ ...route.at.inputs, message: `${label}: pipeline "${route.pipeline}" has no input "${name}"${didYouMean(name, names)}` });
      }
      for (const group of route.groups) {
        if (!declared.has(group)) problems.push({ ...route.at.groups, message: `${label}: the named group "${group}" fills no input of pipeline "${route.pipeline}"${didYouMean(group, names)}` });
      }
      for (const input of pipeline.inputs) {
        if (input.required && input.name !== route.input && !Object.hasOwn(route.inputs, input.name)) {
          problems.push({ ...route.at.pipeline, message: `${label}: pipeline "${route.pipeline}" needs input "${input.name}", which the route does not fill (input: or inputs:)` });
        }
      }
    }
    return problems;
  }

  /** Checks and compiles routes.yaml's text; `file` names it in problems. */
  static compile(file: string, text: string): { table: RouteTable } | { problems: Problem[] } {
    const read = parseYamlDocument(file, text, 'expected a mapping with "rules" and "default"');
    if ('problems' in read) return read;
    const validated = validateYamlDocument(routeTableDocument, read.document);
    if ('problems' in validated) return validated;
    const document = read.document;
    const data = validated.data;
    const problems: Problem[] = [];
    const at = (path: (string | number)[]) => ({ file, ...positionIn(document, path) });
    const seen = new Map<string, number>();
    const rules: CompiledRule[] = data.rules.map((rule, index) => {
      const path = ['rules', index];
      const first = seen.get(rule.name);
      if (first !== undefined) problems.push({ ...at([...path, 'name']), message: `rules.${index}.name: "${rule.name}" is already the name of rules.${first}` });
      else seen.set(rule.name, index);
      const patterns: { source: string; regex: RegExp }[] = [];
      const groups = new Set<string>();
      rule.patterns?.forEach((source, patternIndex) => {
        try {
          const regex = new RegExp(source, 'iu');
          patterns.push({ source, regex });
          for (const group of namedGroups(source)) groups.add(group);
        } catch (error) {
          problems.push({ ...at([...path, 'patterns', patternIndex]), message: `rules.${index}.patterns.${patternIndex}: ${(error as Error).message}` });
        }
      });
      return {
        ...compiledRoute(rule, at, path),
        groups: [...groups],
        ...(rule.keywords?.length ? { keywords: keywordRegex(rule.keywords) } : {}),
        patterns,
      };
    });
    if (seen.has(data.default.name)) problems.push({ ...at(['default', 'name']), message: `default.name: "${data.default.name}" is already the name of rules.${seen.get(data.default.name)}` });
    if (problems.length > 0) return { problems };
    return { table: new RouteTable(rules, { ...compiledRoute(data.default, at, ['default']), groups: [] }, revisionOf(text), file) };
  }

  /** A table of the default route alone: every message to `pipeline`'s `message` input. */
  static only(pipeline: string): RouteTable {
    const nowhere = { file: '(none)' };
    const route: CompiledRoute = { name: 'default', pipeline, input: 'message', inputs: {}, groups: [], at: { pipeline: nowhere, input: nowhere, inputs: nowhere, groups: nowhere } };
    return new RouteTable([], route, 'none', '(none)');
  }
}

function compiledRoute(
  route: { name: string; pipeline: string; input: string; inputs: Record<string, string> },
  at: (path: (string | number)[]) => Omit<Problem, 'message'>,
  path: (string | number)[],
): Omit<CompiledRoute, 'groups'> {
  return {
    name: route.name,
    pipeline: route.pipeline,
    input: route.input,
    inputs: route.inputs,
    at: { pipeline: at([...path, 'pipeline']), input: at([...path, 'input']), inputs: at([...path, 'inputs']), groups: at([...path, 'patterns']) },
  };
}

/** The message in its input, the fixed inputs, and what named groups captured. */
export function inputsFor(route: CompiledRoute, message: string, groups?: Record<string, string | undefined>): Record<string, string> {
  const inputs: Record<string, string> = { ...route.inputs };
  if (groups) for (const [name, value] of Object.entries(groups)) if (value !== undefined) inputs[name] = value.trim();
  inputs[route.input] = message;
  return inputs;
}

/** The names of a pattern's named groups `(?<name>...)` (not lookbehinds `(?<=`, `(?<!`). */
function namedGroups(source: string): string[] {
  return [...source.matchAll(/(?<!\\)\(\?<([A-Za-z_$][\w$]*)>/g)].map((found) => found[1]!);
}
