// npm run drill:jobs [-- --jobs 90 --replicas 3 --concurrency 8 --step-delay-ms 1000 --ack-wait-ms 2000 --kill-at random|step-finished|upstream-answer --out DIR]
// The jobs' kill -9 drill: a real nats-server, provider (its fake upstreams in this process),
// executor and 2-3 agent replicas; many 3-step jobs submitted across the replicas; the replica
// running the most of them killed with SIGKILL once the first steps are done: at a random moment
// (--kill-at random), or the moment one of its jobs' step-finished events is seen (--kill-at
// step-finished: the kill lands at a step boundary, as the next step starts), or the moment the
// fake upstream has sent a held job's step its answer (--kill-at upstream-answer: the answer is
// then on its way through the provider to the executor, and that step may run again). Prints and writes
// (bench/results/<run>-drill-jobs/drill-jobs.json): jobs submitted, replica killed at, jobs lost,
// steps run twice (counted at the fake upstream), time to take-over (kill -> the first upstream
// call of a job the killed replica held).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { proto } from '@elexirion/kit';
import { eventually, repoRoot, startAgent, startExecutor, startNats, startProvider, stopAll, testProviderConfig, waitFor, type AgentUnderTest } from '@elexirion/testing';
import { benchDir, checkBuilt, commitOf, log } from './harness.ts';
import { createRunFolder, runName } from './run-folder.ts';

const { values } = parseArgs({
  options: {
    jobs: { type: 'string', default: '90' },
    replicas: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '8' },
    'step-delay-ms': { type: 'string', default: '1000' },
    'ack-wait-ms': { type: 'string', default: '2000' },
    'kill-at': { type: 'string', default: 'random' },
    out: { type: 'string' },
  },
});

function whole(name: string, min: number): number {
  const raw = values[name as keyof typeof values] as string;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min) {
    console.error(`drill:jobs: --${name}: expected a whole number >= ${min}, got ${raw}`);
    process.exit(64);
  }
  return value;
}

const KILL_AT = ['random', 'step-finished', 'upstream-answer'] as const;
type KillAt = (typeof KILL_AT)[number];
if (!KILL_AT.includes(values['kill-at'] as KillAt)) {
  console.error(`drill:jobs: --kill-at: expected ${KILL_AT.join(' or ')}, got ${values['kill-at']}`);
  process.exit(64);
}

const settings = {
  jobs: whole('jobs', 1),
  replicas: whole('replicas', 2),
  concurrency: whole('concurrency', 1),
  stepDelayMs: whole('step-delay-ms', 0),
  ackWaitMs: whole('ack-wait-ms', 100),
  killAt: values['kill-at'] as KillAt,
};

// Each prompt starts with the job's message and the step's name, so the upstream's log says
// which job's which step every call was.
const pipeline = `
workflow:
  name: drill-three
  inputs:
    message: { type: string, required: true }
  steps:
    - { name: first, type: claude, prompt: "{{inputs.message}} step first" }
    - { name: second, type: claude, prompt: "{{inputs.message}} step second after {{steps.first.output}}" }
    - { name: third, type: claude, prompt: "{{inputs.message}} step third after {{steps.second.output}}" }
`;
const PROMPT = /^(drill-job-\d+) step (first|second|third)/;

