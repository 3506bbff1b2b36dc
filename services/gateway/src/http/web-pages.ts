// The pages (web/: chat, jobs, prompts, dashboard) on the gateway's HTTP port. The build
// (web/build.mjs) leaves dist/index.html and content-hashed assets; they are read once at start
// into memory, gzipped, and answered from there: a fixed set of files, so no request ever names a
// path on disk, and an asset's name changes with its content, so it is cached as immutable.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, extname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { createHash } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Status, httpErrorBody, httpRoutes, type HttpRoutes, type OpenApiFragment } from '@elexirion/kit';

/** The paths that answer the page shell; the page's script picks what to show from the path. */
export const WEB_PAGE_PATHS = ['/', '/jobs', '/jobs/:jobId', '/prompts', '/dashboard'] as const;

/** The repository's web/dist, from this module's place in services/gateway/dist/http/. */
export const DEFAULT_WEB_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../../../web/dist');

// Scripts, styles and fetches from this origin only; nothing inline, no frames, no plugins. The
// model's output is rendered as sanitised Markdown, and this is the second line behind it.
const PAGE_SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.html': 'text/html; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.woff2': 'font/woff2',
};

interface WebFile {
  body: Buffer;
  gzipped: Buffer | undefined;
  type: string;
  etag: string;
}

function loadFile(path: string): WebFile {
  const body = readFileSync(path);
  const type = CONTENT_TYPES[extname(path)] ?? 'application/octet-stream';
  // Images and fonts are compressed already; text shrinks to a third or less.
  const gzipped = type.startsWith('text/') || type.startsWith('application/json') || type === 'image/svg+xml' ? gzipSync(body) : undefined;
  return { body, gzipped, type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"` };
}

/** The built pages in `dir`, or why there are none. */
export function loadWebPages(dir: string): { shell: WebFile; assets: Map<string, WebFile> } | { missing: string } {
  const index = join(dir, 'index.html');
  if (!existsSync(index)) return { missing: `the web pages are not built (no ${index}): run \`npm run build\`` };
  const assets = new Map<string, WebFile>();
  const assetDir = join(dir, 'assets');
  if (existsSync(assetDir)) for (const name of readdirSync(assetDir)) assets.set(name, loadFile(join(assetDir, name)));
  return { shell: loadFile(index), assets };
}

function send(request: FastifyRequest, reply: FastifyReply, file: WebFile, cacheControl: string): FastifyReply {
  void reply.headers(PAGE_SECURITY_HEADERS).header('cache-control', cacheControl).header('etag', file.etag).header('vary', 'accept-encoding').type(file.type);
  if (request.headers['if-none-match'] === file.etag) return reply.code(304).send();
  const acceptsGzip = file.gzipped !== undefined && /\bgzip\b/.test(String(request.headers['accept-encoding'] ?? ''));
  if (acceptsGzip) void reply.header('content-encoding', 'gzip');
  return reply.send(acceptsGzip ? file.gzipped : file.body);
}

const errorContent = { 'application/json': { schema: { $ref: '#/components/schemas/ErrorBody' } } };

/** The pages in /openapi.json: HTML for people, listed so the document names every route. */
const WEB_OPENAPI: OpenApiFragment = {
  paths: {
    ...Object.fromEntries(
      WEB_PAGE_PATHS.map((path) => [
        path.replace(/:([A-Za-z]+)/g, '{$1}'),
        {
          get: {
            operationId: `webPage${path === '/' ? 'Chat' : path.replace(/\/:?([a-z])([A-Za-z]*)/g, (_match, first: string, rest: string) => first.toUpperCase() + rest)}`,
            summary: `The web page ${path} (the one page shell; its script shows the page for the path).`,
            tags: ['Web pages'],
            ...(path.includes(':') ? { parameters: [{ name: 'jobId', in: 'path', required: true, schema: { type: 'string' } }] } : {}),
            responses: {
              '200': { description: 'the page', content: { 'text/html': { schema: { type: 'string' } } } },
              '304': { description: 'not modified (If-None-Match)' },
              '503': { description: 'the pages are not built', content: errorContent },
            },
          },
        },
      ]),
    ),
    '/assets/{name}': {
      get: {
        operationId: 'webAsset',
        summary: "A built page asset (script, style, source map), named by its content's hash: cached as immutable.",
        tags: ['Web pages'],
        parameters: [{ name: 'name', in: 'path', required: true, schema: { type: 'string' } }],
        responses: {
          '200': { description: 'the asset', content: { 'text/javascript': { schema: { type: 'string' } }, 'text/css': { schema: { type: 'string' } } } },
          '304': { description: 'not modified (If-None-Match)' },
          '404': { description: 'no such asset', content: errorContent },
        },
      },
    },
  },
};

/** The page routes and /assets/*, or (no build) the same routes answering 503 with what to do. */
export function webPages(dir: string): HttpRoutes {
  const loaded = loadWebPages(dir);
  return httpRoutes('', async (app) => {
    for (const url of WEB_PAGE_PATHS) {
      app.get(url, { schema: { hide: true } }, async (request, reply) => {
        if ('missing' in loaded) return reply.code(503).send(httpErrorBody(Status.UNAVAILABLE, loaded.missing));
        // Revalidated on every load (its ETag makes that a 304), so a new build is picked up at once.
        return send(request, reply, loaded.shell, 'no-cache');
      });
    }
    app.get<{ Params: { name: string } }>('/assets/:name', { schema: { hide: true } }, async (request, reply) => {
      const file = 'missing' in loaded ? undefined : loaded.assets.get(request.params.name);
      if (!file) return reply.code(404).send(httpErrorBody(Status.NOT_FOUND, `no asset ${request.params.name}`));
      return send(request, reply, file, 'public, max-age=31536000, immutable');
    });
  }, WEB_OPENAPI);
}
