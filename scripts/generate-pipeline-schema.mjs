#!/usr/bin/env node
// Writes pipelines/schema/pipeline.schema.json, the JSON Schema editors use for pipeline YAML
// (every pipeline starts with `# yaml-language-server: $schema=./schema/pipeline.schema.json`).
// It is generated from the executor's zod schema (the one definition of the format), so run it
// after building the executor: `npm run build` does, or `npm run generate:pipeline-schema`.
// The file is committed; services/executor/test/pipeline-format.test.ts fails when it is stale.
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { z } from 'zod';
import { pipelineDocument } from '@elexirion/executor';

export const SCHEMA_PATH = fileURLToPath(new URL('../pipelines/schema/pipeline.schema.json', import.meta.url));

const HEADER = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'urn:elexirion:pipeline.schema.json',
  title: 'Elexirion pipeline',
  description:
    'A YAML pipeline run by the Elexirion executor (generated from services/executor/src/pipeline/schema.ts by scripts/generate-pipeline-schema.mjs; do not edit). See docs/pipelines.md.',
};

/** zod names recursive parts `__schemaN`; these names say what they are. */
function defName(key, def) {
  if (Array.isArray(def.oneOf) && def.oneOf.some((option) => option?.properties?.type?.const === 'claude')) return 'step';
  if (Array.isArray(def.anyOf) && def.anyOf.some((option) => option?.properties?.equals)) return 'condition';
  return key;
}

function renameRefs(node, renames) {
  if (Array.isArray(node)) return node.map((item) => renameRefs(item, renames));
  if (node === null || typeof node !== 'object') return node;
  const out = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === '$ref' && typeof value === 'string' && value.startsWith('#/$defs/')) {
      const name = value.slice('#/$defs/'.length);
      out[key] = `#/$defs/${renames.get(name) ?? name}`;
    } else {
      out[key] = renameRefs(value, renames);
    }
  }
  return out;
}

/** The JSON Schema of a pipeline document, as an object. */
export function pipelineJsonSchema() {
  // io "input": what authors write, so fields with defaults are optional. Recursive parts
  // (steps inside parallel/for_each, nested conditions) become $defs with $ref. Anything zod
  // cannot express (z.custom, transforms) becomes {} (accept anything) instead of failing.
  const generated = z.toJSONSchema(pipelineDocument, { target: 'draft-2020-12', io: 'input', unrepresentable: 'any', cycles: 'ref', reused: 'inline' });
  const { $schema: _ignored, $defs = {}, ...body } = generated;
  const renames = new Map(Object.entries($defs).map(([key, def]) => [key, defName(key, def)]));
  if (new Set(renames.values()).size !== renames.size) throw new Error(`two $defs would get the same name: ${[...renames.values()].join(', ')}`);
  const defs = Object.fromEntries(Object.entries($defs).map(([key, def]) => [renames.get(key), renameRefs(def, renames)]));
  return { ...HEADER, ...renameRefs(body, renames), $defs: defs };
}

/** The file's exact text. */
export function pipelineJsonSchemaText() {
  return `${JSON.stringify(pipelineJsonSchema(), null, 2)}\n`;
}

async function main() {
  await mkdir(dirname(SCHEMA_PATH), { recursive: true });
  await writeFile(SCHEMA_PATH, pipelineJsonSchemaText());
  console.log(`wrote ${relative(process.cwd(), SCHEMA_PATH) || SCHEMA_PATH}`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error) => {
    console.error(`generate-pipeline-schema: ${error instanceof Error ? error.stack : error}`);
    process.exit(1);
  });
}
