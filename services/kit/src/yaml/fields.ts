/**
 * The field names a YAML format allows at a place in a document, read from the zod schema
 * itself (so they never drift from it), for "did you mean" on a misspelt field (pipelines, routes.yaml).
 */
import type { z } from 'zod';

/** The parts of a zod 4 schema definition this walk reads (`schema._zod.def`). */
interface Definition {
  type: string;
  shape?: Record<string, z.ZodType>;
  getter?: () => z.ZodType;
  innerType?: z.ZodType;
  in?: z.ZodType;
  element?: z.ZodType;
  valueType?: z.ZodType;
  options?: z.ZodType[];
  discriminator?: string;
  values?: unknown[];
}

const WRAPPERS = new Set(['optional', 'default', 'prefault', 'nullable', 'readonly', 'catch', 'nonoptional']);

function definitionOf(schema: z.ZodType): Definition {
  let current = schema;
  for (let depth = 0; depth < 32; depth += 1) {
    const def = (current as unknown as { _zod: { def: Definition } })._zod.def;
    if (def.type === 'lazy' && def.getter) current = def.getter();
    else if (WRAPPERS.has(def.type) && def.innerType) current = def.innerType;
    else if (def.type === 'pipe' && def.in) current = def.in;
    else return def;
  }
  return { type: 'unknown' };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The field names an object at `path` of `document` may have under `schema`: of the one union
 * member a discriminator selects, or of every object member of a plain union. Empty when the
 * place is not an object in the format.
 */
export function fieldsAt(schema: z.ZodType, document: unknown, path: readonly (string | number)[]): Set<string> {
  const fields = new Set<string>();
  const visit = (current: z.ZodType, node: unknown, rest: readonly (string | number)[]) => {
    const def = definitionOf(current);
    if (def.type === 'union' && def.options) {
      let options = def.options;
      if (def.discriminator && isRecord(node)) {
        const value = node[def.discriminator];
        const chosen = options.filter((option) => definitionOf(option).shape?.[def.discriminator!] && (definitionOf(definitionOf(option).shape![def.discriminator!]!).values ?? []).includes(value));
        if (chosen.length > 0) options = chosen;
      }
      for (const option of options) visit(option, node, rest);
      return;
    }
    if (rest.length === 0) {
      if (def.type === 'object' && def.shape) for (const name of Object.keys(def.shape)) fields.add(name);
      return;
    }
    const [head, ...tail] = rest;
    const child = isRecord(node) || Array.isArray(node) ? (node as Record<string | number, unknown>)[head!] : undefined;
    if (def.type === 'object' && def.shape && typeof head === 'string' && Object.hasOwn(def.shape, head)) visit(def.shape[head]!, child, tail);
    else if (def.type === 'array' && def.element) visit(def.element, child, tail);
    else if (def.type === 'record' && def.valueType) visit(def.valueType, child, tail);
  };
  visit(schema, document, path);
  return fields;
}
