import { ServerError, Status } from '@elexirion/kit';
import type { InputSpec } from '../pipeline/schema.js';

/**
 * Typed inputs from the request's strings: numbers and booleans parsed, lists and objects from
 * JSON; defaults filled; unknown or missing required inputs refused, naming the input.
 */
export function resolveInputs(pipeline: string, specs: Record<string, InputSpec>, given: Record<string, string>): Record<string, unknown> {
  const invalid = (message: string) => new ServerError(Status.INVALID_ARGUMENT, `${pipeline}: ${message}`);
  for (const name of Object.keys(given)) {
    if (!Object.hasOwn(specs, name)) {
      const known = Object.keys(specs);
      throw invalid(`inputs.${name}: the pipeline has no such input${known.length ? ` (it has ${known.join(', ')})` : ' (it takes none)'}`);
    }
  }
  const inputs: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(specs)) {
    if (Object.hasOwn(given, name)) {
      inputs[name] = coerce(given[name]!, spec.type, (why) => invalid(`inputs.${name}: ${why}`));
    } else if (spec.default !== undefined) {
      inputs[name] = spec.default;
    } else if (spec.required) {
      throw invalid(`inputs.${name}: required and not given`);
    }
  }
  return inputs;
}

function coerce(text: string, type: InputSpec['type'], fail: (why: string) => Error): unknown {
  const shown = JSON.stringify(text.length > 60 ? `${text.slice(0, 60)}…` : text);
  switch (type) {
    case 'string':
      return text;
    case 'number': {
      const value = Number(text.trim());
      if (text.trim() === '' || !Number.isFinite(value)) throw fail(`expected a number, got ${shown}`);
      return value;
    }
    case 'boolean': {
      const lowered = text.trim().toLowerCase();
      if (lowered === 'true') return true;
      if (lowered === 'false') return false;
      throw fail(`expected true or false, got ${shown}`);
    }
    case 'list':
    case 'object': {
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch {
        throw fail(`expected a JSON ${type === 'list' ? 'array' : 'object'}, got ${shown}`);
      }
      const ok = type === 'list' ? Array.isArray(value) : value !== null && typeof value === 'object' && !Array.isArray(value);
      if (!ok) throw fail(`expected a JSON ${type === 'list' ? 'array' : 'object'}, got ${shown}`);
      return value;
    }
  }
}
