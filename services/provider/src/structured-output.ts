import { Ajv, type ValidateFunction } from 'ajv';

const ajv = new Ajv({ allErrors: false, strict: false });
const compiled = new Map<string, ValidateFunction>();

/** Parses and compiles a request's JSON Schema; the error message says what is wrong with it. */
export function compileSchema(text: string): { schema: Record<string, unknown>; validate: ValidateFunction } {
  let schema: unknown;
  try {
    schema = JSON.parse(text);
  } catch (error) {
    throw new Error(`json_schema: not valid JSON: ${(error as Error).message}`);
  }
  if (!schema || typeof schema !== 'object' || Array.isArray(schema)) throw new Error('json_schema: expected a JSON Schema object');
  let validate = compiled.get(text);
  if (!validate) {
    try {
      validate = ajv.compile(schema as Record<string, unknown>);
    } catch (error) {
      throw new Error(`json_schema: not a usable JSON Schema: ${(error as Error).message}`);
    }
    if (compiled.size > 500) compiled.clear();
    compiled.set(text, validate);
  }
  return { schema: schema as Record<string, unknown>, validate };
}

/** The model's answer as validated JSON, or why it is not (a fenced ```json block is accepted). */
export function parseStructured(text: string, validate: ValidateFunction): { json: string; error: string } {
  const fenced = /^\s*```(?:json)?\s*\n?([\s\S]*?)\n?```\s*$/i.exec(text);
  const candidate = (fenced ? fenced[1]! : text).trim();
  let value: unknown;
  try {
    value = JSON.parse(candidate);
  } catch (error) {
    return { json: '', error: `the answer is not valid JSON: ${(error as Error).message}` };
  }
  if (!validate(value)) {
    const first = validate.errors?.[0];
    return { json: '', error: `the answer does not match the schema: ${first ? `${first.instancePath || '(root)'} ${first.message}` : 'invalid'}` };
  }
  return { json: JSON.stringify(value), error: '' };
}
