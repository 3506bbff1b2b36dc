import { ElexirionError, Status } from '@elexirion/kit';

/**
 * Templates: `{{inputs.x}}`, `{{steps.<name>.output}}`, `{{steps.<name>.json.<path>}}`,
 * `{{vars.x}}` (and a path), `{{loop.item}}`, `{{loop.index}}`, `{{loop.<as>}}`. Nothing else:
 * no expressions, no code. A reference to something missing is an error naming it.
 */
export class TemplateError extends ElexirionError {
  override readonly name = 'TemplateError';
  constructor(message: string) {
    super(Status.INVALID_ARGUMENT, message);
  }
}

export type Reference =
  | { kind: 'input'; name: string; path: PathSegment[]; text: string }
  | { kind: 'step'; step: string; field: 'output' | 'json'; path: PathSegment[]; text: string }
  | { kind: 'var'; name: string; path: PathSegment[]; text: string }
  | { kind: 'loop'; name: string; path: PathSegment[]; text: string };

export type PathSegment = string | number;

const PLACEHOLDER = /\{\{([^{}]*)\}\}/g;
const IDENTIFIER = /^[A-Za-z_][\w-]*$/;

/** "a.b[0].c" -> ["a", "b", 0, "c"]; throws on anything else. */
export function parsePath(text: string): PathSegment[] {
  const segments: PathSegment[] = [];
  const pattern = /([A-Za-z_][\w-]*)|\[(\d+)\]|(\.)/gy;
  let expectName = true;
  let match: RegExpExecArray | null;
  let position = 0;
  while (position < text.length) {
    pattern.lastIndex = position;
    match = pattern.exec(text);
    if (!match) throw new TemplateError(`"${text}" is not a path (use names, dots and [index])`);
    if (match[1] !== undefined) {
      if (!expectName) throw new TemplateError(`"${text}" is not a path (missing "." before "${match[1]}")`);
      segments.push(match[1]);
      expectName = false;
    } else if (match[2] !== undefined) {
      segments.push(Number(match[2]));
      expectName = false;
    } else {
      if (expectName) throw new TemplateError(`"${text}" is not a path (empty segment)`);
      expectName = true;
    }
    position = pattern.lastIndex;
  }
  if (expectName && text.length > 0) throw new TemplateError(`"${text}" is not a path (it ends with ".")`);
  return segments;
}

/** Parses one placeholder's content into a reference. */
export function parseReference(raw: string): Reference {
  const text = raw.trim();
  const firstDot = text.indexOf('.');
  const root = firstDot < 0 ? text : text.slice(0, firstDot);
  const rest = firstDot < 0 ? '' : text.slice(firstDot + 1);
  const path = rest ? parsePath(rest) : [];
  const fail = (why: string): never => {
    throw new TemplateError(`{{${text}}} ${why}`);
  };
  switch (root) {
    case 'inputs': {
      const [name, ...more] = path;
      if (typeof name !== 'string') fail('must name an input: {{inputs.<name>}}');
      return { kind: 'input', name: name as string, path: more, text };
    }
    case 'vars': {
      const [name, ...more] = path;
      if (typeof name !== 'string') fail('must name a variable: {{vars.<name>}}');
      return { kind: 'var', name: name as string, path: more, text };
    }
    case 'loop': {
      const [name, ...more] = path;
      if (typeof name !== 'string') fail('must name a loop value: {{loop.item}} or {{loop.index}}');
      return { kind: 'loop', name: name as string, path: more, text };
    }
    case 'steps': {
      const [step, field, ...more] = path;
      if (typeof step !== 'string' || !IDENTIFIER.test(step)) fail('must name a step: {{steps.<name>.output}}');
      if (field !== 'output' && field !== 'json') fail('must end in .output or .json[.<path>]: {{steps.<name>.output}}');
      if (field === 'output' && more.length > 0) fail('cannot index .output (use .json.<path>)');
      return { kind: 'step', step: step as string, field: field as 'output' | 'json', path: more, text };
    }
    default:
      return fail('is not a known reference (use inputs.<name>, steps.<name>.output, steps.<name>.json.<path>, vars.<name> or loop.<name>)');
  }
}

/** Every reference in a template, in order; throws TemplateError on a malformed one. */
export function referencesOf(template: string): Reference[] {
  const found: Reference[] = [];
  for (const match of template.matchAll(PLACEHOLDER)) found.push(parseReference(match[1]!));
  return found;
}

export interface StepValue {
  output: string;
  json?: unknown;
  status: 'completed' | 'skipped' | 'failed';
}

/** What templates can see while a step runs. */
export interface Scope {
  inputs: Record<string, unknown>;
  steps: ReadonlyMap<string, StepValue>;
  vars: Record<string, unknown>;
  loop?: Record<string, unknown>;
}

export function walkPath(value: unknown, path: PathSegment[], describe: () => string): unknown {
  let current = value;
  for (const segment of path) {
    if (typeof segment === 'number') {
      if (!Array.isArray(current) || segment >= current.length) throw new TemplateError(`${describe()}: no item [${segment}]`);
      current = current[segment];
    } else {
      if (current === null || typeof current !== 'object' || Array.isArray(current) || !Object.hasOwn(current, segment)) {
        throw new TemplateError(`${describe()}: no field "${segment}"`);
      }
      current = (current as Record<string, unknown>)[segment];
    }
  }
  return current;
}

/** The value a reference points at, or TemplateError saying what is missing. */
export function resolveReference(reference: Reference, scope: Scope): unknown {
  const describe = () => `{{${reference.text}}}`;
  switch (reference.kind) {
    case 'input':
      if (!Object.hasOwn(scope.inputs, reference.name)) throw new TemplateError(`${describe()} names input "${reference.name}", which the run does not have`);
      return walkPath(scope.inputs[reference.name], reference.path, describe);
    case 'var':
      if (!Object.hasOwn(scope.vars, reference.name)) throw new TemplateError(`${describe()} names variable "${reference.name}", which is not set yet`);
      return walkPath(scope.vars[reference.name], reference.path, describe);
    case 'loop':
      if (!scope.loop) throw new TemplateError(`${describe()} is only available inside a for_each step`);
      if (!Object.hasOwn(scope.loop, reference.name)) throw new TemplateError(`${describe()} names loop value "${reference.name}", which this loop does not have`);
      return walkPath(scope.loop[reference.name], reference.path, describe);
    case 'step': {
      const step = scope.steps.get(reference.step);
      if (!step) throw new TemplateError(`${describe()} names step "${reference.step}", which has not run before this point`);
      if (reference.field === 'output') return step.output;
      if (step.json === undefined) {
        let parsed: unknown;
        try {
          parsed = JSON.parse(step.output);
        } catch {
          throw new TemplateError(`${describe()}: step "${reference.step}" has no JSON output`);
        }
        return walkPath(parsed, reference.path, describe);
      }
      return walkPath(step.json, reference.path, describe);
    }
  }
}

/** Text for a value: strings as they are, everything else as JSON. */
export function asText(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value === undefined) return '';
  return JSON.stringify(value);
}

export function renderTemplate(template: string, scope: Scope): string {
  return template.replace(PLACEHOLDER, (_whole, raw: string) => asText(resolveReference(parseReference(raw), scope)));
}

/**
 * A template that is exactly one placeholder resolves to the value itself (a list stays a list);
 * anything else renders to text.
 */
export function resolveValue(template: string, scope: Scope): unknown {
  const only = /^\s*\{\{([^{}]*)\}\}\s*$/.exec(template);
  if (only) return resolveReference(parseReference(only[1]!), scope);
  return renderTemplate(template, scope);
}
