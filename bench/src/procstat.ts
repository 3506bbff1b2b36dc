// Per-process CPU and memory from /proc (Linux): what every figure "per process" is made of.
import { readFileSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

export interface Proc {
  name: string;
  pid: number;
}

let clockTicks = 100;
try {
  clockTicks = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
} catch {
  // keep Linux's usual 100
}

/** utime + stime of the whole process (every thread), in ms; undefined when it has exited. */
export function cpuMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // After "pid (comm) ", fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / clockTicks;
  } catch {
    return undefined;
  }
}

function statusKiB(pid: number, key: 'VmRSS' | 'VmHWM'): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const match = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status);
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

export const rssKiB = (pid: number) => statusKiB(pid, 'VmRSS');
export const peakRssKiB = (pid: number) => statusKiB(pid, 'VmHWM');

/** Resets VmHWM to the current RSS (`echo 5 > /proc/PID/clear_refs`); false when not allowed. */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

export function cpuSnapshot(procs: Proc[]): Map<number, number> {
  const snapshot = new Map<number, number>();
  for (const { pid } of procs) snapshot.set(pid, cpuMs(pid) ?? Number.NaN);
  return snapshot;
}

/** Samples VmRSS of some processes every `intervalMs`, keeping each one's highest and latest value. */
export class RssSampler {
  readonly peak = new Map<number, number>();
  readonly last = new Map<number, number>();
  readonly series: Array<{ t: number; rssKiB: Record<string, number> }> = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly started = Date.now();
  private readonly procs: Proc[];
  private readonly keepSeriesEveryMs: number;

  constructor(procs: Proc[], intervalMs = 200, keepSeriesEveryMs = 0) {
    this.procs = procs;
    this.keepSeriesEveryMs = keepSeriesEveryMs;
    let lastSeries = 0;
    this.sample();
    this.timer = setInterval(() => {
      this.sample();
      if (this.keepSeriesEveryMs > 0 && Date.now() - lastSeries >= this.keepSeriesEveryMs) {
        lastSeries = Date.now();
        this.series.push({
          t: Date.now() - this.started,
          rssKiB: Object.fromEntries(this.procs.map((p) => [p.name, this.last.get(p.pid) ?? 0])),
        });
      }
    }, intervalMs);
    this.timer.unref();
  }

  sample(): void {
    for (const { pid } of this.procs) {
      const rss = rssKiB(pid);
      if (rss === undefined) continue;
      this.last.set(pid, rss);
      if (rss > (this.peak.get(pid) ?? 0)) this.peak.set(pid, rss);
    }
  }

  stop(): void {
    this.sample();
    clearInterval(this.timer);
  }
}
