// Unit tests of the pipeline language's pure parts: templates, `when:` conditions, transforms.
import { describe, expect, it } from 'vitest';
import { TemplateError, applyTransform, evaluateCondition, parsePath, referencesOf, renderTemplate } from '@elexirion/executor';
// resolveValue is not exported by the package (only renderTemplate is); it is tested from the
// source, with the source's TemplateError (a different class from the built package's).
import { TemplateError as SourceTemplateError, resolveValue } from '../src/pipeline/templates.js';

interface StepValue {
  output: string;
  json?: unknown;
  status: 'completed' | 'skipped' | 'failed';
}

function scope(parts: { inputs?: Record<string, unknown>; steps?: Record<string, StepValue>; vars?: Record<string, unknown>; loop?: Record<string, unknown> } = {}) {
  return {
    inputs: parts.inputs ?? {},
    steps: new Map(Object.entries(parts.steps ?? {})),
    vars: parts.vars ?? {},
    ...(parts.loop ? { loop: parts.loop } : {}),
  };
}

/** The TemplateError `fn` throws (fails the test when it throws nothing or something else). */
function templateError(fn: () => unknown, errorClass: new (...args: never[]) => Error = TemplateError): Error {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(errorClass);
    return error as Error;
  }
  throw new Error('expected a TemplateError, nothing was thrown');
}

const sample = scope({
  inputs: { topic: 'cats', count: 3, tags: ['a', 'b'], nested: { deep: { list: [{ x: 1 }, { x: 2 }] } }, flag: false },
  steps: {
    plain: { output: 'hello world', status: 'completed' },
    structured: { output: '{"plan":{"files":["a.ts","b.ts"]},"n":7}', json: { plan: { files: ['a.ts', 'b.ts'] }, n: 7 }, status: 'completed' },
    textjson: { output: '{"k":[10,20]}', status: 'completed' },
    skipped: { output: '', status: 'skipped' },
  },
  vars: { kind: 'bug', obj: { a: [1, 2] } },
});

describe('parsePath', () => {
  it('splits names, dots and [index]', () => {
    expect(parsePath('a')).toEqual(['a']);
    expect(parsePath('a.b.c')).toEqual(['a', 'b', 'c']);
    expect(parsePath('plan.files[0]')).toEqual(['plan', 'files', 0]);
    expect(parsePath('a[0][12].b')).toEqual(['a', 0, 12, 'b']);
    expect(parsePath('[3]')).toEqual([3]);
    expect(parsePath('with-dash_and_underscore')).toEqual(['with-dash_and_underscore']);
    expect(parsePath('')).toEqual([]);
  });

  it('refuses what is not a path, saying why', () => {
    expect(templateError(() => parsePath('a..b')).message).toBe('"a..b" is not a path (empty segment)');
    expect(templateError(() => parsePath('.a')).message).toBe('".a" is not a path (empty segment)');
    expect(templateError(() => parsePath('a.')).message).toBe('"a." is not a path (it ends with ".")');
    expect(templateError(() => parsePath('a[0]b')).message).toBe('"a[0]b" is not a path (missing "." before "b")');
    expect(templateError(() => parsePath('a b')).message).toContain('is not a path (use names, dots and [index])');
    expect(templateError(() => parsePath('a[x]')).message).toContain('"a[x]" is not a path');
    expect(templateError(() => parsePath('a[-1]')).message).toContain('is not a path');
    expect(templateError(() => parsePath('1abc')).message).toContain('is not a path');
    expect(templateError(() => parsePath('a()')).message).toContain('is not a path');
  });
});

