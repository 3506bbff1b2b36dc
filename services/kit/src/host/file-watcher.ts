import { watch, type FSWatcher } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import type { Logger } from '../telemetry/logger.js';

export interface FileWatcherOptions {
  /** What the file is, in log lines ("routes file", "alert rules"). */
  label: string;
  /** Safety net under the watcher: the file's stat is compared this often. */
  pollMs: number;
  /** Editors write a file in several steps; a change is told once they have settled. */
  debounceMs: number;
  logger: Pick<Logger, 'warn'>;
  /** Told after a change has settled; never twice at once (the next waits for the last). */
  onChange(): Promise<void>;
}

/**
 * Tells when a configuration file changes, so it can be reloaded without a restart. The folder is
 * watched (a Kubernetes ConfigMap update swaps a symlink, so the folder, not the file, sees it),
 * changes are debounced, and a cheap stat every `pollMs` catches what a watcher misses (network
 * file systems, a watcher that errored).
 */
export class FileWatcher {
  private watcher: FSWatcher | undefined;
  private poller: NodeJS.Timeout | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private lastStat = '';
  private changing: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    readonly path: string,
    private readonly options: FileWatcherOptions,
  ) {}

  start(): void {
    const folder = dirname(this.path);
    const name = basename(this.path);
    const { label, logger } = this.options;
    void this.statKey().then((key) => {
      this.lastStat ||= key;
    });
    try {
      this.watcher = watch(folder, { persistent: false }, (_event, changed) => {
        // No file name (some platforms), the file itself, or a ConfigMap's ..data swap.
        if (!changed || changed === name || changed.startsWith('..')) this.schedule();
      });
      this.watcher.on('error', (error) => {
        logger.warn({ err: error, folder }, `watching the ${label} folder failed: changes are seen by the periodic check alone`);
        this.watcher?.close();
        this.watcher = undefined;
      });
    } catch (error) {
      logger.warn({ err: error, folder }, `cannot watch the ${label} folder: changes are seen by the periodic check alone`);
    }
    this.poller = setInterval(() => {
      void this.statKey().then((key) => {
        if (key !== this.lastStat) this.schedule();
      });
    }, this.options.pollMs);
    this.poller.unref();
  }

  close(): void {
    this.closed = true;
    this.watcher?.close();
    clearInterval(this.poller);
    clearTimeout(this.debounce);
  }

  /** Tells the change now (after one under way); resolves when `onChange` has run. */
  changed(): Promise<void> {
    this.changing = this.changing.then(async () => {
      if (this.closed) return;
      this.lastStat = await this.statKey();
      await this.options.onChange();
    });
    return this.changing;
  }

  private schedule(): void {
    if (this.closed) return;
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => void this.changed(), this.options.debounceMs);
    this.debounce.unref();
  }

  /** What changes when the file does (a swapped symlink changes the inode); "" when it cannot be read. */
  private async statKey(): Promise<string> {
    try {
      const info = await stat(this.path);
      return `${info.ino}:${info.size}:${info.mtimeMs}`;
    } catch {
      return '';
    }
  }
}
