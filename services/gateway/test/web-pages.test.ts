// How the gateway answers the built pages: the shell on each page path (no-cache, its CSP), the
// content-hashed assets (immutable, gzip, ETag), and a clear 503 when the pages were never built.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { WEB_PAGE_PATHS, webPages } from '../src/index.js';

const apps: FastifyInstance[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const app of apps.splice(0)) await app.close();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

async function serve(dir: string): Promise<FastifyInstance> {
  const app = Fastify();
  apps.push(app);
  const { plugin, prefix } = webPages(dir);
  await app.register(plugin, { prefix });
  return app;
}

function builtPages(): string {
  const dir = mkdtempSync(join(tmpdir(), 'elexirion-web-'));
  dirs.push(dir);
  mkdirSync(join(dir, 'assets'));
  writeFileSync(join(dir, 'index.html'), '<!doctype html><title>t</title><script type="module" src="/assets/main-ABC.js"></script>');
  writeFileSync(join(dir, 'assets', 'main-ABC.js'), 'console.log("page");'.repeat(50));
  return dir;
}

describe('web pages on the gateway', () => {
  it('answers the shell on every page path, revalidated, with a CSP that allows only its own scripts', async () => {
    const app = await serve(builtPages());
    for (const path of WEB_PAGE_PATHS.map((path) => path.replace(':jobId', 'a1b2'))) {
      const reply = await app.inject({ url: path });
      expect(reply.statusCode, path).toBe(200);
      expect(reply.headers['content-type']).toBe('text/html; charset=utf-8');
      expect(reply.headers['cache-control']).toBe('no-cache');
      expect(reply.headers['content-security-policy']).toContain("script-src 'self'");
      expect(reply.headers['content-security-policy']).not.toContain('unsafe-inline');
      expect(reply.body).toContain('/assets/main-ABC.js');
    }
    const first = await app.inject({ url: '/' });
    const again = await app.inject({ url: '/', headers: { 'if-none-match': String(first.headers.etag) } });
    expect(again.statusCode).toBe(304);
  });

  it('answers assets as immutable, gzipped when asked, and nothing outside the build', async () => {
    const app = await serve(builtPages());
    const plain = await app.inject({ url: '/assets/main-ABC.js' });
    expect(plain.statusCode).toBe(200);
    expect(plain.headers['cache-control']).toBe('public, max-age=31536000, immutable');
    expect(plain.headers['content-type']).toBe('text/javascript; charset=utf-8');
    const gzipped = await app.inject({ url: '/assets/main-ABC.js', headers: { 'accept-encoding': 'gzip, br' } });
    expect(gzipped.headers['content-encoding']).toBe('gzip');
    expect(gunzipSync(gzipped.rawPayload).toString()).toBe(plain.body);
    expect(gzipped.rawPayload.length).toBeLessThan(plain.rawPayload.length);
    for (const url of ['/assets/nope.js', '/assets/..%2Findex.html', '/assets/%2e%2e%2f%2e%2e%2fpackage.json']) {
      const reply = await app.inject({ url });
      expect(reply.statusCode, url).toBe(404);
      expect(reply.json()).toMatchObject({ error: { code: 'NOT_FOUND' } });
    }
  });

  it('says how to build the pages when they are not built', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'elexirion-web-none-'));
    dirs.push(dir);
    const app = await serve(dir);
    const reply = await app.inject({ url: '/dashboard' });
    expect(reply.statusCode).toBe(503);
    expect(reply.json().error.message).toMatch(/not built.*npm run build/);
  });
});