describe('referencesOf', () => {
  it('finds every reference, in order, with its kind and path', () => {
    const refs = referencesOf('{{inputs.topic}} and {{ steps.plain.output }} then {{steps.structured.json.plan.files[1]}} {{vars.obj.a[0]}} {{loop.item}} {{loop.index}} {{loop.doc.title}}');
    expect(refs).toEqual([
      { kind: 'input', name: 'topic', path: [], text: 'inputs.topic' },
      { kind: 'step', step: 'plain', field: 'output', path: [], text: 'steps.plain.output' },
      { kind: 'step', step: 'structured', field: 'json', path: ['plan', 'files', 1], text: 'steps.structured.json.plan.files[1]' },
      { kind: 'var', name: 'obj', path: ['a', 0], text: 'vars.obj.a[0]' },
      { kind: 'loop', name: 'item', path: [], text: 'loop.item' },
      { kind: 'loop', name: 'index', path: [], text: 'loop.index' },
      { kind: 'loop', name: 'doc', path: ['title'], text: 'loop.doc.title' },
    ]);
  });

  it('finds nothing in plain text or single braces', () => {
    expect(referencesOf('no placeholders here')).toEqual([]);
    expect(referencesOf('{ not } {single} }} {{')).toEqual([]);
    expect(referencesOf('')).toEqual([]);
  });

  it('takes a whole step json as a reference without a path', () => {
    expect(referencesOf('{{steps.x.json}}')).toEqual([{ kind: 'step', step: 'x', field: 'json', path: [], text: 'steps.x.json' }]);
  });

  it('refuses malformed placeholders, quoting them', () => {
    const cases: [string, string][] = [
      ['{{steps.x}}', '{{steps.x}} must end in .output or .json[.<path>]: {{steps.<name>.output}}'],
      ['{{steps}}', '{{steps}} must name a step: {{steps.<name>.output}}'],
      ['{{steps.x.text}}', '{{steps.x.text}} must end in .output or .json[.<path>]'],
      ['{{steps.x.output.y}}', '{{steps.x.output.y}} cannot index .output (use .json.<path>)'],
      ['{{steps.x[0].output}}', '{{steps.x[0].output}} must end in .output or .json'],
      ['{{inputs}}', '{{inputs}} must name an input: {{inputs.<name>}}'],
      ['{{inputs[0]}}', '{{inputs[0]}} is not a known reference'],
      ['{{vars}}', '{{vars}} must name a variable: {{vars.<name>}}'],
      ['{{loop}}', '{{loop}} must name a loop value: {{loop.item}} or {{loop.index}}'],
      ['{{env.HOME}}', '{{env.HOME}} is not a known reference (use inputs.<name>, steps.<name>.output, steps.<name>.json.<path>, vars.<name> or loop.<name>)'],
      ['{{}}', '{{}} is not a known reference'],
      ['{{ 1 + 1 }}', 'is not a known reference'],
      ['{{process.exit()}}', 'is not a path'],
      ['{{inputs.a..b}}', '"a..b" is not a path (empty segment)'],
    ];
    for (const [template, message] of cases) expect(templateError(() => referencesOf(template)).message, template).toContain(message);
  });
});

