// bench:profile's summary of a .cpuprofile: self time by package and function, and library time
// charged to the project function that called into it.
import { describe, expect, it } from 'vitest';
import { summarizeProfile, type CpuProfile } from '../../bench/src/cpu-profile.js';

const frame = (functionName: string, url: string) => ({ functionName, url, lineNumber: 9 });

describe('summarizeProfile', () => {
  it('splits self time by package and function, and charges library time to the calling project function', () => {
    const profile: CpuProfile = {
      nodes: [
        { id: 1, callFrame: frame('(root)', ''), children: [2, 5] },
        { id: 2, callFrame: frame('flush', 'file:///repo/services/kit/dist/telemetry/event-publisher.js'), children: [3] },
        { id: 3, callFrame: frame('publish', 'file:///repo/node_modules/@nats-io/nats-core/lib/nats.js'), children: [4] },
        { id: 4, callFrame: frame('encode', 'node:internal/encoding'), children: [] },
        { id: 5, callFrame: frame('(garbage collector)', ''), children: [] },
      ],
      samples: [2, 3, 3, 4, 5, 5, 5, 5, 5, 5],
      timeDeltas: [1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000],
    };
    const summary = summarizeProfile(profile);
    expect(summary).toContain('sampled 10 ms');
    const section = (title: string) => summary.split(`-- ${title}\n`)[1]!.split('\n--')[0]!;
    expect(section('self time by package')).toContain(' 60.0%  (native)');
    expect(section('self time by package')).toContain(' 20.0%  @nats-io/nats-core');
    expect(section('self time by package')).toContain(' 10.0%  services/kit');
    expect(section('self time by function')).toContain(' 20.0%  publish  @nats-io/nats-core/lib/nats.js:10');
    const charged = section('time charged to the nearest project function on the stack');
    expect(charged).toContain(' 40.0%  flush  services/kit/telemetry/event-publisher.js:10');
    expect(charged).toContain(' 60.0%  (not under project code)');
  });
});
