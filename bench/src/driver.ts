// Child process: the load driver. Runs one job at a time for the harness (over IPC) and answers
// with every request's own latency, so percentiles never come from a tool's histogram. It runs
// in its own process so its CPU is counted apart from the system under test.
import { performance } from 'node:perf_hooks';
import { Pool } from 'undici';
import { createChannel, createClient, Metadata, type Channel } from 'nice-grpc';
import { proto } from '@elexirion/kit';

export type Target =
  /**
   * POST a JSON body; a 2xx with a non-empty body is a success. With `sequence: n`, one request
   * is n such POSTs one after the other (a client making a multi-step call itself), timed as one.
   */
  | { type: 'http'; url: string; headers?: Record<string, string>; body: unknown; sequence?: number }
  /** POST a JSON body that asks for SSE; records the time to the first non-empty text delta. */
  | { type: 'http-sse'; url: string; headers?: Record<string, string>; body: unknown }
  /** One unary call on a service at 127.0.0.1:port. */
  | { type: 'grpc'; port: number; service: 'gateway' | 'agent' | 'executor' | 'provider'; method: string; request: unknown; metadata?: Record<string, string> }
  /** Provider.StreamComplete; records the time to the first delta. */
  | { type: 'grpc-stream'; port: number; request: unknown }
  /** Gateway.ChatStream; records the time to the first text delta, and needs `done` at the end. */
  | { type: 'grpc-chat-stream'; port: number; request: unknown; metadata?: Record<string, string> };

export interface Job {
  id: number;
  target: Target;
  /** closed: `concurrency` workers each send the next request when the last one answered. open: a fixed rate. */
  mode: 'closed' | 'open';
  concurrency?: number;
  /** Stop after this many requests (closed mode) ... */
  requests?: number;
  /** ... or after this long (both modes). */
  durationMs?: number;
  ratePerSec?: number;
  /** open mode: beyond this many in flight, a due request is skipped and counted as an error. */
  maxInFlight?: number;
  /** Per-request deadline. */
  timeoutMs?: number;
  /** Close the job's connections afterwards (a burst of thousands must not stay open). */
  closeAfter?: boolean;
}

export interface JobResult {
  id: number;
  /** ms, successes only, in completion order. */
  latencies: number[];
  /** ms to the first token (streaming targets), successes only. */
  ttft: number[];
  errors: number;
  errorSamples: string[];
  wallMs: number;
  /** The driver's own CPU over the job (process.cpuUsage), ms. */
  driverCpuMs: number;
  maxInFlight: number;
}

const definitions = {
  gateway: proto.GatewayDefinition,
  agent: proto.AgentDefinition,
  executor: proto.ExecutorDefinition,
  provider: proto.ProviderDefinition,
} as const;

const pools = new Map<string, Pool>();
const channels = new Map<number, Channel>();

function pool(origin: string, connections: number): Pool {
  const key = `${origin}#${connections}`;
  let existing = pools.get(key);
  if (!existing) {
    existing = new Pool(origin, { connections, pipelining: 1, keepAliveTimeout: 60_000, headersTimeout: 0, bodyTimeout: 0 });
    pools.set(key, existing);
  }
  return existing;
}

function channel(port: number): Channel {
  let existing = channels.get(port);
  if (!existing) {
    existing = createChannel(`127.0.0.1:${port}`, undefined, {
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      'grpc.keepalive_permit_without_calls': 1,
    });
    channels.set(port, existing);
  }
  return existing;
}

/** One request: resolves with the time to first token (streaming), or undefined. */
type Call = (signal: AbortSignal) => Promise<number | undefined>;

