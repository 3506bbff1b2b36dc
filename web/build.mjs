// Bundles the pages into dist/: one script and one stylesheet under dist/assets/, named with a
// hash of their content (served as immutable: a new build is a new name), and dist/index.html
// naming them (served no-cache). The gateway serves dist/ as it is; nothing is built at run time.
import { build } from 'esbuild';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(fileURLToPath(import.meta.url));
const out = join(root, 'dist');
rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, 'assets'), { recursive: true });

const result = await build({
  entryPoints: [join(root, 'src/main.tsx')],
  bundle: true,
  format: 'esm',
  target: 'es2022',
  minify: true,
  sourcemap: 'linked',
  jsx: 'automatic',
  jsxImportSource: 'preact',
  outdir: join(out, 'assets'),
  entryNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  metafile: true,
  legalComments: 'linked',
  logLevel: 'warning',
});

const outputs = Object.keys(result.metafile.outputs).map((file) => basename(file));
const script = outputs.find((file) => file.startsWith('main-') && file.endsWith('.js'));
const style = outputs.find((file) => file.startsWith('main-') && file.endsWith('.css'));
if (!script || !style) throw new Error(`web build: expected main-<hash>.js and main-<hash>.css, got ${outputs.join(', ')}`);

// The page is a shell: main.tsx renders it. The inline-free markup lets the gateway's CSP allow
// scripts and styles from 'self' only.
const template = readFileSync(join(root, 'src/index.html'), 'utf8');
writeFileSync(join(out, 'index.html'), template.replace('{{script}}', `/assets/${script}`).replace('{{style}}', `/assets/${style}`));
writeFileSync(join(out, 'manifest.json'), JSON.stringify({ script, style, files: outputs }, null, 2) + '\n');
console.log(`web: built ${outputs.length} assets (${script}, ${style})`);
