import { dereference, validate, type OutputUnit, type Schema, type SchemaDraft } from '@cfworker/json-schema';
import { Ajv } from 'ajv';
import { LRUCache } from 'lru-cache';
import { ElexirionError, Status } from '@elexirion/kit';

/** A request's json_schema that cannot be used: INVALID_ARGUMENT, and the message says why. */
export class JsonSchemaError extends ElexirionError {
  override readonly name = 'JsonSchemaError';
  constructor(message: string, options?: ErrorOptions) {
    super(Status.INVALID_ARGUMENT, `json_schema: ${message}`, options);
  }
}

/** A request's schema ready to check answers; it resolves `$ref`s only within itself. */
export class SchemaValidator {
  constructor(
    private readonly schema: Schema,
    private readonly draft: SchemaDraft,
    private readonly lookup: Record<string, Schema | boolean>,
  ) {}

  /** Why a value does not match, outermost first; empty when it does. */
  errors(value: unknown): OutputUnit[] {
    return validate(value, this.schema, this.draft, this.lookup).errors;
  }
}

/**
 * Checks a schema's own shape against the draft-07 meta-schema. Its one validator is compiled
 * once; a caller's schema is only ever data to it, so no `$id` of one request reaches another.
 *
 * Answers are validated by @cfworker/json-schema, which interprets a schema instead of
 * generating code: Ajv compiles each schema with `new Function`, and V8 keeps every such source
 * and its bytecode in its eval cache until the heap nears its limit, so distinct schemas held
 * about 85 KB each even after Ajv let go of them (3,000 schemas: 260 MB).
 */
const metaSchemas = new Ajv({ strict: false });
const DRAFT_07 = 'http://json-schema.org/draft-07/schema';

/** Where a schema's relative `$id`s and `$ref`s resolve; dropped again from what a caller is told. */
const BASE_URI = new URL('https://json-schema.invalid/');

/** Drafts by `$schema`; without one a schema is draft-07, as it was with Ajv. */
const DRAFTS: Record<string, SchemaDraft> = {
  'http://json-schema.org/draft-04/schema': '4',
  'http://json-schema.org/draft-07/schema': '7',
  'https://json-schema.org/draft/2019-09/schema': '2019-09',
  'https://json-schema.org/draft/2020-12/schema': '2020-12',
};

/**
 * Validators by schema text, least recently used dropped first, bounded by count and by the
 * schemas' total length, so neither many schemas nor a few huge ones hold memory for good.
 * Requests with the same text share one; a validator resolves `$ref`s only within its schema.
 */
const validators = new LRUCache<string, SchemaValidator>({
  max: 500,
  maxSize: 8_000_000,
  sizeCalculation: (_validator, text) => Math.max(1, text.length),
});

/** Parses and compiles a request's JSON Schema; a JsonSchemaError says what is wrong with it. */
export function compileSchema(text: string): { schema: Record<string, unknown>; validator: SchemaValidator } {
  let schema: unknown;
  try {
    schema = JSON.parse(text);
  } catch (error) {
    throw new JsonSchemaError(`not valid JSON: ${(error as Error).message}`);
  }
  if (!schema || typeof schema !== 'object' || Array.isArray(schema)) throw new JsonSchemaError('expected a JSON Schema object');
  let validator = validators.get(text);
  if (!validator) {
    validator = compileIsolated(schema as Schema);
    validators.set(text, validator);
  }
  return { schema: schema as Record<string, unknown>, validator };
}

