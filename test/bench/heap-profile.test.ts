// bench:profile --heap's summary of two heap snapshots: what each held run keeps alive.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readHeapSnapshot, summarizeHeapGrowth } from '../../bench/src/heap-profile.js';

const dir = mkdtempSync(join(tmpdir(), 'heap-profile-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// A process that takes a snapshot, holds 500 "runs" (an object and a suspended async function
// each), and takes another.
const HOLD_RUNS = `
const v8 = require('node:v8');
const path = require('node:path');
class HeldRun { constructor(index) { this.index = index; this.label = 'run-' + index; } }
async function waitForUpstream(run, gate) { await gate; return run; }
v8.writeHeapSnapshot(path.join(process.argv[1], 'before.heapsnapshot'));
const gate = new Promise(() => {});
const held = [];
for (let index = 0; index < 500; index++) { const run = new HeldRun(index); held.push(run, waitForUpstream(run, gate)); }
v8.writeHeapSnapshot(path.join(process.argv[1], 'after.heapsnapshot'));
`;

describe('summarizeHeapGrowth', () => {
  it('reports the objects and suspended async functions each held run keeps alive', () => {
    execFileSync(process.execPath, ['-e', HOLD_RUNS, dir]);
    const summary = summarizeHeapGrowth(readHeapSnapshot(join(dir, 'before.heapsnapshot')), readHeapSnapshot(join(dir, 'after.heapsnapshot')), 500);
    expect(summary).toMatch(/^live heap per run: \d+\.\d KB \(500 runs held/);
    const section = (title: string) => summary.split(`-- ${title}\n`)[1]!.split('\n--')[0]!;
    expect(section('by kind')).toMatch(/ {3}1\.0 {2}object HeldRun\n/);
    expect(section('suspended async functions (frame and registers) by function')).toMatch(/^\s+\d+ B\s+1\.0  waitForUpstream$/m);
  });
});
