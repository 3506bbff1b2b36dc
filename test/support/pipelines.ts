import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './processes.js';

const ROUTES_FILE = 'routes.yaml';

/**
 * The pipelines the project ships, as file names (`general.yaml`), sorted: the pipelines/*.yaml
 * that git tracks. A pipeline of the user's own that git does not track (one being written, say)
 * is not the project's to test, and must not change what the tests check (the fuzz corpus, the
 * listing). Outside a git checkout (an unpacked archive) every pipelines/*.yaml is shipped.
 * routes.yaml, the agent's route table, is not a pipeline.
 */
export function shippedPipelines(root = repoRoot): string[] {
  let tracked: string;
  try {
    tracked = execFileSync('git', ['ls-files', '-z', '--', 'pipelines'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return readdirSync(join(root, 'pipelines'))
      .filter((file) => file.endsWith('.yaml') && file !== ROUTES_FILE)
      .sort();
  }
  return tracked
    .split('\0')
    .filter((path) => /^pipelines\/[^/]+\.yaml$/.test(path))
    .map((path) => path.slice('pipelines/'.length))
    .filter((file) => file !== ROUTES_FILE)
    .sort();
}