describe('renderTemplate', () => {
  it('replaces every placeholder; values that are not text become JSON', () => {
    expect(renderTemplate('About {{inputs.topic}}: {{steps.plain.output}}', sample)).toBe('About cats: hello world');
    expect(renderTemplate('n={{inputs.count}} tags={{inputs.tags}} flag={{inputs.flag}}', sample)).toBe('n=3 tags=["a","b"] flag=false');
    expect(renderTemplate('{{steps.structured.json.plan.files[1]}} / {{steps.structured.json.plan}}', sample)).toBe('b.ts / {"files":["a.ts","b.ts"]}');
    expect(renderTemplate('{{inputs.nested.deep.list[1].x}}', sample)).toBe('2');
    expect(renderTemplate('{{vars.kind}} {{vars.obj.a}}', sample)).toBe('bug [1,2]');
    expect(renderTemplate('{{steps.skipped.output}}', sample)).toBe('');
    expect(renderTemplate('plain text', sample)).toBe('plain text');
  });

  it('parses a step output as JSON when the step has no json', () => {
    expect(renderTemplate('{{steps.textjson.json.k[1]}}', sample)).toBe('20');
    expect(renderTemplate('{{steps.textjson.json}}', sample)).toBe('{"k":[10,20]}');
  });

  it('reads loop values inside a loop', () => {
    const inLoop = scope({ loop: { item: { title: 'T' }, index: 2, doc: { title: 'T' } } });
    expect(renderTemplate('{{loop.index}}: {{loop.item.title}} {{loop.doc}}', inLoop)).toBe('2: T {"title":"T"}');
  });

  it('never evaluates what a value contains (a value with braces stays as it is)', () => {
    const tricky = scope({ inputs: { x: '{{inputs.y}}', y: 'secret' } });
    expect(renderTemplate('{{inputs.x}}', tricky)).toBe('{{inputs.y}}');
  });

  it('names what is missing', () => {
    const cases: [string, string][] = [
      ['{{inputs.nope}}', '{{inputs.nope}} names input "nope", which the run does not have'],
      ['{{steps.later.output}}', '{{steps.later.output}} names step "later", which has not run before this point'],
      ['{{vars.unset}}', '{{vars.unset}} names variable "unset", which is not set yet'],
      ['{{loop.item}}', '{{loop.item}} is only available inside a for_each step'],
      ['{{inputs.topic.length}}', '{{inputs.topic.length}}: no field "length"'],
      ['{{inputs.tags[5]}}', '{{inputs.tags[5]}}: no item [5]'],
      ['{{inputs.nested.deep.list[0].y}}', '{{inputs.nested.deep.list[0].y}}: no field "y"'],
      ['{{steps.plain.json.x}}', '{{steps.plain.json.x}}: step "plain" has no JSON output'],
      ['{{steps.structured.json.plan.missing}}', '{{steps.structured.json.plan.missing}}: no field "missing"'],
      ['{{inputs.constructor}}', 'names input "constructor"'],
      ['{{vars.obj.a.toString}}', 'no field "toString"'],
    ];
    for (const [template, message] of cases) {
      const error = templateError(() => renderTemplate(`before ${template} after`, sample));
      if (message.startsWith('{{')) expect(error.message, template).toBe(message);
      else expect(error.message, template).toContain(message);
    }
  });

  it('names a loop value the loop does not have', () => {
    const inLoop = scope({ loop: { item: 1, index: 0 } });
    expect(templateError(() => renderTemplate('{{loop.doc}}', inLoop)).message).toBe('{{loop.doc}} names loop value "doc", which this loop does not have');
  });

  it('does not follow inherited properties (no prototype access)', () => {
    expect(templateError(() => renderTemplate('{{inputs.__proto__}}', sample)).message).toContain('names input "__proto__"');
    expect(templateError(() => renderTemplate('{{vars.kind.constructor}}', sample)).message).toContain('no field "constructor"');
  });
});

describe('resolveValue', () => {
  it('keeps the value type of a template that is exactly one placeholder', () => {
    expect(resolveValue('{{inputs.tags}}', sample)).toEqual(['a', 'b']);
    expect(resolveValue('  {{ inputs.count }}  ', sample)).toBe(3);
    expect(resolveValue('{{inputs.flag}}', sample)).toBe(false);
    expect(resolveValue('{{steps.structured.json.plan}}', sample)).toEqual({ files: ['a.ts', 'b.ts'] });
    expect(resolveValue('{{steps.textjson.json.k}}', sample)).toEqual([10, 20]);
    expect(resolveValue('{{vars.obj}}', sample)).toEqual({ a: [1, 2] });
  });

  it('renders anything else to text', () => {
    expect(resolveValue('{{inputs.tags}} ', sample)).toEqual(['a', 'b']);
    expect(resolveValue('n={{inputs.count}}', sample)).toBe('n=3');
    expect(resolveValue('{{inputs.count}}{{inputs.count}}', sample)).toBe('33');
    expect(resolveValue('no placeholder', sample)).toBe('no placeholder');
    expect(resolveValue('', sample)).toBe('');
  });

  it('names a missing reference', () => {
    expect(templateError(() => resolveValue('{{inputs.nope}}', sample), SourceTemplateError).message).toBe('{{inputs.nope}} names input "nope", which the run does not have');
    expect(templateError(() => resolveValue('{{steps.nope.json}}', sample), SourceTemplateError).message).toBe('{{steps.nope.json}} names step "nope", which has not run before this point');
    expect(templateError(() => resolveValue('{{vars.nope}}', sample), SourceTemplateError).message).toBe('{{vars.nope}} names variable "nope", which is not set yet');
    expect(templateError(() => resolveValue('a {{loop.item}}', sample), SourceTemplateError).message).toBe('{{loop.item}} is only available inside a for_each step');
    expect(templateError(() => resolveValue('{{steps.x}}', sample), SourceTemplateError).message).toContain('{{steps.x}} must end in .output or .json');
  });
});

