// routes.yaml reloaded without a restart: a good edit is put in use and logged with its rule count,
// a bad one keeps the table in use and logs each problem at file:line:col, a ConfigMap-style
// symlink swap is seen, and a file missing or invalid at start stops the start naming why.
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { AGENT_ROUTE_FILE_NAMING, RouteFile, revisionOf, type PipelineShape } from '@elexirion/agent';
import { ConfigError } from '@elexirion/kit';
import { waitFor } from '@elexirion/testing';
import { recordingLogger } from '@elexirion/testing/fixtures';

const GOOD = 'rules:\n  - { name: fix, keywords: [fix], pipeline: general }\ndefault: { pipeline: general }\n';
const BETTER = 'rules:\n  - { name: fix, keywords: [fix], pipeline: general }\n  - { name: mend, keywords: [mend], pipeline: general }\ndefault: { pipeline: general }\n';
const BAD = 'rules:\n  - { name: fix, keywords: [fix], pipeline: general, patterns: ["(x"] }\ndefault: { pipeline: general }\n';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0).reverse()) cleanup();
});

function folder(): string {
  const dir = mkdtempSync(join(tmpdir(), 'elexirion-routes-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function open(path: string, pipelines?: Map<string, PipelineShape>) {
  const { logger, logs } = recordingLogger();
  const registry = new Registry();
  const tables: string[] = [];
  const file = new RouteFile(path, { ...AGENT_ROUTE_FILE_NAMING, pollMs: 200, debounceMs: 20, logger: logger as never, registry, pipelines: () => pipelines, onTable: (table) => tables.push(table.revision) });
  cleanups.push(() => file.close());
  file.start();
  return { file, logs, registry, tables };
}

describe('RouteFile', () => {
  it('puts a good edit in use, keeps the table in use through a bad one (logging each problem where it is), and takes the next good one', async () => {
    const path = join(folder(), 'routes.yaml');
    writeFileSync(path, GOOD);
    const { file, logs, registry, tables } = open(path);
    expect(file.current.revision).toBe(revisionOf(GOOD));
    expect(logs).toContainEqual(expect.objectContaining({ level: 'info', message: 'route table loaded: 1 rules', fields: expect.objectContaining({ revision: revisionOf(GOOD), rules: 1 }) }));

    writeFileSync(path, BAD);
    const rejected = await waitFor('the bad file rejected', () => logs.find((log) => log.message === 'routes file rejected: keeping the route table in use'));
    expect(rejected.level).toBe('error');
    expect(rejected.fields).toMatchObject({ file: path, inUse: revisionOf(GOOD), problems: ['routes.yaml:2:65: rules.0.patterns.0: Invalid regular expression: /(x/iu: Unterminated group'] });
    expect(file.current.revision).toBe(revisionOf(GOOD));
    expect(file.current.match('please fix it').route.name).toBe('fix');

    writeFileSync(path, BETTER);
    await waitFor('the good file in use', () => file.current.revision === revisionOf(BETTER));
    expect(file.current.match('mend it').route.name).toBe('mend');
    expect(logs).toContainEqual(expect.objectContaining({ level: 'info', message: 'route table reloaded: 2 rules' }));
    expect(tables).toEqual([revisionOf(GOOD), revisionOf(BETTER)]);
    // Each bad text is told once, however often the file is looked at.
    expect(logs.filter((log) => log.message.startsWith('routes file rejected'))).toHaveLength(1);

    const metrics = await registry.metrics();
    expect(metrics).toContain(`elexirion_agent_route_table_info{revision="${revisionOf(BETTER)}"} 1`);
    expect(metrics).not.toContain(`revision="${revisionOf(GOOD)}"`);
    expect(metrics).toContain('elexirion_agent_route_table_rules 2');
    expect(metrics).toContain('elexirion_agent_route_table_reloads_total{result="applied"} 1');
    expect(metrics).toContain('elexirion_agent_route_table_reloads_total{result="rejected"} 1');
  });

  it('refuses a reload naming a pipeline the executor does not have, when it knows its pipelines', async () => {
    const path = join(folder(), 'routes.yaml');
    writeFileSync(path, GOOD);
    const pipelines = new Map([['general', { name: 'general', description: '', valid: true, inputs: [{ name: 'message', required: true }] }]]);
    const { file, logs } = open(path, pipelines);
    writeFileSync(path, GOOD.replace('pipeline: general }\ndefault', 'pipeline: genral }\ndefault'));
    const rejected = await waitFor('the reload rejected', () => logs.find((log) => log.message.startsWith('routes file rejected')));
    expect(rejected.fields.problems).toEqual(['routes.yaml:2:45: route "fix": pipeline "genral" does not exist; did you mean "general"?']);
    expect(file.current.revision).toBe(revisionOf(GOOD));
  });

  it('keeps the table in use when the file goes away, saying so', async () => {
    const path = join(folder(), 'routes.yaml');
    writeFileSync(path, GOOD);
    const { file, logs } = open(path);
    rmSync(path);
    await waitFor('the missing file told', () => logs.find((log) => log.message === 'routes file cannot be read: keeping the route table in use'));
    expect(file.current.revision).toBe(revisionOf(GOOD));
  });

  it('sees a Kubernetes ConfigMap update (the ..data symlink swapped to a new folder)', async () => {
    const dir = folder();
    const version = (name: string, text: string) => {
      mkdirSync(join(dir, name));
      writeFileSync(join(dir, name, 'routes.yaml'), text);
    };
    version('..v1', GOOD);
    symlinkSync('..v1', join(dir, '..data'));
    symlinkSync('..data/routes.yaml', join(dir, 'routes.yaml'));
    const { file } = open(join(dir, 'routes.yaml'));
    expect(file.current.revision).toBe(revisionOf(GOOD));
    version('..v2', BETTER);
    symlinkSync('..v2', join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
    await waitFor('the new version in use', () => file.current.revision === revisionOf(BETTER));
  });

  it('stops the start when the file is missing or invalid, naming the variable and each problem', () => {
    const dir = folder();
    const missing = join(dir, 'nothing.yaml');
    const registry = new Registry();
    const options = { ...AGENT_ROUTE_FILE_NAMING, pollMs: 1000, debounceMs: 10, logger: recordingLogger().logger as never, registry, pipelines: () => undefined, onTable: () => {} };
    expect(() => new RouteFile(missing, options)).toThrow(ConfigError);
    expect(() => new RouteFile(missing, options)).toThrow(`AGENT_ROUTES_FILE: cannot read ${missing} (ENOENT); set AGENT_ROUTES_FILE=none to send every chat to AGENT_DEFAULT_PIPELINE instead`);
    const bad = join(dir, 'routes.yaml');
    writeFileSync(bad, BAD);
    expect(() => new RouteFile(bad, options)).toThrow('AGENT_ROUTES_FILE: routes.yaml:2:65: rules.0.patterns.0: Invalid regular expression');
  });
});
