// Where one benchmark run's results go: a folder of its own, named by when it started (UTC) and
// the commit it measured, so no run ever writes over another's.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

/**
 * `<YYYY-MM-DD>T<HHMM>-<shortsha>[-dirty]`: the start time in UTC to the minute, the commit's
 * first 12 hex digits, and "-dirty" when the work tree had uncommitted changes. `commit` is what
 * `commitOf` says: a full SHA, optionally with "+changes", or "unknown" outside git.
 */
export function runName(startedAt: Date, commit: string): string {
  const iso = startedAt.toISOString();
  const stamp = `${iso.slice(0, 10)}T${iso.slice(11, 13)}${iso.slice(14, 16)}`;
  const sha = /^[0-9a-f]{7,40}/.exec(commit)?.[0].slice(0, 12) ?? 'unknown';
  return `${stamp}-${sha}${commit.endsWith('+changes') ? '-dirty' : ''}`;
}

/**
 * Creates `outDir/<name>` and returns it. mkdir without `recursive` fails when the folder exists,
 * which makes the claim atomic: a second run in the same minute on the same commit (or one
 * started at the same moment) gets `<name>-2`, `<name>-3`, ... instead of sharing a folder.
 */
export function createRunFolder(outDir: string, name: string): { name: string; dir: string } {
  mkdirSync(outDir, { recursive: true });
  for (let attempt = 1; ; attempt++) {
    const claimed = attempt === 1 ? name : `${name}-${attempt}`;
    const dir = join(outDir, claimed);
    try {
      mkdirSync(dir);
      return { name: claimed, dir };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
}
