import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { FLOATING, INTEGER, UNSIGNED, type JsonSchema } from './proto-schemas.js';

// ajv-formats is CommonJS; its default export arrives wrapped under ESM.
const addFormats = ((addFormatsModule as unknown as { default?: typeof addFormatsModule }).default ?? addFormatsModule) as unknown as (ajv: Ajv2020, formats: string[]) => Ajv2020;

const ROOT_ID = 'elexirion-proto';

/** What failed: each problem as "<where>.<field path>: <what is wrong>". */
export type Problems = string[];

/**
 * Validators of the messages' JSON forms, compiled once from the proto's schemas (ajv, draft
 * 2020-12). `check(typeName, value, where)` answers the problems, each naming the field.
 */
export class JsonValidator {
  private readonly ajv: Ajv2020;
  private readonly compiled = new Map<string, ValidateFunction>();

  constructor(defs: Record<string, JsonSchema>) {
    // allErrors: every wrong field at once; verbose: the offending value, to say what was received.
    this.ajv = new Ajv2020({ allErrors: true, verbose: true, strict: true, strictTypes: false });
    addFormats(this.ajv, ['date-time']);
    this.ajv.addSchema({ $id: ROOT_ID, $defs: defs });
  }

  check(typeName: string, value: unknown, where: string): Problems {
    let validate = this.compiled.get(typeName);
    if (!validate) {
      validate = this.ajv.compile({ $ref: `${ROOT_ID}#/$defs/${typeName}` });
      this.compiled.set(typeName, validate);
    }
    if (validate(value)) return [];
    return [...new Set((validate.errors ?? []).map((error) => describe(error, where)))];
  }
}

function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

function describe(error: ErrorObject, where: string): string {
  const path = `${where}${error.instancePath.split('/').slice(1).map((part) => `.${part.replaceAll('~1', '/').replaceAll('~0', '~')}`).join('')}`;
  switch (error.keyword) {
    case 'type': {
      const expected = [error.params.type as string | string[]].flat().join(' or ');
      // The wording of the zod-validated routes, so one API speaks one vocabulary.
      return `${path}: Invalid input: expected ${expected}, received ${kindOf(error.data)}`;
    }
    case 'additionalProperties':
      return `${path}.${String(error.params.additionalProperty)}: unknown field`;
    case 'enum': {
      const names = (error.params.allowedValues as unknown[]).filter((value) => typeof value === 'string');
      return `${path}: expected one of ${names.join(', ')}`;
    }
    case 'pattern': {
      // The number fields' patterns (numbers may come as decimal strings in the proto3 JSON mapping).
      const expected = error.schema === INTEGER ? 'an integer' : error.schema === UNSIGNED ? 'a non-negative integer' : error.schema === FLOATING ? 'a number' : `a string matching ${String(error.schema)}`;
      return `${path}: expected ${expected}, received "${String(error.data).slice(0, 40)}"`;
    }
    case 'format':
      return `${path}: expected an RFC 3339 timestamp such as "2026-01-31T12:00:00Z"`;
    default:
      return `${path}: ${error.message ?? 'invalid'}`;
  }
}
