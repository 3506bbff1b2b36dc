// The monitor under the throughput load: the all-in-one chain (its four request-path services,
// not the monitor) driven at c=64 while a monitor process reads the events stream alongside.
// Reports whether the monitor keeps up: its consumer's lag (max while loaded, at the end of the
// load, and how long it takes to reach 0 after it), the events it applied, and its CPU per event.
import { startMonitorProcess } from '@elexirion/testing';
import { MESSAGE, SHAPE_LABEL, log, runInterleaved, type BenchConfig } from './harness.ts';
import { cpuMs } from './procstat.ts';
import type { Context, ScenarioOutput } from './scenarios.ts';
import { loadRounds, sharedWithNats, withShapes } from './scenarios.ts';
import { round } from './stats.ts';

/** How often the monitor's /metrics is read for its lag. */
const SAMPLE_MS = 250;
/** How long the monitor may take to drain its backlog once the load stops. */
const DRAIN_TIMEOUT_MS = 60_000;

async function scrape(httpPort: number): Promise<{ pending: number; applied: number }> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  const value = (name: string) => Number(new RegExp(`^${name} ([0-9.e+]+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
  return { pending: value('elexirion_monitor_consumer_pending'), applied: value('elexirion_monitor_events_applied_total') };
}

export async function monitor(ctx: Context): Promise<ScenarioOutput> {
  const { quick } = ctx.opts;
  const rounds = ctx.opts.rounds ?? (quick ? 2 : 3);
  const { durationMsPerRound, warmupMs } = loadRounds(ctx.opts);
  const concurrency = 64;
  return withShapes(ctx, ['all-in-one'], { TELEMETRY_EVENTS: 'true' }, async ([chain]) => {
    const { process: monitorProcess, httpPort } = await startMonitorProcess(ctx.nats.url, {
      LOG_LEVEL: 'warn',
      // A consumer of its own from now on: the stream holds the earlier scenarios' events.
      MONITOR_METRICS_CONSUMER: `bench-monitor-${Date.now()}`,
      MONITOR_METRICS_START: 'new',
      MONITOR_METRICS_LAG_POLL_MS: String(SAMPLE_MS),
    });
    try {
      const pid = monitorProcess.child.pid!;
      const label = SHAPE_LABEL[chain!.shape];
      const config: BenchConfig = {
        name: `${label}-http-with-monitor`,
        description: `the whole chain, ${chain!.shape} (gateway, agent, executor, provider), HTTP POST /v1/chat, with a monitor process reading the events`,
        target: { type: 'http', url: `${chain!.httpUrl}/v1/chat`, headers: chain!.auth, body: { message: MESSAGE } },
        procs: [...chain!.procs, { name: 'monitor', pid }],
      };

      const samples: number[] = [];
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          const { pending } = await scrape(httpPort).catch(() => ({ pending: Number.NaN }));
          if (Number.isFinite(pending)) samples.push(pending);
          await new Promise((resolve) => setTimeout(resolve, SAMPLE_MS));
        }
      })();
      const before = await scrape(httpPort);
      const cpuBefore = cpuMs(pid)!;
      log(`monitor: ${config.name} at c=${concurrency}, ${rounds} rounds x ${durationMsPerRound} ms, lag sampled every ${SAMPLE_MS} ms`);
      const [result] = await runInterleaved(sharedWithNats(ctx), [config], { mode: 'closed', concurrency, rounds, durationMsPerRound, warmupMs, timeoutMs: 60_000 });
      // The gauge is the consumer info of the last poll: wait one poll so the end is the end.
      await new Promise((resolve) => setTimeout(resolve, SAMPLE_MS * 2));
      const atEnd = (await scrape(httpPort)).pending;
      const loadEnded = Date.now();
      let drained = await scrape(httpPort);
      while (drained.pending > 0 && Date.now() - loadEnded < DRAIN_TIMEOUT_MS) {
        await new Promise((resolve) => setTimeout(resolve, SAMPLE_MS));
        drained = await scrape(httpPort);
      }
      const drainMs = drained.pending === 0 ? Date.now() - loadEnded : Number.NaN;
      sampling = false;
      await sampler;
      const cpuAfter = cpuMs(pid)!;
      const events = drained.applied - before.applied;
      return {
        scenario: 'monitor',
        title: 'The monitor under the throughput load',
        settings: { concurrency, rounds, durationMsPerRound, warmupMs, shape: chain!.shape, chain: 'gateway,agent,executor,provider', monitor: 'one process, its own durable consumer', lagSampleMs: SAMPLE_MS },
        notes: [
          'Lag is the monitor consumer\'s pending plus unacknowledged messages (one message = one event batch of one publisher, subject and flush interval), read from its /metrics (elexirion_monitor_consumer_pending).',
          'CPU per event: the monitor process\'s utime+stime over the load and the drain, divided by the events it applied (elexirion_monitor_events_applied_total), warm-up included.',
          'The chain\'s figures include the monitor\'s CPU in sutCpuMsPerRequest; the throughput scenario measures the chain without it.',
        ],
        configs: [result!],
        monitor: {
          lagMax: samples.length ? Math.max(...samples) : Number.NaN,
          lagAtLoadEnd: atEnd,
          drainMsAfterLoad: drainMs,
          lagSamples: samples.length,
          eventsApplied: events,
          eventsPerRequest: round(events / (result!.count + result!.warmup.count), 2),
          cpuMsTotal: round(cpuAfter - cpuBefore),
          cpuUsPerEvent: round(((cpuAfter - cpuBefore) * 1000) / events, 1),
        },
      };
    } finally {
      await monitorProcess.stop();
    }
  });
}