function makeCall(target: Target, connections: number): Call {
  if (target.type === 'http' || target.type === 'http-sse') {
    const url = new URL(target.url);
    const client = pool(url.origin, connections);
    const payload = JSON.stringify(target.body);
    const headers = { 'content-type': 'application/json', ...target.headers };
    const path = url.pathname + url.search;
    if (target.type === 'http') {
      const post = async (signal: AbortSignal): Promise<undefined> => {
        const response = await client.request({ method: 'POST', path, headers, body: payload, signal });
        const text = await response.body.text();
        if (response.statusCode < 200 || response.statusCode >= 300) throw new Error(`HTTP ${response.statusCode}: ${text.slice(0, 200)}`);
        if (text.length === 0) throw new Error(`HTTP ${response.statusCode} with an empty body`);
        return undefined;
      };
      const steps = target.sequence ?? 1;
      if (steps === 1) return post;
      return async (signal) => {
        for (let step = 0; step < steps; step++) await post(signal);
        return undefined;
      };
    }
    return async (signal) => {
      const started = performance.now();
      const response = await client.request({ method: 'POST', path, headers, body: payload, signal });
      if (response.statusCode < 200 || response.statusCode >= 300) {
        throw new Error(`HTTP ${response.statusCode}: ${(await response.body.text()).slice(0, 200)}`);
      }
      let ttft: number | undefined;
      let seen = '';
      for await (const chunk of response.body) {
        if (ttft === undefined) {
          // The first SSE frame whose text delta is not empty (OpenAI: "content":"x", Anthropic: "text":"x").
          seen = (seen + (chunk as Buffer).toString('utf8')).slice(-4096);
          if (/"(content|text)":"[^"]/.test(seen)) ttft = performance.now() - started;
        }
      }
      if (ttft === undefined) throw new Error('the stream ended without a text delta');
      return ttft;
    };
  }
  if (target.type === 'grpc') {
    const client = createClient(definitions[target.service] as any, channel(target.port)) as Record<string, (request: unknown, options: object) => Promise<unknown>>;
    const method = client[target.method];
    if (typeof method !== 'function') throw new Error(`no method ${target.method} on ${target.service}`);
    const metadata = target.metadata;
    return async (signal) => {
      await method.call(client, target.request, metadata ? { signal, metadata: Metadata(metadata) } : { signal });
      return undefined;
    };
  }
  if (target.type === 'grpc-chat-stream') {
    const gateway = createClient(proto.GatewayDefinition, channel(target.port));
    const metadata = target.metadata;
    return async (signal) => {
      const started = performance.now();
      let ttft: number | undefined;
      let done = false;
      for await (const message of gateway.chatStream(target.request as proto.ChatRequest, metadata ? { signal, metadata: Metadata(metadata) } : { signal })) {
        if (ttft === undefined && message.textDelta?.text) ttft = performance.now() - started;
        if (message.done) done = true;
      }
      if (ttft === undefined) throw new Error('the stream ended without a text delta');
      if (!done) throw new Error('the stream ended without done');
      return ttft;
    };
  }
  const client = createClient(proto.ProviderDefinition, channel(target.port));
  return async (signal) => {
    const started = performance.now();
    let ttft: number | undefined;
    let done = false;
    for await (const message of client.streamComplete(target.request as proto.StreamCompleteRequest, { signal })) {
      if (ttft === undefined && message.delta) ttft = performance.now() - started;
      if (message.done) done = true;
    }
    if (ttft === undefined) throw new Error('the stream ended without a delta');
    if (!done) throw new Error('the stream ended without its final message');
    return ttft;
  };
}

function describe(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`.slice(0, 300);
  return String(error).slice(0, 300);
}

async function runJob(job: Job): Promise<JobResult> {
  const concurrency = job.concurrency ?? 1;
  const call = makeCall(job.target, Math.max(1, job.mode === 'open' ? (job.maxInFlight ?? 256) : concurrency));
  const latencies: number[] = [];
  const ttft: number[] = [];
  const errorSamples = new Set<string>();
  let errors = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  const endAt = job.durationMs === undefined ? Infinity : started + job.durationMs;

  const one = async () => {
    inFlight++;
    if (inFlight > maxInFlight) maxInFlight = inFlight;
    const signal = job.timeoutMs === undefined ? new AbortController().signal : AbortSignal.timeout(job.timeoutMs);
    const t0 = performance.now();
    try {
      const firstToken = await call(signal);
      latencies.push(performance.now() - t0);
      if (firstToken !== undefined) ttft.push(firstToken);
    } catch (error) {
      errors++;
      if (errorSamples.size < 5) errorSamples.add(describe(error));
    } finally {
      inFlight--;
    }
  };

  if (job.mode === 'closed') {
    let issued = 0;
    const worker = async () => {
      while ((job.requests === undefined || issued < job.requests) && performance.now() < endAt) {
        issued++;
        await one();
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
  } else {
    const rate = job.ratePerSec ?? 100;
    const limit = job.maxInFlight ?? 256;
    const total = job.durationMs === undefined ? (job.requests ?? 0) : Math.floor((job.durationMs / 1000) * rate);
    const pending = new Set<Promise<void>>();
    let issued = 0;
    while (issued < total) {
      const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * rate) + 1);
      while (issued < due) {
        issued++;
        if (inFlight >= limit) {
          errors++;
          if (errorSamples.size < 5) errorSamples.add(`driver: more than ${limit} requests in flight; request skipped`);
          continue;
        }
        const promise = one();
        pending.add(promise);
        void promise.finally(() => pending.delete(promise));
      }
      await new Promise((resolve) => setTimeout(resolve, Math.max(1, Math.min(20, 1000 / rate / 2))));
    }
    await Promise.all(pending);
  }

  const wallMs = performance.now() - started;
  const cpu = process.cpuUsage(cpuBefore);
  if (job.closeAfter) {
    for (const [key, each] of pools) {
      pools.delete(key);
      await each.close();
    }
    for (const [port, each] of channels) {
      channels.delete(port);
      each.close();
    }
  }
  return {
    id: job.id,
    latencies,
    ttft,
    errors,
    errorSamples: [...errorSamples],
    wallMs,
    driverCpuMs: (cpu.user + cpu.system) / 1000,
    maxInFlight,
  };
}

process.on('message', (job: Job) => {
  runJob(job).then(
    (result) => process.send!(result),
    (error: unknown) => process.send!({ id: job.id, fatal: describe(error) }),
  );
});
process.on('disconnect', () => {
  for (const each of channels.values()) each.close();
  void Promise.all([...pools.values()].map((each) => each.close())).finally(() => process.exit(0));
});
process.send!({ ready: true });
