import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { shippedPipelines } from './pipelines.js';

const roots: string[] = [];

/** A checkout with pipelines/: tracked.yaml, routes.yaml and prompts/nested.yaml in git, mine.yaml and notes.txt not. */
function checkout(git: boolean): string {
  const root = mkdtempSync(join(tmpdir(), 'elexirion-shipped-'));
  roots.push(root);
  mkdirSync(join(root, 'pipelines', 'prompts'), { recursive: true });
  for (const file of ['tracked.yaml', 'routes.yaml', 'mine.yaml', 'notes.txt', 'prompts/nested.yaml']) writeFileSync(join(root, 'pipelines', file), 'workflow: {}\n');
  if (git) {
    execFileSync('git', ['init', '-q'], { cwd: root });
    execFileSync('git', ['add', 'pipelines/tracked.yaml', 'pipelines/routes.yaml', 'pipelines/prompts/nested.yaml'], { cwd: root });
  }
  return root;
}

afterEach(() => {
  for (const root of roots.splice(0)) rmSync(root, { recursive: true, force: true });
});

describe('shippedPipelines', () => {
  it('is the pipelines/*.yaml git tracks: not a user\'s untracked pipeline, nor the agent\'s routes.yaml', () => {
    expect(shippedPipelines(checkout(true))).toEqual(['tracked.yaml']);
  });

  it('is every pipelines/*.yaml outside a git checkout', () => {
    expect(shippedPipelines(checkout(false))).toEqual(['mine.yaml', 'tracked.yaml']);
  });

  it('includes the pipelines this repository ships', () => {
    expect(shippedPipelines()).toEqual(expect.arrayContaining(['analysis.yaml', 'general.yaml', 'triage.yaml']));
  });
});
