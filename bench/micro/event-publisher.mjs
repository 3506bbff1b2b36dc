#!/usr/bin/env node
// Micro-benchmark of the telemetry publisher's path against a real nats-server: CPU per event
// in the publishing process and in nats-server, from publish() until every event offered is
// counted as published or dropped.
//
//   node bench/micro/event-publisher.mjs [--kit <dist dir>] [--rate <events/s>] [--seconds <s>] [--rounds <n>]
//
// --kit: the kit build to measure (default services/kit/dist), so that a build of another commit
// can be measured the same way. The load is --rate events a second (default 15,000: about the
// benchmark's c=64 chain, five events per request) over five subjects, for --seconds (default 5),
// with the host's default flush interval (20 ms); then --rate 0: as fast as the publisher takes them.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    kit: { type: 'string', default: 'services/kit/dist' },
    rate: { type: 'string', default: '15000' },
    seconds: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '3' },
  },
});
const kit = await import(pathToFileURL(join(resolve(args.kit), 'index.js')).href);
const { EventPublisher, Metrics, SharedNatsConnection, createLogger } = kit;

const SUBJECTS = [['gateway', 'chat'], ['agent', 'job'], ['executor', 'run'], ['executor', 'step'], ['provider', 'completion']];
const CLOCK_TICKS = 100; // USER_HZ on Linux

function freePort() {
  return new Promise((done) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

/** utime + stime of a process, in ms. */
function cpuMsOf(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
}

async function total(counter) {
  return (await counter.get()).values.reduce((sum, value) => sum + value.value, 0);
}

async function round(natsUrl, natsPid, rate, seconds) {
  const metrics = new Metrics({ defaultMetrics: false });
  const logger = createLogger({ level: 'silent', name: 'bench' });
  const nats = new SharedNatsConnection({ url: natsUrl, name: 'bench', logger });
  const publisher = new EventPublisher({ enabled: true, queueMax: 1_000_000, flushIntervalMs: 20, streamName: 'BENCH_EVENTS', streamMaxAgeHours: 1, logger, metrics });
  publisher.start(nats.forService('bench'));
  if (!(await publisher.waitUntilConnected(10_000))) throw new Error('no NATS');
  const fields = { status: 'OK', durationMs: 12, executorStep: { runId: '0190a6b2-4f1e-7c3a-9d2b-8e1f2a3b4c5d', pipeline: 'general', step: { name: 'answer', type: 'claude_smart', output: 'x'.repeat(200) } } };

  const started = performance.now();
  const ownCpu = process.cpuUsage();
  const natsCpu = cpuMsOf(natsPid);
  let offered = 0;
  if (rate > 0) {
    const target = rate * seconds;
    while (offered < target) {
      // Each millisecond, the events due by then.
      const due = Math.min(target, Math.floor(((performance.now() - started) / 1000) * rate));
      for (; offered < due; offered += 1) {
        const [service, kind] = SUBJECTS[offered % SUBJECTS.length];
        publisher.publish(service, kind, fields);
      }
      await new Promise((done) => setTimeout(done, 1));
    }
  } else {
    const target = 200_000;
    while (offered < target) {
      for (let index = 0; index < 500 && offered < target; index += 1, offered += 1) {
        const [service, kind] = SUBJECTS[offered % SUBJECTS.length];
        publisher.publish(service, kind, fields);
      }
      await new Promise((done) => setImmediate(done));
    }
  }
  while ((await total(metrics.eventsPublished)) + (await total(metrics.eventsDropped)) < offered) await new Promise((done) => setTimeout(done, 1));
  const elapsedMs = performance.now() - started;
  const cpu = process.cpuUsage(ownCpu);
  const natsCpuMs = cpuMsOf(natsPid) - natsCpu;
  const result = {
    offered,
    dropped: await total(metrics.eventsDropped),
    eventsPerSecond: Math.round(offered / (elapsedMs / 1000)),
    publisherCpuUsPerEvent: (cpu.user + cpu.system) / offered,
    natsCpuUsPerEvent: (natsCpuMs * 1000) / offered,
  };
  await publisher.close();
  await nats.stop(1_000);
  return result;
}

const port = await freePort();
const store = mkdtempSync(join(tmpdir(), 'bench-nats-'));
const server = spawn('nats-server', ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', store], { stdio: 'ignore' });
try {
  for (let attempt = 0; ; attempt += 1) {
    const { connect } = await import('@nats-io/transport-node');
    try {
      await (await connect({ servers: `nats://127.0.0.1:${port}` })).close();
      break;
    } catch (error) {
      if (attempt > 100) throw error;
      await new Promise((done) => setTimeout(done, 50));
    }
  }
  const url = `nats://127.0.0.1:${port}`;
  const format = (label, results) => {
    const median = (key) => results.map((result) => result[key]).sort((a, b) => a - b)[Math.floor(results.length / 2)];
    console.log(
      `${label}: ${median('eventsPerSecond')} events/s, publisher ${median('publisherCpuUsPerEvent').toFixed(2)} us CPU/event, nats-server ${median('natsCpuUsPerEvent').toFixed(2)} us CPU/event, dropped ${results.map((result) => result.dropped).join('/')} (median of ${results.length})`,
    );
  };
  const rounds = Number(args.rounds);
  await round(url, server.pid, 0, 0); // warm-up
  for (const rate of [Number(args.rate), 0]) {
    const results = [];
    for (let index = 0; index < rounds; index += 1) results.push(await round(url, server.pid, rate, Number(args.seconds)));
    format(rate > 0 ? `${rate} events/s for ${args.seconds} s` : 'as fast as taken, 200,000 events', results);
  }
} finally {
  server.kill('SIGTERM');
  await new Promise((done) => server.once('exit', done));
  rmSync(store, { recursive: true, force: true });
}