function compileIsolated(schema: Schema): SchemaValidator {
  try {
    if (!metaSchemas.validate(DRAFT_07, schema)) {
      throw new JsonSchemaError(`not a usable JSON Schema: ${metaSchemas.errorsText(metaSchemas.errors, { dataVar: 'schema' })}`);
    }
    const declared = typeof schema.$schema === 'string' ? schema.$schema.replace(/#$/, '') : undefined;
    const draft = declared === undefined ? '7' : DRAFTS[declared];
    if (!draft) throw new JsonSchemaError(`$schema "${schema.$schema}" is not a draft this service knows (${Object.keys(DRAFTS).join(', ')})`);
    // The lookup of `$id`s and pointers is this schema's alone.
    const lookup = dereference(schema, undefined, BASE_URI);
    checkReferences(lookup);
    return new SchemaValidator(schema, draft, lookup);
  } catch (error) {
    if (error instanceof JsonSchemaError) throw error;
    if (error instanceof RangeError) throw new JsonSchemaError('not a usable JSON Schema: it is nested too deeply', { cause: error });
    throw new JsonSchemaError(`not a usable JSON Schema: ${(error as Error).message.replaceAll(BASE_URI.href, '')}`, { cause: error });
  }
}

/**
 * Every `$ref` must resolve within the schema itself, and no chain of `$ref`s and in-place
 * applicators (allOf, anyOf, oneOf, not, if/then/else, dependent schemas) may lead back to where
 * it started without moving into the value: such a schema never finishes validating (JSON Schema
 * 2020-12 core, 9.4.1), as `{"$ref": "#"}` does.
 */
function checkReferences(lookup: Record<string, Schema | boolean>): void {
  const target = (uri: string | undefined, ref: unknown): Schema | boolean => {
    const found = uri === undefined ? undefined : lookup[uri];
    if (found === undefined) throw new JsonSchemaError(`$ref "${String(ref)}" does not resolve within this schema`);
    return found;
  };
  const inPlace = (schema: Schema): (Schema | boolean)[] => {
    const next: (Schema | boolean)[] = [];
    if (schema.$ref !== undefined) next.push(target(schema.__absolute_ref__, schema.$ref));
    if (schema.$recursiveRef !== undefined) next.push(target(schema.__absolute_recursive_ref__, schema.$recursiveRef));
    for (const key of ['allOf', 'anyOf', 'oneOf'] as const) if (Array.isArray(schema[key])) next.push(...schema[key]);
    for (const key of ['not', 'if', 'then', 'else'] as const) if (schema[key] !== undefined) next.push(schema[key]);
    for (const key of ['dependentSchemas', 'dependencies'] as const) {
      const map = schema[key];
      if (map && typeof map === 'object') for (const value of Object.values(map)) if (!Array.isArray(value)) next.push(value as Schema);
    }
    return next;
  };
  // Depth-first over in-place edges: a schema met again while still on the path is a cycle.
  const onPath = new Set<Schema>();
  const done = new Set<Schema>();
  const visit = (schema: Schema | boolean): void => {
    if (typeof schema !== 'object' || schema === null || done.has(schema)) return;
    if (onPath.has(schema)) throw new JsonSchemaError('not a usable JSON Schema: it applies itself to the same value without end (a $ref cycle)');
    onPath.add(schema);
    for (const next of inPlace(schema)) visit(next);
    onPath.delete(schema);
    done.add(schema);
  };
  for (const schema of Object.values(lookup)) visit(schema);
}

/** The model's answer as validated JSON, or why it is not (a fenced ```json block is accepted). */
export function parseStructured(text: string, validator: SchemaValidator): { json: string; error: string } {
  const fenced = /^\s*```(?:json)?\s*\n?([\s\S]*?)\n?```\s*$/i.exec(text);
  const candidate = (fenced ? fenced[1]! : text).trim();
  let value: unknown;
  try {
    value = JSON.parse(candidate);
  } catch (error) {
    return { json: '', error: `the answer is not valid JSON: ${(error as Error).message}` };
  }
  try {
    const errors = validator.errors(value);
    if (errors.length > 0) return { json: '', error: `the answer does not match the schema: ${describe(errors)}` };
    return { json: JSON.stringify(value), error: '' };
  } catch (error) {
    // Checking and re-serializing recurse with the answer's depth.
    if (error instanceof RangeError) return { json: '', error: 'the answer is nested too deeply to check' };
    throw error;
  }
}

/** The first error that is not just "a subschema failed": where in the answer, and what. */
function describe(errors: OutputUnit[]): string {
  const index = errors.findIndex((error, at) => !errors[at + 1]?.keywordLocation.startsWith(`${error.keywordLocation}/`));
  const error = errors[Math.max(0, index)]!;
  return `${error.instanceLocation.replace(/^#/, '') || '(root)'}: ${error.error}`;
}
