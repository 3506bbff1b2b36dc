import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { Counter, Gauge, type Registry } from 'prom-client';
import { ConfigError } from '../host/config.js';
import { FileWatcher } from '../host/file-watcher.js';
import type { Logger } from '../telemetry/logger.js';
import { formatProblem, type Problem } from '../yaml/yaml-document.js';
import { RouteTable, revisionOf, type PipelineShape } from './route-table.js';

export interface RouteFileOptions {
  /** The variable that names the file (AGENT_ROUTES_FILE), in start-up errors. */
  setting: string;
  /** What to do instead when the file cannot be read, appended to that error. */
  missingHint?: string;
  /** Prefix of the metric names (`elexirion_agent`), one per service: services hosted together share a registry. */
  metricPrefix: string;
  /** Safety net under the watcher: the file's stat is compared this often. */
  pollMs: number;
  /** Editors write a file in several steps; a reload waits for them to settle. */
  debounceMs: number;
  logger: Pick<Logger, 'info' | 'warn' | 'error'>;
  registry: Registry;
  /** The executor's pipelines when known: a table naming one that does not exist is refused. */
  pipelines(): ReadonlyMap<string, PipelineShape> | undefined;
  /** Told each table put in use (at start and on every good reload). */
  onTable(table: RouteTable): void;
}

/**
 * routes.yaml, loaded at start and reloaded when it changes, without a restart (FileWatcher says
 * when). A bad reload keeps the table in use and logs why, each problem at file:line:col; a good
 * one logs its rule count and revision.
 */
export class RouteFile {
  private table: RouteTable;
  private readonly watcher: FileWatcher;
  /** The text last rejected, so a bad file is logged once, not at every poll. */
  private rejectedRevision = '';
  private readonly info: Gauge<'revision'>;
  private readonly rules: Gauge;
  private readonly reloads: Counter<'result'>;

  /** Loads the file now; a missing or invalid file stops the start (ConfigError: exit 78) naming each problem. */
  constructor(
    readonly path: string,
    private readonly options: RouteFileOptions,
  ) {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (error) {
      throw new ConfigError([`${options.setting}: cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? 'error'})${options.missingHint ? `; ${options.missingHint}` : ''}`]);
    }
    const compiled = RouteTable.compile(basename(path), text);
    if ('problems' in compiled) throw new ConfigError(compiled.problems.map((problem) => `${options.setting}: ${formatProblem(problem)}`));
    this.table = compiled.table;
    const { registry, metricPrefix } = options;
    this.info = new Gauge({ name: `${metricPrefix}_route_table_info`, help: 'The route table in use: 1 for its revision (the first 12 hex digits of the sha256 of routes.yaml).', labelNames: ['revision'] as const, registers: [registry] });
    this.rules = new Gauge({ name: `${metricPrefix}_route_table_rules`, help: 'Rules in the route table in use, the default route not counted.', registers: [registry] });
    this.reloads = new Counter({ name: `${metricPrefix}_route_table_reloads_total`, help: 'Reloads of routes.yaml after a change: applied, or rejected (the table in use was kept).', labelNames: ['result'] as const, registers: [registry] });
    this.reloads.inc({ result: 'applied' }, 0);
    this.reloads.inc({ result: 'rejected' }, 0);
    this.use(this.table, 'loaded');
    this.watcher = new FileWatcher(path, { label: 'routes', pollMs: options.pollMs, debounceMs: options.debounceMs, logger: options.logger, onChange: () => this.reloadNow() });
  }

  get current(): RouteTable {
    return this.table;
  }

  /** Starts watching; call once the service is built. */
  start(): void {
    this.watcher.start();
  }

  close(): void {
    this.watcher.close();
  }

  /** Reads and applies the file now (after any reload under way); resolves when done. */
  reload(): Promise<void> {
    return this.watcher.changed();
  }

  /** Checks the table in use against a new listing of the pipelines; it stays in use either way (it is the last good one). */
  checkAgainst(pipelines: ReadonlyMap<string, PipelineShape>): void {
    const problems = this.table.checkPipelines(pipelines);
    if (problems.length > 0) this.options.logger.error({ file: this.path, revision: this.table.revision, problems: problems.map(formatProblem) }, 'the route table in use names pipelines or inputs the executor does not have');
  }

  private async reloadNow(): Promise<void> {
    const { logger } = this.options;
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (error) {
      if (this.rejectedRevision === 'unreadable') return;
      this.rejectedRevision = 'unreadable';
      this.reloads.inc({ result: 'rejected' });
      logger.error({ file: this.path, code: (error as NodeJS.ErrnoException).code, revision: this.table.revision }, 'routes file cannot be read: keeping the route table in use');
      return;
    }
    const revision = revisionOf(text);
    // Unchanged (a touch, a second event for one write), or the same bad text already told.
    if (revision === this.table.revision) {
      this.rejectedRevision = '';
      return;
    }
    if (revision === this.rejectedRevision) return;
    const compiled = RouteTable.compile(basename(this.path), text);
    const pipelines = this.options.pipelines();
    const problems: Problem[] = 'problems' in compiled ? compiled.problems : pipelines ? compiled.table.checkPipelines(pipelines) : [];
    if ('problems' in compiled || problems.length > 0) {
      this.rejectedRevision = revision;
      this.reloads.inc({ result: 'rejected' });
      logger.error({ file: this.path, revision, problems: problems.map(formatProblem), inUse: this.table.revision }, 'routes file rejected: keeping the route table in use');
      return;
    }
    this.rejectedRevision = '';
    this.reloads.inc({ result: 'applied' });
    this.use(compiled.table, 'reloaded');
  }

  private use(table: RouteTable, how: 'loaded' | 'reloaded'): void {
    this.table = table;
    this.info.reset();
    this.info.set({ revision: table.revision }, 1);
    this.rules.set(table.ruleCount);
    this.options.logger.info(
      { file: this.path, revision: table.revision, rules: table.ruleCount, routes: table.routes.map((route) => `${route.name} -> ${route.pipeline}`) },
      `route table ${how}: ${table.ruleCount} rules`,
    );
    this.options.onTable(table);
  }
}