checkBuilt();
const startedAt = new Date();
const pipelines = mkdtempSync(join(tmpdir(), 'elexirion-drill-pipelines-'));
writeFileSync(join(pipelines, 'drill-three.yaml'), pipeline);
const agents: AgentUnderTest[] = [];
try {
  log(`starting nats, provider, executor and ${settings.replicas} agent replicas`);
  const nats = await startNats();
  // Room at the provider for every replica's every job: a call waits at the upstream, not in a queue.
  const provider = await startProvider({ config: testProviderConfig({ anthropic: { max_concurrency: 1_024, max_queue: 1_024 } }) });
  const fake = provider.fakes.anthropic;
  fake.setDefault({ delayMs: settings.stepDelayMs });
  const executor = await startExecutor({ providerPort: provider.grpcPort, natsUrl: nats.url, env: { PIPELINES_DIR: pipelines, TELEMETRY_EVENTS: 'false', LOG_LEVEL: 'warn' } });
  const env = { AGENT_JOB_ACK_WAIT_MS: String(settings.ackWaitMs), AGENT_MAX_CONCURRENT_JOBS: String(settings.concurrency), LOG_LEVEL: 'warn' };
  for (let index = 0; index < settings.replicas; index += 1) {
    agents.push(await startAgent({ name: `agent-${index + 1}`, executorPort: executor.grpcPort, natsUrl: nats.url, env }));
  }

  log(`submitting ${settings.jobs} jobs across the replicas`);
  const jobIds = await Promise.all(
    Array.from({ length: settings.jobs }, async (_, index) => {
      const { job } = await agents[index % agents.length]!.client.submitJob({ pipeline: 'drill-three', message: `drill-job-${index}` });
      return job!.jobId;
    }),
  );

  const firstWave = Math.min(settings.jobs, settings.replicas * settings.concurrency);
  if (settings.killAt === 'random') {
    // Mid-run: every replica busy, the first steps of its first jobs done.
    await waitFor('the first wave of jobs to reach their second step', () => fake.requests.filter((request) => / step second /.test(promptOf(request))).length >= Math.ceil(firstWave / 2), 120_000);
  } else {
    // At a step boundary: the first wave's jobs started together, so their first steps end
    // together too, and the kill meets every held job at (or within ms of) its boundary.
    await waitFor('the first wave of jobs at the upstream', () => fake.requests.filter((request) => / step first/.test(promptOf(request))).length >= firstWave, 120_000);
  }
  const running = await listAll(agents[0]!, [proto.JobStatus.JOB_STATUS_RUNNING]);
  const byReplica = new Map<string, string[]>();
  for (const job of running) byReplica.set(job.replica, [...(byReplica.get(job.replica) ?? []), job.jobId]);
  const [victimName, held] = [...byReplica.entries()].sort((a, b) => b[1].length - a[1].length)[0]!;
  const victim = agents.find((agent) => agent.name === victimName)!;
  const heldMessages = new Set((await Promise.all(held.map(async (jobId) => (await victim.client.getJob({ jobId })).job!.message))));
  let killedStep: string | undefined;
  if (settings.killAt === 'random') {
    // At a moment not tied to the steps' boundaries (the wait above ends as the second steps start).
    await new Promise((resolve) => setTimeout(resolve, Math.random() * settings.stepDelayMs));
  } else if (settings.killAt === 'step-finished') {
    // The first step of a held job to finish from now on (not its last: a next step then starts).
    killedStep = await firstStepFinished(survivorOf(victim), held);
  } else {
    killedStep = await firstUpstreamAnswer(fake, heldMessages);
  }
  victim.process.child.kill('SIGKILL');
  const killedAt = Date.now();
  await victim.process.exited;
  log(`killed ${victimName} (kill -9) holding ${held.length} running jobs, ${Math.round(killedAt - startedAt.getTime())} ms into the drill${killedStep ? `, as ${killedStep} finished` : ''}`);
  const survivor = survivorOf(victim);

  const finished = await eventually(
    'every job to end',
    async () => {
      const jobs = await listAll(survivor, []);
      const done = jobs.filter((job) => job.status !== proto.JobStatus.JOB_STATUS_QUEUED && job.status !== proto.JobStatus.JOB_STATUS_RUNNING);
      return done.length === settings.jobs ? jobs : undefined;
    },
    300_000,
  );
  const submitted = new Set(jobIds);
  const succeeded = finished.filter((job) => submitted.has(job.jobId) && job.status === proto.JobStatus.JOB_STATUS_SUCCEEDED);
  const takenOver = finished.filter((job) => job.deliveries > 1);

  // Steps run twice: a (job, step) whose call completed at the upstream more than once. A call
  // the kill cut off (aborted by its client) did not complete.
  const completed = new Map<string, number[]>();
  let cutOff = 0;
  for (const request of fake.requests) {
    const match = PROMPT.exec(promptOf(request));
    if (!match) continue;
    if (request.abortedByClient) {
      cutOff += 1;
      continue;
    }
    const key = `${match[1]}/${match[2]}`;
    completed.set(key, [...(completed.get(key) ?? []), request.finishedAt ?? request.receivedAt]);
  }
  // For each step run twice: how long before the kill its first call's answer left the upstream.
  // And whether the killed replica had been told the step finished (its step-finished event is in
  // the job's events before the take-over): then the executor had the result, and should have kept it.
  const jobOf = new Map(finished.map((job) => [job.message, job.jobId]));
  const runTwice = await Promise.all(
    [...completed.entries()]
      .filter(([, answers]) => answers.length > 1)
      .map(async ([step, answers]) => ({ step, firstAnsweredMsBeforeKill: killedAt - answers[0]!, reportedFinishedBeforeTakeOver: await finishedBeforeTakeOver(survivor, jobOf.get(step.split('/')[0]!)!, step.split('/')[1]!) })),
  );
  const stepsRunTwice = runTwice.length;
  // The window: every step of a held job whose (first) answer left the upstream in the 200 ms
  // before the kill, and whether it ran again (its answer had not reached the executor's run).
  const answeredJustBeforeKill = [...completed.entries()]
    .filter(([step, answers]) => heldMessages.has(step.split('/')[0]!) && answers[0]! <= killedAt && killedAt - answers[0]! <= 200)
    .map(([step, answers]) => ({ step, answeredMsBeforeKill: killedAt - answers[0]!, ranAgain: answers.length > 1 }))
    .sort((a, b) => a.answeredMsBeforeKill - b.answeredMsBeforeKill);
  const firstTakeover = fake.requests
    // Not a call the killed replica's run made before the executor saw the cancel: it is cut off.
    .filter((request) => request.receivedAt > killedAt && !request.abortedByClient && heldMessages.has(PROMPT.exec(promptOf(request))?.[1] ?? ''))
    .map((request) => request.receivedAt)
    .sort((a, b) => a - b)[0];

  const results = {
    drill: 'jobs: kill -9 of an agent replica mid-run',
    command: `npm run drill:jobs -- --jobs ${settings.jobs} --replicas ${settings.replicas} --concurrency ${settings.concurrency} --step-delay-ms ${settings.stepDelayMs} --ack-wait-ms ${settings.ackWaitMs} --kill-at ${settings.killAt}`,
    startedAt: startedAt.toISOString(),
    commit: await commitOf(repoRoot),
    settings,
    jobsSubmitted: settings.jobs,
    replicaKilled: { name: victimName, atMsIntoDrill: killedAt - startedAt.getTime(), runningJobsHeld: held.length, killAt: settings.killAt, ...(killedStep ? { asStepFinished: killedStep } : {}) },
    // A step whose answer was on its way back from the upstream when the kill cancelled its run
    // never reached the executor's checkpoint, so the resumed run calls it again: counted in
    // stepsRunTwice, with how long before the kill its first answer left the upstream.
    jobsSucceeded: succeeded.length,
    jobsLost: settings.jobs - succeeded.length,
    jobsTakenOver: takenOver.length,
    resumedStepsOfTakenOver: takenOver.reduce((sum, job) => sum + job.resumedSteps, 0),
    stepsRunTwice,
    stepsRunTwiceDetail: runTwice,
    answeredJustBeforeKill,
    upstreamCallsCutOffByTheKill: cutOff,
    timeToTakeoverMs: firstTakeover === undefined ? null : firstTakeover - killedAt,
  };
  const commit = results.commit;
  const outDir = resolve(values.out ?? join(benchDir, 'results'));
  const { dir } = createRunFolder(outDir, `${runName(startedAt, commit)}-drill-jobs`);
  writeFileSync(join(dir, 'drill-jobs.json'), `${JSON.stringify(results, null, 2)}\n`);
  console.log(
    [
      `jobs submitted:        ${results.jobsSubmitted}`,
      `replica killed:        ${victimName} at ${results.replicaKilled.atMsIntoDrill} ms (${killedStep ? `as ${killedStep} finished` : 'at random'}), holding ${held.length} running jobs`,
      `jobs lost:             ${results.jobsLost} (succeeded ${results.jobsSucceeded}, taken over ${results.jobsTakenOver})`,
      `steps run twice:       ${stepsRunTwice} (upstream calls cut off by the kill: ${cutOff})`,
      `time to take-over:     ${results.timeToTakeoverMs ?? 'none'} ms (ack wait ${settings.ackWaitMs} ms)`,
      `results:               ${relative(process.cwd(), join(dir, 'drill-jobs.json'))}`,
    ].join('\n'),
  );
  for (const agent of agents) await agent.stop();
  await executor.stop();
  await provider.stop();
  await nats.stop();
} finally {
  await stopAll();
  rmSync(pipelines, { recursive: true, force: true });
}