/**
 * evaluateCondition with any condition: the exported type says all/any/not hold only operator
 * objects, while the format (and the evaluator) also take template strings there.
 */
function evaluate(condition: unknown, where: ReturnType<typeof scope>): boolean {
  return evaluateCondition(condition as Parameters<typeof evaluateCondition>[0], where);
}

describe('evaluateCondition', () => {
  const s = scope({ inputs: { a: 'yes', n: '10', m: 9, empty: '', spaced: '  ', list: [], obj: {}, word: 'Hello world' }, vars: { kind: 'bug' } });

  it('a string is true unless it renders to "", "false", "0", "null", "[]" or "{}" (trimmed, any case)', () => {
    for (const text of ['yes', 'true', '1', 'no', 'anything', '{{inputs.a}}', ' x ', '00', '0.0', '[1]']) expect(evaluate(text, s), text).toBe(true);
    for (const text of ['false', 'FALSE', ' False ', '0', ' 0 ', 'null', 'NULL', '[]', '{}', '{{inputs.empty}}', '{{inputs.spaced}}', '{{inputs.list}}', '{{inputs.obj}}']) {
      expect(evaluate(text, s), text).toBe(false);
    }
  });

  it('equals and not_equals compare rendered text, trimmed', () => {
    expect(evaluate({ equals: ['{{vars.kind}}', 'bug'] }, s)).toBe(true);
    expect(evaluate({ equals: [' bug ', '{{vars.kind}}'] }, s)).toBe(true);
    expect(evaluate({ equals: ['{{vars.kind}}', 'Bug'] }, s)).toBe(false);
    expect(evaluate({ equals: ['{{inputs.m}}', '9'] }, s)).toBe(true);
    expect(evaluate({ not_equals: ['{{vars.kind}}', 'question'] }, s)).toBe(true);
    expect(evaluate({ not_equals: ['{{vars.kind}}', 'bug '] }, s)).toBe(false);
  });

  it('contains looks for the second text inside the first', () => {
    expect(evaluate({ contains: ['{{inputs.word}}', 'world'] }, s)).toBe(true);
    expect(evaluate({ contains: ['{{inputs.word}}', 'World'] }, s)).toBe(false);
    expect(evaluate({ contains: ['{{inputs.word}}', ''] }, s)).toBe(true);
  });

  it('greater_than and less_than compare numbers, not text', () => {
    expect(evaluate({ greater_than: ['{{inputs.n}}', '{{inputs.m}}'] }, s)).toBe(true); // "10" > "9" as numbers
    expect(evaluate({ less_than: ['{{inputs.n}}', '{{inputs.m}}'] }, s)).toBe(false);
    expect(evaluate({ less_than: [' 2.5 ', '3'] }, s)).toBe(true);
    expect(evaluate({ greater_than: ['-1', '-2'] }, s)).toBe(true);
    expect(evaluate({ greater_than: ['5', '5'] }, s)).toBe(false);
    expect(evaluate({ less_than: ['1e2', '101'] }, s)).toBe(true);
  });

  it('greater_than and less_than refuse what is not a number, naming the operator and the text', () => {
    expect(templateError(() => evaluate({ greater_than: ['{{inputs.a}}', '1'] }, s)).message).toBe('greater_than: "yes" is not a number');
    expect(templateError(() => evaluate({ greater_than: ['1', '{{inputs.empty}}'] }, s)).message).toBe('greater_than: "" is not a number');
    expect(templateError(() => evaluate({ less_than: ['Infinity', '1'] }, s)).message).toBe('less_than: "Infinity" is not a number');
    expect(templateError(() => evaluate({ less_than: ['1', 'NaN'] }, s)).message).toBe('less_than: "NaN" is not a number');
    expect(templateError(() => evaluate({ greater_than: ['{{inputs.list}}', '1'] }, s)).message).toBe('greater_than: "[]" is not a number');
  });

  it('empty and not_empty look at trimmed text', () => {
    expect(evaluate({ empty: '{{inputs.empty}}' }, s)).toBe(true);
    expect(evaluate({ empty: '{{inputs.spaced}}' }, s)).toBe(true);
    expect(evaluate({ empty: '{{inputs.a}}' }, s)).toBe(false);
    expect(evaluate({ not_empty: '{{inputs.a}}' }, s)).toBe(true);
    expect(evaluate({ not_empty: '  ' }, s)).toBe(false);
  });

  it('all, any and not combine and nest', () => {
    expect(evaluate({ all: ['yes', { equals: ['{{vars.kind}}', 'bug'] }] }, s)).toBe(true);
    expect(evaluate({ all: ['yes', 'false'] }, s)).toBe(false);
    expect(evaluate({ any: ['false', '0', { contains: ['abc', 'b'] }] }, s)).toBe(true);
    expect(evaluate({ any: ['false', '0'] }, s)).toBe(false);
    expect(evaluate({ not: 'false' }, s)).toBe(true);
    expect(evaluate({ not: { not: 'yes' } }, s)).toBe(true);
    expect(
      evaluate({ all: [{ any: [{ empty: '{{inputs.a}}' }, { not: { less_than: ['{{inputs.n}}', '5'] } }] }, { not_equals: ['{{vars.kind}}', 'question'] }] }, s),
    ).toBe(true);
  });

  it('all and any stop at the first deciding part', () => {
    // The second part would fail (not a number); it is never evaluated.
    expect(evaluate({ any: ['yes', { greater_than: ['x', '1'] }] }, s)).toBe(true);
    expect(evaluate({ all: ['false', { greater_than: ['x', '1'] }] }, s)).toBe(false);
  });

  it('a missing reference inside a condition is an error naming it', () => {
    expect(templateError(() => evaluate({ equals: ['{{steps.none.output}}', 'x'] }, s)).message).toContain('{{steps.none.output}} names step "none"');
    expect(templateError(() => evaluate({ all: ['yes', { not: '{{vars.nope}}' }] }, s)).message).toContain('{{vars.nope}} names variable "nope"');
  });
});

