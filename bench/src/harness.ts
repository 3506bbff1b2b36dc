// The harness's moving parts: child processes (driver, fake upstream, Portkey, the services),
// the provider config it writes, and interleaved A/B runs with per-process CPU and memory.
import { execFile, fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { ClientError, Metadata, Status } from 'nice-grpc';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { freePort, waitForPort, repoRoot, spawnProcess, type Spawned, startStack, type Stack, type StackShape } from '@elexirion/testing';
import type { Job, JobResult, Target } from './driver.ts';
import { cpuMs, peakRssKiB, resetPeakRss, RssSampler, type Proc } from './procstat.ts';
import type { ConfigResult } from './results.ts';
import { round, summarize } from './stats.ts';

export type { ConfigResult } from './results.ts';

const run = promisify(execFile);
export const benchDir = fileURLToPath(new URL('../', import.meta.url));
const hooks = fileURLToPath(new URL('./ts-hooks.mjs', import.meta.url));

export function log(message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

// ---------------------------------------------------------------- child processes over IPC

class IpcChild {
  readonly child: ChildProcess;
  readonly name: string;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(value: any): void; reject(error: Error): void }>();
  private output = '';
  readonly ready: Promise<any>;

  constructor(name: string, script: string, env: NodeJS.ProcessEnv = {}) {
    this.name = name;
    this.child = fork(script, [], {
      cwd: repoRoot,
      execArgv: ['--import', hooks, '--disable-warning=ExperimentalWarning'],
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    const keep = (data: Buffer) => (this.output = (this.output + data.toString()).slice(-20_000));
    this.child.stdout?.on('data', keep);
    this.child.stderr?.on('data', keep);
    this.ready = new Promise((resolve, reject) => {
      const onMessage = (message: any) => {
        if (message?.ready) {
          this.child.off('message', onMessage);
          resolve(message);
        }
      };
      this.child.on('message', onMessage);
      this.child.once('exit', (code) => reject(new Error(`${name} exited (${code}) before it was ready:\n${this.output}`)));
    });
    this.child.on('message', (message: any) => {
      const waiter = message?.id !== undefined ? this.pending.get(message.id) : undefined;
      if (!waiter) return;
      this.pending.delete(message.id);
      if (message.fatal) waiter.reject(new Error(`${name}: ${message.fatal}`));
      else waiter.resolve(message);
    });
    this.child.once('exit', (code, signal) => {
      for (const waiter of this.pending.values()) waiter.reject(new Error(`${name} exited (${code ?? signal}):\n${this.output}`));
      this.pending.clear();
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  request<T>(message: object): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.send({ ...message, id });
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.disconnect();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  }
}

export class Driver extends IpcChild {
  constructor() {
    super('driver', fileURLToPath(new URL('./driver.ts', import.meta.url)));
  }
  run(job: Omit<Job, 'id'>): Promise<JobResult> {
    return this.request<JobResult>(job);
  }
}

export class Upstream extends IpcChild {
  openaiUrl = '';
  anthropicUrl = '';
  constructor() {
    super('fake-upstream', fileURLToPath(new URL('./upstream.ts', import.meta.url)));
  }
  async start(): Promise<this> {
    const ready = await this.ready;
    this.openaiUrl = ready.openaiUrl;
    this.anthropicUrl = ready.anthropicUrl;
    return this;
  }
  setDefault(reply: { delayMs?: number; chunkDelayMs?: number; text?: string }): Promise<unknown> {
    return this.request({ cmd: 'setDefault', reply });
  }
  clear(): Promise<unknown> {
    return this.request({ cmd: 'clear' });
  }
  async stats(): Promise<{ count: number; maxConcurrent: number; open: number }> {
    return (await this.request<{ result: { count: number; maxConcurrent: number; open: number } }>({ cmd: 'stats' })).result;
  }
}

// ---------------------------------------------------------------- the system under test

export const MODEL = 'gpt-4.1';
export const MESSAGE = 'hello';
export const SYSTEM_PROMPT = 'You are Elexirion, a concise and helpful assistant.';

/** Provider/Complete as the general pipeline's step calls it. */
export const PROVIDER_REQUEST = {
  messages: [{ role: 1, content: MESSAGE }],
  system: SYSTEM_PROMPT,
  model: 'claude_smart',
  preset: 'chat',
};

export type EntryService = 'gateway' | 'agent' | 'executor' | 'provider';

/** The gRPC call that enters the chain at `service` (listening on `port`) for the general pipeline. */
export function grpcEntry(service: EntryService, port: number, metadata?: Record<string, string>): Target {
  switch (service) {
    case 'gateway':
      return { type: 'grpc', port, service, method: 'chat', request: { message: MESSAGE }, ...(metadata ? { metadata } : {}) };
    case 'agent':
      return { type: 'grpc', port, service, method: 'handleChat', request: { message: MESSAGE } };
    case 'executor':
      return { type: 'grpc', port, service, method: 'execute', request: { pipeline: 'general', inputs: { message: MESSAGE } } };
    case 'provider':
      return { type: 'grpc', port, service, method: 'complete', request: PROVIDER_REQUEST };
  }
}

/** What the provider sends the upstream for the general pipeline, for the direct baseline. */
export function directBody(stream = false): object {
  return {
    model: MODEL,
    messages: [
      { role: 'system', content: SYSTEM_PROMPT },
      { role: 'user', content: MESSAGE },
    ],
    max_tokens: 2048,
    temperature: 0.7,
    ...(stream ? { stream: true, stream_options: { include_usage: true } } : {}),
  };
}

/**
 * config/providers.yaml with the general pipeline's alias (claude_smart) sent to OpenAI (the fake)
 * and OpenAI's limits raised: the shipped 32 concurrent / 512 queued / 50 per second would refuse
 * most of a load test. Written to a temporary file for PROVIDER_CONFIG.
 */
export function writeProviderConfig(): string {
  const config = parseYaml(readFileSync(join(repoRoot, 'config/providers.yaml'), 'utf8'));
  config.aliases.claude_smart.targets = [`openai/${MODEL}`];
  for (const preset of Object.values<any>(config.aliases.claude_smart.presets ?? {})) delete preset.targets;
  config.providers.openai = {
    ...config.providers.openai,
    max_concurrency: 1_000_000,
    max_queue: 1_000_000,
    requests_per_second: 10_000_000,
    burst: 10_000_000,
  };
  const dir = mkdtempSync(join(tmpdir(), 'elexirion-bench-'));
  const file = join(dir, 'providers.yaml');
  writeFileSync(file, `# Written by the bench harness from config/providers.yaml.\n${stringifyYaml(config)}`);
  return file;
}

export interface Shape {
  shape: StackShape;
  /** Started from the baseline checkout (`--baseline`), not this one. */
  baseline: boolean;
  stack: Stack;
  procs: Proc[];
  httpUrl: string;
  grpcPort: number;
  /**
   * The API key every request to the gateway sends (`authorization: Bearer ...`), as HTTP headers
   * and gRPC metadata: a key with high limits, so the bench measures what keys and limits cost on
   * the request path. Empty with BENCH_GATEWAY_AUTH=off and for a baseline checkout from before
   * keys (it answers CreateKey UNIMPLEMENTED and asks for no key); a baseline with keys is measured
   * with them, as this checkout is.
   */
  auth: Record<string, string>;
}

/** Keys on (as in production) unless BENCH_GATEWAY_AUTH=off, to measure what they cost. */
export const BENCH_GATEWAY_AUTH: 'on' | 'off' = process.env.BENCH_GATEWAY_AUTH === 'off' ? 'off' : 'on';
/** The bootstrap admin secret the bench's gateways start with; it only creates the bench's key. */
const BENCH_ADMIN_KEY = `bench-admin-${randomBytes(24).toString('base64url')}`;

/** Creates the bench's API key on a gateway started with keys on: limits too high to refuse, but checked and counted. */
async function createBenchKey(stack: Stack): Promise<Record<string, string>> {
  const request = { name: `bench-${randomBytes(4).toString('hex')}`, scopes: ['admin'], limits: { requestsPerMinute: 1_000_000_000, tokensPerMinute: 1_000_000_000_000, dailyBudgetUsd: 1_000_000_000, monthlyBudgetUsd: 1_000_000_000 } };
  const options = { metadata: Metadata({ authorization: `Bearer ${BENCH_ADMIN_KEY}` }) };
  // A gateway serves before its key store has attached to NATS (in the background): until then
  // CreateKey is UNAVAILABLE, for a moment after start.
  const until = Date.now() + 20_000;
  for (;;) {
    try {
      const { secret } = await stack.gateway.createKey(request, options);
      return { authorization: `Bearer ${secret}` };
    } catch (error) {
      if (!(error instanceof ClientError && error.code === Status.UNAVAILABLE) || Date.now() > until) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

export const SHAPE_LABEL: Record<StackShape, string> = { 'all-in-one': 'aio', 'one-process-per-service': 'split' };

/** Throws unless the checkout at `root` has built services (its own node_modules included). */
export function checkBuilt(root = repoRoot): void {
  const missing = ['server/dist/main.js', ...['gateway', 'agent', 'executor', 'provider'].map((name) => `services/${name}/dist/main.js`), 'node_modules'].filter(
    (entry) => !existsSync(join(root, entry)),
  );
  if (missing.length) throw new Error(`${root} is not built (${missing.join(', ')} missing): run \`npm run build\` there first`);
}

/** The services in one shape; from the baseline checkout's build at `baselineRoot`, with process names ending in `-baseline`. */
export async function startShape(shape: StackShape, natsUrl: string, env: NodeJS.ProcessEnv, baselineRoot?: string): Promise<Shape> {
  // A scenario may set GATEWAY_AUTH itself (one whose client sends no key).
  const gatewayAuth = env.GATEWAY_AUTH ?? BENCH_GATEWAY_AUTH;
  // The four request-path services, without the monitor: the comparisons with Portkey must not
  // pay for it (the monitor scenario starts one beside the chain and measures it on its own).
  const stack = await startStack(shape, natsUrl, { LOG_LEVEL: 'warn', GATEWAY_AUTH: gatewayAuth, GATEWAY_ADMIN_KEY: BENCH_ADMIN_KEY, ...env }, baselineRoot ?? repoRoot, { monitor: false });
  const suffix = baselineRoot === undefined ? '' : '-baseline';
  let auth: Record<string, string> = {};
  try {
    if (gatewayAuth === 'on') auth = await createBenchKey(stack);
  } catch (error) {
    const beforeKeys = baselineRoot !== undefined && error instanceof ClientError && error.code === Status.UNIMPLEMENTED;
    if (!beforeKeys) {
      await stack.stop();
      throw error;
    }
  }
  const procs = Object.entries(stack.processes).map(([name, spawned]) => ({
    name: `${shape === 'all-in-one' ? 'elexirion-all' : name}${suffix}`,
    pid: spawned.child.pid!,
  }));
  return { shape, baseline: suffix !== '', stack, procs, httpUrl: `http://127.0.0.1:${stack.ports.gatewayHttp}`, grpcPort: stack.ports.gatewayGrpc, auth };
}

/** The service env that points the provider at the fake OpenAI upstream. */
export function serviceEnv(upstream: Upstream, providerConfig: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    OPENAI_API_KEY: 'sk-bench-fake',
    OPENAI_BASE_URL: upstream.openaiUrl,
    PROVIDER_CONFIG: providerConfig,
    TELEMETRY_EVENTS: 'true',
    ...extra,
  };
}

// ---------------------------------------------------------------- the Portkey anchor

export const PORTKEY_VERSION = '1.15.2';

export interface Anchor {
  spawned: Spawned;
  port: number;
  proc: Proc;
  version: string;
  listen: string[];
}

/** Installs @portkey-ai/gateway into bench/cache/portkey (not a project dependency) when missing. */
export async function installPortkey(): Promise<string> {
  const cache = join(benchDir, 'cache', 'portkey');
  const entry = join(cache, 'node_modules', '@portkey-ai', 'gateway', 'build', 'start-server.js');
  if (existsSync(entry)) {
    const installed = JSON.parse(readFileSync(join(cache, 'node_modules', '@portkey-ai', 'gateway', 'package.json'), 'utf8')).version;
    if (installed === PORTKEY_VERSION) return entry;
  }
  mkdirSync(cache, { recursive: true });
  if (!existsSync(join(cache, 'package.json'))) writeFileSync(join(cache, 'package.json'), '{"name":"bench-portkey-cache","private":true}\n');
  log(`installing @portkey-ai/gateway@${PORTKEY_VERSION} into bench/cache/portkey`);
  await run('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', `@portkey-ai/gateway@${PORTKEY_VERSION}`], { cwd: cache, timeout: 300_000 });
  if (!existsSync(entry)) throw new Error(`npm installed @portkey-ai/gateway but ${entry} is missing`);
  return entry;
}

/** Local addresses listening on `port` (from /proc/net/tcp and tcp6), e.g. "127.0.0.1". */
export function listenAddresses(port: number): string[] {
  const found = new Set<string>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields[3] !== '0A') continue; // LISTEN
      const [hexAddress, hexPort] = (fields[1] ?? '').split(':');
      if (parseInt(hexPort ?? '', 16) !== port || !hexAddress) continue;
      if (hexAddress.length === 8) {
        found.add(
          hexAddress
            .match(/../g)!
            .reverse()
            .map((byte) => parseInt(byte, 16))
            .join('.'),
        );
      } else {
        found.add(hexAddress === '00000000000000000000000000000000' ? '::' : hexAddress === '00000000000000000000000001000000' ? '::1' : `ipv6:${hexAddress}`);
      }
    }
  }
  return [...found];
}

/** `preloads`: more modules for `node --import` (file names in bench/src). */
export async function startPortkey(upstream: Upstream, preloads: string[] = []): Promise<Anchor> {
  const entry = await installPortkey();
  const port = await freePort();
  const imports = ['bind-loopback.mjs', ...preloads].flatMap((file) => ['--import', join(benchDir, 'src', file)]);
  const spawned = spawnProcess('portkey', process.execPath, [...imports, entry, `--port=${port}`, '--headless'], {});
  await waitForPort(port, 20_000);
  // One call through it, so a broken anchor fails here and not as 100% errors later.
  const response = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...portkeyHeaders(upstream) },
    body: JSON.stringify(directBody()),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`Portkey answered ${response.status}: ${text.slice(0, 300)}`);
  return { spawned, port, proc: { name: 'portkey', pid: spawned.child.pid! }, version: PORTKEY_VERSION, listen: listenAddresses(port) };
}

export function portkeyHeaders(upstream: Upstream): Record<string, string> {
  return {
    authorization: 'Bearer sk-bench-fake',
    'x-portkey-provider': 'openai',
    'x-portkey-custom-host': upstream.openaiUrl,
  };
}

// ---------------------------------------------------------------- interleaved measurement

export interface BenchConfig {
  name: string;
  description: string;
  target: Target;
  /** The processes of the system under test (their CPU and peak memory are reported). */
  procs: Proc[];
}

export interface RunPlan {
  mode: 'closed';
  concurrency: number;
  rounds: number;
  /** Per configuration per round: a request count or a duration. */
  requestsPerRound?: number;
  durationMsPerRound?: number;
  warmupRequests?: number;
  warmupMs?: number;
  timeoutMs?: number;
}

export interface Shared {
  driver: Driver;
  upstream: Upstream;
  /** Measured with every configuration: the fake upstream, NATS, the driver. */
  shared: Proc[];
}

function unique(procs: Proc[]): Proc[] {
  const seen = new Map<number, Proc>();
  for (const proc of procs) if (!seen.has(proc.pid)) seen.set(proc.pid, proc);
  return [...seen.values()];
}

/**
 * Runs every configuration after its own warm-up, then `rounds` rounds in rotating order
 * (A B C, B C A, ...) so drift and ordering cancel out. CPU is read from /proc around each segment.
 */
export async function runInterleaved(shared: Shared, configs: BenchConfig[], plan: RunPlan): Promise<ConfigResult[]> {
  const every = unique([...configs.flatMap((config) => config.procs), ...shared.shared]);
  for (const proc of every) resetPeakRss(proc.pid);
  const sampler = new RssSampler(every, 250);
  const acc = configs.map(() => ({
    latencies: [] as number[],
    ttft: [] as number[],
    errors: 0,
    errorSamples: new Set<string>(),
    wallMs: 0,
    roundReqPerSec: [] as number[],
    cpu: new Map<number, number>(),
    warmup: { count: 0, errors: 0 },
  }));
  const job = (config: BenchConfig, warm: boolean) => ({
    target: config.target,
    mode: plan.mode,
    concurrency: plan.concurrency,
    ...(warm
      ? plan.warmupMs !== undefined
        ? { durationMs: plan.warmupMs }
        : { requests: plan.warmupRequests ?? 50 }
      : plan.durationMsPerRound !== undefined
        ? { durationMs: plan.durationMsPerRound }
        : { requests: plan.requestsPerRound ?? 100 }),
    ...(plan.timeoutMs !== undefined ? { timeoutMs: plan.timeoutMs } : {}),
  });
  try {
    for (const [index, config] of configs.entries()) {
      const warm = await shared.driver.run(job(config, true));
      if (warm.errors > 0 && warm.latencies.length === 0) {
        throw new Error(`${config.name}: every warm-up request failed (${warm.errorSamples.join('; ')})`);
      }
      acc[index]!.warmup = { count: warm.latencies.length, errors: warm.errors };
    }
    for (let r = 0; r < plan.rounds; r++) {
      for (let k = 0; k < configs.length; k++) {
        const index = (k + r) % configs.length;
        const config = configs[index]!;
        const slot = acc[index]!;
        const procs = unique([...config.procs, ...shared.shared, { name: 'driver', pid: shared.driver.pid }]);
        const before = procs.map((proc) => cpuMs(proc.pid) ?? Number.NaN);
        await shared.upstream.clear();
        const result = await shared.driver.run(job(config, false));
        procs.forEach((proc, i) => slot.cpu.set(proc.pid, (slot.cpu.get(proc.pid) ?? 0) + ((cpuMs(proc.pid) ?? Number.NaN) - before[i]!)));
        for (const value of result.latencies) slot.latencies.push(value);
        for (const value of result.ttft) slot.ttft.push(value);
        slot.errors += result.errors;
        for (const sample of result.errorSamples) if (slot.errorSamples.size < 5) slot.errorSamples.add(sample);
        slot.wallMs += result.wallMs;
        slot.roundReqPerSec.push(round(result.latencies.length / (result.wallMs / 1000), 1));
      }
    }
  } finally {
    sampler.stop();
  }
  return configs.map((config, index) => {
    const slot = acc[index]!;
    const count = slot.latencies.length;
    const procs = unique([...config.procs, ...shared.shared, { name: 'driver', pid: shared.driver.pid }]);
    const cpuMsPerRequest: Record<string, number> = {};
    for (const proc of procs) cpuMsPerRequest[proc.name] = round((slot.cpu.get(proc.pid) ?? Number.NaN) / Math.max(1, count));
    const peakRssMiB: Record<string, number> = {};
    for (const proc of procs) {
      const peak = Math.max(peakRssKiB(proc.pid) ?? 0, sampler.peak.get(proc.pid) ?? 0);
      peakRssMiB[proc.name] = round(peak / 1024, 1);
    }
    const result: ConfigResult = {
      name: config.name,
      description: config.description,
      concurrency: plan.concurrency,
      rounds: plan.rounds,
      count,
      errors: slot.errors,
      errorSamples: [...slot.errorSamples],
      latencyMs: summarize(slot.latencies),
      reqPerSec: round(count / (slot.wallMs / 1000), 1),
      roundReqPerSec: slot.roundReqPerSec,
      wallSec: round(slot.wallMs / 1000, 2),
      cpuMsPerRequest,
      sutCpuMsPerRequest: round(config.procs.reduce((sum, proc) => sum + (slot.cpu.get(proc.pid) ?? Number.NaN), 0) / Math.max(1, count)),
      peakRssMiB,
      warmup: slot.warmup,
    };
    if (slot.ttft.length) result.ttftMs = summarize(slot.ttft);
    return result;
  });
}

// ---------------------------------------------------------------- the machine

/** The commit a checkout is at, with "+changes" when its work tree differs; "unknown" outside git. */
export async function commitOf(root: string): Promise<string> {
  try {
    const commit = (await run('git', ['rev-parse', 'HEAD'], { cwd: root })).stdout.trim();
    const changed = (await run('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: root })).stdout.trim() !== '';
    return changed ? `${commit}+changes` : commit;
  } catch {
    return 'unknown';
  }
}

export async function machineInfo(): Promise<Record<string, unknown>> {
  const commit = await commitOf(repoRoot);
  let natsVersion: string | undefined;
  try {
    natsVersion = (await run('nats-server', ['--version'])).stdout.trim();
  } catch {
    natsVersion = undefined;
  }
  const cpu = cpus();
  return {
    cores: cpu.length,
    cpuModel: cpu[0]?.model,
    memoryGiB: round(totalmem() / 2 ** 30, 1),
    node: process.version,
    kernel: release(),
    platform: process.platform,
    arch: process.arch,
    natsServer: natsVersion,
    commit,
  };
}
