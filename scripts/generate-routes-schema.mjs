#!/usr/bin/env node
// Writes pipelines/schema/routes.schema.json, the JSON Schema editors use for the agent's
// pipelines/routes.yaml (its first line is `# yaml-language-server: $schema=./schema/routes.schema.json`).
// It is generated from the agent's zod schema (services/kit/src/routing/route-table.ts, the one
// definition of the format), so run it after building the agent: `npm run generate:routes-schema`.
// The file is committed; services/agent/test/routing-table.test.ts fails when it is stale.
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { z } from 'zod';
import { routeTableDocument } from '@elexirion/agent';

export const ROUTES_SCHEMA_PATH = fileURLToPath(new URL('../pipelines/schema/routes.schema.json', import.meta.url));

const HEADER = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'urn:elexirion:routes.schema.json',
  title: 'Elexirion agent routes',
  description:
    "The agent's route table, pipelines/routes.yaml: ordered rules sending a chat message to a pipeline (generated from services/kit/src/routing/route-table.ts by scripts/generate-routes-schema.mjs; do not edit). See docs/architecture.md, Routing.",
};

/** The JSON Schema of routes.yaml, as an object. */
export function routesJsonSchema() {
  // io "input": what authors write, so fields with defaults are optional; a refinement (a rule
  // needs keywords or patterns) is not expressible and is left to the agent's own check.
  const { $schema: _ignored, ...body } = z.toJSONSchema(routeTableDocument, { target: 'draft-2020-12', io: 'input', unrepresentable: 'any', reused: 'inline' });
  return { ...HEADER, ...body };
}

/** The file's exact text. */
export function routesJsonSchemaText() {
  return `${JSON.stringify(routesJsonSchema(), null, 2)}\n`;
}

async function main() {
  await mkdir(dirname(ROUTES_SCHEMA_PATH), { recursive: true });
  await writeFile(ROUTES_SCHEMA_PATH, routesJsonSchemaText());
  console.log(`wrote ${relative(process.cwd(), ROUTES_SCHEMA_PATH) || ROUTES_SCHEMA_PATH}`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error) => {
    console.error(`generate-routes-schema: ${error instanceof Error ? error.stack : error}`);
    process.exit(1);
  });
}