function survivorOf(victim: AgentUnderTest): AgentUnderTest {
  return agents.find((agent) => agent !== victim)!;
}

/**
 * Watches the held jobs' events (through another replica, from each job's latest event on) and
 * resolves with "<message>/<step>" at the first step-finished event of a step that is not the last.
 */
async function firstStepFinished(watcher: AgentUnderTest, jobIds: string[]): Promise<string> {
  const stop = new AbortController();
  try {
    return await Promise.any(
      jobIds.map(async (jobId) => {
        const { job } = await watcher.client.getJob({ jobId });
        for await (const { event } of watcher.client.watchJob({ jobId, afterSequence: job!.lastSequence }, { signal: stop.signal })) {
          const step = event?.stepFinished?.name;
          if (step && step !== 'third') return `${job!.message}/${step}`;
        }
        throw new Error(`job ${jobId} ended before a step finished`);
      }),
    );
  } finally {
    stop.abort();
  }
}

/** "<message>/<step>" once the fake upstream has answered a held job's step (not its last) from now on. */
async function firstUpstreamAnswer(fake: { requests: { body: { messages?: { content: unknown }[] }; finishedAt?: number; abortedByClient: boolean }[] }, messages: Set<string>): Promise<string> {
  const since = Date.now();
  for (;;) {
    for (const request of fake.requests) {
      if (request.finishedAt === undefined || request.finishedAt < since || request.abortedByClient) continue;
      const match = PROMPT.exec(promptOf(request));
      if (match && messages.has(match[1]!) && match[2] !== 'third') return `${match[1]}/${match[2]}`;
    }
    // A tight poll, as the kill should land right after the answer left.
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/** Whether the job's events say `step` finished before the job was taken over. */
async function finishedBeforeTakeOver(watcher: AgentUnderTest, jobId: string, step: string): Promise<boolean> {
  for await (const { event } of watcher.client.watchJob({ jobId, afterSequence: 0 })) {
    if (event?.statusChanged?.detail.startsWith('taken over')) return false;
    if (event?.stepFinished?.name === step) return true;
  }
  return false;
}

function promptOf(request: { body: { messages?: { content: unknown }[] } }): string {
  const content = request.body?.messages?.at(-1)?.content;
  if (typeof content === 'string') return content;
  return Array.isArray(content) ? content.map((part: { text?: string }) => part.text ?? '').join('') : '';
}

/** Every job with one of `statuses` (all when empty), through ListJobs' pages. */
async function listAll(agent: AgentUnderTest, statuses: proto.JobStatus[]): Promise<proto.Job[]> {
  const jobs: proto.Job[] = [];
  let pageToken = '';
  do {
    const page = await agent.client.listJobs({ statuses, pageSize: 200, pageToken });
    jobs.push(...page.jobs);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return jobs;
}
