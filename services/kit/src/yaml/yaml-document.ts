import { LineCounter, isMap, isScalar, parseDocument, type Document } from 'yaml';
import type { z } from 'zod';
import { fieldsAt } from './fields.js';
import { didYouMean } from './suggest.js';

// YAML files checked against a zod schema with positioned answers ("general.yaml:4:7: ..."): the
// one way the executor's pipelines and the agent's routes.yaml are read.

/** One thing wrong in a file, where it is. */
export interface Problem {
  file: string;
  line?: number;
  column?: number;
  message: string;
}

export function formatProblem(problem: Problem): string {
  return `${problem.file}${problem.line ? `:${problem.line}:${problem.column ?? 1}` : ''}: ${problem.message}`;
}

/** A parsed YAML file: its nodes (for positions) and its plain value. */
export interface YamlDocument {
  file: string;
  doc: Document;
  lines: LineCounter;
  raw: unknown;
}

export type YamlPosition = Pick<Problem, 'line' | 'column'>;

/** At most this many problems are told at once; the first ones are what an author fixes first. */
const MAX_PROBLEMS = 10;

/**
 * Parses `text` (duplicate keys refused, aliases bounded); the problems when it is not YAML or its
 * top level is not a mapping (`mappingExpected` says what the mapping should hold).
 */
export function parseYamlDocument(file: string, text: string, mappingExpected: string): { document: YamlDocument } | { problems: Problem[] } {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const problems: Problem[] = [];
  for (const error of doc.errors) {
    const pos = error.linePos?.[0] ?? lines.linePos(error.pos[0]);
    problems.push({ file, ...(pos ? { line: pos.line, column: pos.col } : {}), message: `malformed YAML: ${error.message.split('\n')[0]}` });
  }
  if (problems.length > 0) return { problems: problems.slice(0, MAX_PROBLEMS) };
  if (!isMap(doc.contents)) return { problems: [{ file, line: 1, column: 1, message: mappingExpected }] };
  try {
    return { document: { file, doc, lines, raw: doc.toJS({ maxAliasCount: 50 }) } };
  } catch (error) {
    return { problems: [{ file, line: 1, column: 1, message: `malformed YAML: ${(error as Error).message}` }] };
  }
}

/** A zod issue with a plain path, as the messages read it. */
export interface YamlIssue {
  code: string;
  message: string;
  path: (string | number)[];
  keys?: readonly string[];
}

/** Words for an issue the schema's own message says badly; undefined keeps zod's message. */
export type IssueDescriber = (issue: YamlIssue, raw: unknown, path: (string | number)[]) => string | undefined;

/**
 * The document checked against `schema`: its value, or each problem at its place, an unknown field
 * at the field itself with the allowed name it is closest to ("did you mean"), a missing one as
 * "required, and missing".
 */
export function validateYamlDocument<S extends z.ZodType>(schema: S, document: YamlDocument, describe?: IssueDescriber): { data: z.output<S> } | { problems: Problem[] } {
  const { file, raw } = document;
  const parsed = schema.safeParse(raw);
  if (parsed.success) return { data: parsed.data };
  const problems: Problem[] = [];
  for (const issue of parsed.error.issues.flatMap((issue) => withinUnion(issue as ZodIssueShape, [])).slice(0, MAX_PROBLEMS)) {
    const path = issue.path;
    const label = path.join('.') || '(root)';
    const unknown = unknownFields(schema, issue, raw, path);
    if (unknown) {
      for (const key of unknown.keys) problems.push({ file, ...keyPosition(document, path, key), message: `${label}: unknown field "${key}"${didYouMean(key, unknown.allowed)}` });
      continue;
    }
    const node = nodeAt(raw, path);
    const message = describe?.(issue, raw, path) ?? (node === undefined && issue.code !== 'unrecognized_keys' ? 'required, and missing' : issue.message);
    problems.push({ file, ...positionIn(document, path), message: `${label}: ${message}` });
  }
  return { problems };
}

/** Where the node at `path` starts, or its nearest existing ancestor. */
export function positionIn(document: YamlDocument, path: readonly (string | number)[]): YamlPosition {
  const { doc, lines } = document;
  for (let depth = path.length; depth >= 0; depth -= 1) {
    const node = doc.getIn(path.slice(0, depth), true) as { range?: [number, number, number] } | undefined;
    if (node && typeof node === 'object' && node.range) {
      const pos = lines.linePos(node.range[0]);
      return { line: pos.line, column: pos.col };
    }
  }
  return {};
}

/** Where the key `key` of the mapping at `path` is written. */
export function keyPosition(document: YamlDocument, path: readonly (string | number)[], key: string): YamlPosition {
  const map = document.doc.getIn(path, true);
  if (isMap(map)) {
    const pair = map.items.find((item) => isScalar(item.key) && item.key.value === key);
    const range = pair && isScalar(pair.key) ? pair.key.range : undefined;
    if (range) {
      const pos = document.lines.linePos(range[0]);
      return { line: pos.line, column: pos.col };
    }
  }
  return positionIn(document, path);
}

/** The plain value at `path`. */
export function nodeAt(document: unknown, path: readonly (string | number)[]): unknown {
  let node = document;
  for (const part of path) node = (node as Record<string | number, unknown> | undefined)?.[part];
  return node;
}

/** A zod issue, as far as the messages read it. */
interface ZodIssueShape {
  code: string;
  message: string;
  path: readonly PropertyKey[];
  keys?: readonly string[];
  errors?: readonly (readonly ZodIssueShape[])[];
}

/**
 * A value that matches no member of a union, told by the one member of its kind when only one
 * is (a list of prompt parts is not a string): its problems are nearer the mistake than
 * "Invalid input". Paths come out whole (the union's path, then the member's).
 */
function withinUnion(issue: ZodIssueShape, base: (string | number)[]): YamlIssue[] {
  const path = [...base, ...issue.path.filter((part): part is string | number => typeof part !== 'symbol')];
  const { errors } = issue;
  if (issue.code === 'invalid_union' && errors && errors.length > 0) {
    const sameKind = errors.filter((branch) => !branch.some((inner) => inner.code === 'invalid_type' && inner.path.length === 0));
    if (sameKind.length === 1) return sameKind[0]!.flatMap((inner) => withinUnion(inner, path));
  }
  return [{ code: issue.code, message: issue.message, path, ...(issue.keys ? { keys: issue.keys } : {}) }];
}

/**
 * The fields of the object at `path` that the format does not allow there, and the allowed ones
 * it does not have yet (what a misspelling may have meant): for an unknown key, and for an object
 * that matches no member of a union (a condition, a prompt part) because of one.
 */
function unknownFields(schema: z.ZodType, issue: YamlIssue, document: unknown, path: (string | number)[]): { keys: readonly string[]; allowed: string[] } | undefined {
  if (issue.code !== 'unrecognized_keys' && issue.code !== 'invalid_union') return undefined;
  const node = nodeAt(document, path);
  if (typeof node !== 'object' || node === null || Array.isArray(node)) return undefined;
  const fields = fieldsAt(schema, document, path);
  const keys = issue.code === 'unrecognized_keys' ? (issue.keys ?? []) : fields.size > 0 ? Object.keys(node).filter((key) => !fields.has(key)) : [];
  if (keys.length === 0) return undefined;
  return { keys, allowed: [...fields].filter((name) => !Object.hasOwn(node, name)) };
}
