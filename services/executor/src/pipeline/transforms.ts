import type { TransformOperation } from './schema.js';
import { TemplateError, asText, parsePath, walkPath } from './templates.js';

const MAX_ITEMS = 100_000;

function text(value: unknown): string {
  return asText(value);
}

function list(value: unknown, op: string): unknown[] {
  if (Array.isArray(value)) return value;
  if (typeof value === 'string') {
    try {
      const parsed = JSON.parse(value);
      if (Array.isArray(parsed)) return parsed;
    } catch {
      // not JSON: fall through
    }
  }
  throw new TemplateError(`${op}: expected a list, got ${typeof value === 'string' ? `text "${value.slice(0, 40)}"` : typeof value}`);
}

/** Applies declarative operations in order; no code runs, every failure says which operation. */
export function applyTransform(input: unknown, operations: TransformOperation[]): unknown {
  let value = input;
  operations.forEach((operation, index) => {
    const where = `operations[${index}] ${operation.op}`;
    switch (operation.op) {
      case 'trim':
        value = text(value).trim();
        break;
      case 'lowercase':
        value = text(value).toLowerCase();
        break;
      case 'uppercase':
        value = text(value).toUpperCase();
        break;
      case 'json_parse':
        try {
          value = JSON.parse(text(value));
        } catch (error) {
          throw new TemplateError(`${where}: not valid JSON: ${(error as Error).message}`);
        }
        break;
      case 'json_stringify':
        value = JSON.stringify(value);
        break;
      case 'json_path': {
        const source = typeof value === 'string' ? safeParse(value, where) : value;
        let path;
        try {
          path = parsePath(operation.path);
        } catch (error) {
          throw new TemplateError(`${where}: ${(error as Error).message}`);
        }
        value = walkPath(source, path, () => where);
        break;
      }
      case 'lines':
        value = text(value).split(/\r?\n/).map((line) => line.trim()).filter(Boolean);
        break;
      case 'split':
        value = text(value).split(operation.separator).slice(0, MAX_ITEMS);
        break;
      case 'join':
        value = list(value, where).map(text).join(operation.separator);
        break;
      case 'first':
        value = list(value, where)[0] ?? '';
        break;
      case 'last':
        value = list(value, where).at(-1) ?? '';
        break;
      case 'count':
        value = Array.isArray(value) ? value.length : text(value).length;
        break;
      case 'unique':
        value = [...new Map(list(value, where).map((item) => [JSON.stringify(item), item])).values()];
        break;
      case 'sort':
        value = [...list(value, where)].sort((a, b) => text(a).localeCompare(text(b)));
        break;
      case 'replace':
        value = text(value).split(operation.find).join(operation.with);
        break;
      case 'truncate':
        value = text(value).slice(0, operation.max);
        break;
      case 'prefix':
        value = operation.text + text(value);
        break;
      case 'suffix':
        value = text(value) + operation.text;
        break;
      case 'default':
        if (text(value).trim() === '') value = operation.value;
        break;
    }
  });
  return value;
}

function safeParse(value: string, where: string): unknown {
  try {
    return JSON.parse(value);
  } catch {
    throw new TemplateError(`${where}: the input is text, not JSON`);
  }
}