describe('applyTransform', () => {
  it('text operations: trim, lowercase, uppercase, prefix, suffix, replace, truncate', () => {
    expect(applyTransform('  Hi There  ', [{ op: 'trim' }])).toBe('Hi There');
    expect(applyTransform('Hi There', [{ op: 'lowercase' }])).toBe('hi there');
    expect(applyTransform('Hi There', [{ op: 'uppercase' }])).toBe('HI THERE');
    expect(applyTransform('x', [{ op: 'prefix', text: '> ' }])).toBe('> x');
    expect(applyTransform('x', [{ op: 'suffix', text: '!' }])).toBe('x!');
    expect(applyTransform('a-b-c', [{ op: 'replace', find: '-', with: '+' }])).toBe('a+b+c');
    expect(applyTransform('a.b', [{ op: 'replace', find: '.', with: '' }])).toBe('ab'); // literal, not a pattern
    expect(applyTransform('abcdef', [{ op: 'truncate', max: 3 }])).toBe('abc');
    expect(applyTransform('ab', [{ op: 'truncate', max: 3 }])).toBe('ab');
  });

  it('text operations on a value that is not text use its JSON', () => {
    expect(applyTransform({ A: 1 }, [{ op: 'lowercase' }])).toBe('{"a":1}');
    expect(applyTransform(['x'], [{ op: 'prefix', text: 'list: ' }])).toBe('list: ["x"]');
  });

  it('json_parse, json_stringify and json_path', () => {
    expect(applyTransform('{"a":[1,{"b":"c"}]}', [{ op: 'json_parse' }])).toEqual({ a: [1, { b: 'c' }] });
    expect(applyTransform({ a: 1 }, [{ op: 'json_stringify' }])).toBe('{"a":1}');
    expect(applyTransform('text', [{ op: 'json_stringify' }])).toBe('"text"');
    expect(applyTransform('{"a":[1,{"b":"c"}]}', [{ op: 'json_path', path: 'a[1].b' }])).toBe('c');
    expect(applyTransform({ a: [1, 2] }, [{ op: 'json_path', path: 'a[0]' }])).toBe(1);
  });

  it('list operations: lines, split, join, first, last, count, unique, sort', () => {
    expect(applyTransform(' one \r\n\n two\nthree ', [{ op: 'lines' }])).toEqual(['one', 'two', 'three']);
    expect(applyTransform('a,b,,c', [{ op: 'split', separator: ',' }])).toEqual(['a', 'b', '', 'c']);
    expect(applyTransform(['a', 1, { b: 2 }], [{ op: 'join', separator: ' | ' }])).toBe('a | 1 | {"b":2}');
    expect(applyTransform('["a","b"]', [{ op: 'join', separator: '+' }])).toBe('a+b'); // a JSON list in text counts as a list
    expect(applyTransform(['x', 'y'], [{ op: 'first' }])).toBe('x');
    expect(applyTransform(['x', 'y'], [{ op: 'last' }])).toBe('y');
    expect(applyTransform([], [{ op: 'first' }])).toBe('');
    expect(applyTransform([], [{ op: 'last' }])).toBe('');
    expect(applyTransform(['x', 'y', 'z'], [{ op: 'count' }])).toBe(3);
    expect(applyTransform('four', [{ op: 'count' }])).toBe(4);
    expect(applyTransform(['b', 'a', 'b', { k: 1 }, { k: 1 }], [{ op: 'unique' }])).toEqual(['b', 'a', { k: 1 }]);
    expect(applyTransform(['pear', 'apple', 'fig'], [{ op: 'sort' }])).toEqual(['apple', 'fig', 'pear']);
    expect(applyTransform('[3,1,2]', [{ op: 'sort' }])).toEqual([1, 2, 3]);
  });

  it('default replaces blank values only', () => {
    expect(applyTransform('', [{ op: 'default', value: 'fallback' }])).toBe('fallback');
    expect(applyTransform('   ', [{ op: 'default', value: 'fallback' }])).toBe('fallback');
    expect(applyTransform(undefined, [{ op: 'default', value: 'fallback' }])).toBe('fallback');
    expect(applyTransform('kept', [{ op: 'default', value: 'fallback' }])).toBe('kept');
    expect(applyTransform([], [{ op: 'default', value: 'fallback' }])).toEqual([]); // "[]" is not blank
  });

  it('applies operations in order', () => {
    expect(
      applyTransform(' B\nA\nB \n', [{ op: 'lines' }, { op: 'unique' }, { op: 'sort' }, { op: 'join', separator: ', ' }, { op: 'lowercase' }, { op: 'prefix', text: '[' }, { op: 'suffix', text: ']' }]),
    ).toBe('[a, b]');
    expect(applyTransform('{"items":["x","y","z"]}', [{ op: 'json_path', path: 'items' }, { op: 'last' }, { op: 'uppercase' }])).toBe('Z');
  });

  it('says which operation failed and why', () => {
    const cases: [unknown, Parameters<typeof applyTransform>[1], string][] = [
      ['not json', [{ op: 'json_parse' }], 'operations[0] json_parse: not valid JSON: '],
      ['x', [{ op: 'trim' }, { op: 'json_path', path: 'a' }], 'operations[1] json_path: the input is text, not JSON'],
      ['{"a":1}', [{ op: 'json_path', path: 'b' }], 'operations[0] json_path: no field "b"'],
      ['[1]', [{ op: 'json_path', path: '[3]' }], 'operations[0] json_path: no item [3]'],
      ['plain text', [{ op: 'join', separator: ',' }], 'operations[0] join: expected a list, got text "plain text"'],
      [{ a: 1 }, [{ op: 'first' }], 'operations[0] first: expected a list, got object'],
      [42, [{ op: 'last' }], 'operations[0] last: expected a list, got number'],
      ['{"not":"a list"}', [{ op: 'unique' }], 'operations[0] unique: expected a list, got text'],
      ['x', [{ op: 'uppercase' }, { op: 'trim' }, { op: 'sort' }], 'operations[2] sort: expected a list, got text "X"'],
    ];
    for (const [input, operations, message] of cases) {
      expect(templateError(() => applyTransform(input, operations)).message, JSON.stringify(operations)).toContain(message);
    }
  });

  it('names the operation when a json_path has a malformed path', () => {
    expect(templateError(() => applyTransform('{"a":{"b":1}}', [{ op: 'json_path', path: 'a..b' }])).message).toContain('operations[0] json_path');
  });
});
