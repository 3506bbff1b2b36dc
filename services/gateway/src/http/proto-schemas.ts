import { ScalarType, createFileRegistry, fromBinary, type DescEnum, type DescField, type DescMessage, type DescMethod, type FileRegistry } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema, type FileDescriptorProto } from '@bufbuild/protobuf/wkt';
import { descriptorSetBase64 } from '@elexirion/kit';

// JSON Schemas (draft 2020-12, the dialect of OpenAPI 3.1) of the contract's messages in the
// proto3 JSON mapping, built from the descriptor set the kit generates: the one source that the
// REST mirror validates requests with and that /openapi.json documents. Field names are the JSON
// names (camelCase); `normalizeFieldNames` maps the proto names (snake_case), which the mapping
// also accepts, onto them before validation.

export type JsonSchema = Record<string, unknown>;

/** Where message schemas live in the validator's root schema; OpenAPI's place is components.schemas. */
export const DEFS_PREFIX = '#/$defs/';

const TIMESTAMP = 'google.protobuf.Timestamp';

export interface ProtoSchemas {
  registry: FileRegistry;
  /** Every message reachable from the Gateway service, by full name. */
  defs: Record<string, JsonSchema>;
  /** A message's leading comment, a method's, or a field's (by their full names). */
  comment(fullName: string): string | undefined;
  method(service: string, name: string): DescMethod;
}

export const INTEGER = /^-?[0-9]+$/.source;
export const UNSIGNED = /^[0-9]+$/.source;
// Proto3 JSON accepts numbers, numeric strings and the three special values for float and double.
export const FLOATING = /^(NaN|-?Infinity|-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?)$/.source;

function scalarSchema(scalar: ScalarType): JsonSchema {
  switch (scalar) {
    case ScalarType.STRING:
      return { type: 'string' };
    case ScalarType.BOOL:
      return { type: 'boolean' };
    case ScalarType.BYTES:
      return { type: 'string', contentEncoding: 'base64' };
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return { type: ['number', 'string'], pattern: FLOATING };
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return { type: ['integer', 'string'], pattern: INTEGER, minimum: -(2 ** 31), maximum: 2 ** 31 - 1 };
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return { type: ['integer', 'string'], pattern: UNSIGNED, minimum: 0, maximum: 2 ** 32 - 1 };
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      // 64-bit integers: a decimal string (the mapping's form) or a JSON number.
      return { type: ['integer', 'string'], pattern: UNSIGNED, minimum: 0 };
    default:
      return { type: ['integer', 'string'], pattern: INTEGER };
  }
}

function enumSchema(desc: DescEnum): JsonSchema {
  return {
    type: ['string', 'integer'],
    // Names, as the mapping writes them; numbers are accepted too.
    enum: [...desc.values.map((value) => value.name), ...desc.values.map((value) => value.number)],
  };
}

function messageRef(desc: DescMessage): JsonSchema {
  if (desc.typeName === TIMESTAMP) return { type: 'string', format: 'date-time', description: 'RFC 3339, e.g. "2026-01-31T12:00:00Z"' };
  return { $ref: `${DEFS_PREFIX}${desc.typeName}` };
}

function fieldSchema(field: DescField): JsonSchema {
  switch (field.fieldKind) {
    case 'scalar':
      return scalarSchema(field.scalar);
    case 'enum':
      return enumSchema(field.enum);
    case 'message':
      return messageRef(field.message);
    case 'list': {
      const items = field.listKind === 'scalar' ? scalarSchema(field.scalar) : field.listKind === 'enum' ? enumSchema(field.enum) : messageRef(field.message);
      return { type: 'array', items };
    }
    case 'map': {
      const values = field.mapKind === 'scalar' ? scalarSchema(field.scalar) : field.mapKind === 'enum' ? enumSchema(field.enum) : messageRef(field.message);
      const keys = field.mapKey === ScalarType.STRING ? {} : field.mapKey === ScalarType.BOOL ? { propertyNames: { enum: ['true', 'false'] } } : { propertyNames: { pattern: INTEGER } };
      return { type: 'object', additionalProperties: values, ...keys };
    }
  }
}

/** Leading comments of a file's messages, fields, services and methods, by full name. */
function commentsOf(file: FileDescriptorProto, into: Map<string, string>): void {
  const byPath = new Map<string, string>();
  for (const location of file.sourceCodeInfo?.location ?? []) {
    const text = location.leadingComments?.trim();
    if (text) byPath.set(location.path.join('.'), text.replace(/\s*\n\s*/g, ' '));
  }
  const prefix = file.package ? `${file.package}.` : '';
  const walkMessage = (message: FileDescriptorProto['messageType'][number], path: number[], scope: string) => {
    const fullName = `${scope}${message.name}`;
    const own = byPath.get(path.join('.'));
    if (own) into.set(fullName, own);
    message.field.forEach((field, index) => {
      const text = byPath.get([...path, 2, index].join('.'));
      if (text) into.set(`${fullName}.${field.name}`, text);
    });
    message.nestedType.forEach((nested, index) => walkMessage(nested, [...path, 3, index], `${fullName}.`));
  };
  file.messageType.forEach((message, index) => walkMessage(message, [4, index], prefix));
  file.service.forEach((service, serviceIndex) => {
    service.method.forEach((method, index) => {
      const text = byPath.get([6, serviceIndex, 2, index].join('.'));
      if (text) into.set(`${prefix}${service.name}.${method.name}`, text);
    });
  });
}

function messageSchema(desc: DescMessage, comment: (fullName: string) => string | undefined): JsonSchema {
  const properties: Record<string, JsonSchema> = {};
  for (const field of desc.fields) {
    const schema = fieldSchema(field);
    const text = comment(`${desc.typeName}.${field.name}`);
    const alias = field.name === field.jsonName ? '' : ` (also accepted as "${field.name}")`;
    const oneof = field.oneof ? ` One of ${field.oneof.fields.map((member) => member.jsonName).join(', ')}.` : '';
    const description = `${text ?? ''}${alias}${oneof}`.trim();
    properties[field.jsonName] = description ? { ...schema, description } : schema;
  }
  const text = comment(desc.typeName);
  return { type: 'object', ...(text ? { description: text } : {}), properties, additionalProperties: false };
}

/** The schemas of every message the given service's calls use, directly or nested. */
export function buildProtoSchemas(serviceName: string): ProtoSchemas {
  const set = fromBinary(FileDescriptorSetSchema, Buffer.from(descriptorSetBase64, 'base64'));
  const registry = createFileRegistry(set);
  const comments = new Map<string, string>();
  for (const file of set.file) commentsOf(file, comments);
  const comment = (fullName: string) => comments.get(fullName);

  const service = registry.getService(serviceName);
  if (!service) throw new Error(`${serviceName} is not in the descriptor set`);
  const defs: Record<string, JsonSchema> = {};
  const visit = (desc: DescMessage) => {
    if (desc.typeName === TIMESTAMP || defs[desc.typeName]) return;
    defs[desc.typeName] = messageSchema(desc, comment);
    for (const field of desc.fields) {
      const nested = field.fieldKind === 'message' ? field.message : field.fieldKind === 'list' && field.listKind === 'message' ? field.message : field.fieldKind === 'map' && field.mapKind === 'message' ? field.message : undefined;
      if (nested) visit(nested);
    }
  };
  for (const method of service.methods) {
    visit(method.input);
    visit(method.output);
  }
  return {
    registry,
    defs,
    comment,
    method(serviceFullName, name) {
      const found = registry.getService(serviceFullName)?.methods.find((method) => method.name === name);
      if (!found) throw new Error(`${serviceFullName}.${name} is not in the descriptor set`);
      return found;
    },
  };
}

function nestedMessage(field: DescField): DescMessage | undefined {
  if (field.fieldKind === 'message') return field.message;
  if (field.fieldKind === 'list' && field.listKind === 'message') return field.message;
  if (field.fieldKind === 'map' && field.mapKind === 'message') return field.message;
  return undefined;
}

/**
 * `value` with each field given by its proto name ("session_id") renamed to its JSON name
 * ("sessionId"), recursively, as the proto3 JSON mapping accepts both. A field given under both
 * names is refused (INVALID_ARGUMENT through `fail`), naming where.
 */
export function normalizeFieldNames(desc: DescMessage, value: unknown, where: string, fail: (message: string) => never): unknown {
  if (typeof value !== 'object' || value === null || Array.isArray(value) || desc.typeName === TIMESTAMP) return value;
  const source = value as Record<string, unknown>;
  const result: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(source)) {
    const field = desc.fields.find((candidate) => candidate.jsonName === key || candidate.name === key);
    if (!field) {
      result[key] = item;
      continue;
    }
    if (key !== field.jsonName && field.jsonName in source) fail(`${where}.${key}: given twice (as "${field.jsonName}" and "${field.name}")`);
    const message = nestedMessage(field);
    let normalized = item;
    if (message) {
      const path = `${where}.${field.jsonName}`;
      if (field.fieldKind === 'list' && Array.isArray(item)) normalized = item.map((element, index) => normalizeFieldNames(message, element, `${path}.${index}`, fail));
      else if (field.fieldKind === 'map' && typeof item === 'object' && item !== null) {
        normalized = Object.fromEntries(Object.entries(item as Record<string, unknown>).map(([mapKey, element]) => [mapKey, normalizeFieldNames(message, element, `${path}.${mapKey}`, fail)]));
      } else if (field.fieldKind === 'message') normalized = normalizeFieldNames(message, item, path, fail);
    }
    result[field.jsonName] = normalized;
  }
  return result;
}

/** `schema` with references to message schemas pointing where OpenAPI keeps them. */
export function toOpenApiRefs<T>(schema: T): T {
  return JSON.parse(JSON.stringify(schema).replaceAll(`"$ref":"${DEFS_PREFIX}`, '"$ref":"#/components/schemas/')) as T;
}
