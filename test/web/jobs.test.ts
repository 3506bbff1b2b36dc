// The jobs page in real Chromium against the real platform (keys off, the mock provider streaming
// small pieces 40 ms apart so a job runs for seconds): submit and watch the live list, open a job
// and watch its text stream in, cancel one from its page, a refused form, an unknown job.
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { proto } from '@elexirion/kit';
import { accessibilityViolations, describeViolations, saveScreenshot } from '@elexirion/testing/browser';
import type { Page } from 'playwright-core';
import { startWebStack, type WebStack } from './web-stack.js';

// The answers the mock streams: 4 characters every 40 ms, so the story takes about 3 s, the tale
// (numbered parts: a lost or repeated piece shows) about 3 s and the saga about 25 s (it is
// cancelled long before).
const STORY = `Once upon a time a river ran through a quiet valley. ${'It carried leaves, stones and stories from the hills down to the sea, and every village on its banks had a song about it. '.repeat(2)}The end.`;
const SAGA = `The saga begins. ${'Chapter after chapter, the heroes walked on through rain and wind without ever reaching the end of the road. '.repeat(20)}`;
const TALE = Array.from({ length: 14 }, (_, part) => `Part ${part + 1} of the tale.`).join(' ');
const TABLE = `responses:
  - pattern: tell me the numbered tale
    response: ${JSON.stringify(TALE)}
  - pattern: tell me the river story
    response: ${JSON.stringify(STORY)}
  - pattern: tell me the endless saga
    response: ${JSON.stringify(SAGA)}
`;

describe('jobs page', () => {
  let web: WebStack;
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'elexirion-web-jobs-'));
    const table = join(dir, 'mock-responses.yaml');
    writeFileSync(table, TABLE);
    // The shipped pipelines and one that is not valid (the form shows it as such).
    const pipelines = join(dir, 'pipelines');
    cpSync(join(import.meta.dirname, '../../pipelines'), pipelines, { recursive: true });
    writeFileSync(join(pipelines, 'broken.yaml'), 'workflow:\n  name: broken\n  steps:\n    - name: oops\n      type: no_such_step\n');
    web = await startWebStack({ env: { PIPELINES_DIR: pipelines, PROVIDER_MOCK_RESPONSES: table, PROVIDER_MOCK_STREAM_CHUNK_DELAY_MS: '40', PROVIDER_MOCK_STREAM_CHUNK_CHARS: '4' } });
  }, 120_000);
  afterAll(async () => {
    await web?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** A page that records script errors, CSP refusals included. */
  async function openPage(path: string, colorScheme: 'light' | 'dark' = 'light'): Promise<{ page: Page; problems: string[] }> {
    const { page } = await web.browser.newPage(web.baseUrl, { colorScheme });
    const problems: string[] = [];
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(message.text());
    });
    page.on('pageerror', (error) => problems.push(error.message));
    await page.goto(path);
    return { page, problems };
  }

  async function expectAccessible(page: Page): Promise<void> {
    const violations = await accessibilityViolations(page);
    expect(violations, describeViolations(violations)).toEqual([]);
  }

  /** Submits a chat message on /jobs and answers the new job's id (from the page's link to it). */
  async function submitMessage(page: Page, message: string): Promise<string> {
    await page.getByLabel('What to run').selectOption('');
    await page.getByLabel('Message').fill(message);
    await page.getByRole('button', { name: 'Submit job' }).click();
    const link = page.locator('.job-submitted a');
    await link.waitFor();
    const href = await link.getAttribute('href');
    expect(href).toMatch(/^\/jobs\/[A-Za-z0-9_-]+$/);
    return href!.slice('/jobs/'.length);
  }

  it('submits a job and shows it in the live list as running, then succeeded, without reloading', async () => {
    const { page, problems } = await openPage('/jobs');
    await page.getByRole('heading', { name: 'Submit a job' }).waitFor();
    await page.evaluate('window.marker = 1');
    const jobId = await submitMessage(page, 'Please tell me the river story.');

    const row = page.locator(`tr[data-job-id="${jobId}"]`);
    const status = row.locator('td').nth(0);
    await expect.poll(() => status.textContent(), { timeout: 10_000 }).toBe('running');
    expect(await row.locator('td').nth(1).textContent()).toBe('general');
    expect(await row.locator('td').nth(2).textContent()).toBe('submitted');
    await expect.poll(() => status.textContent(), { timeout: 20_000 }).toBe('succeeded');
    // The list's polite live region said so; the table has header cells; the same document.
    await expect.poll(() => page.locator('.jobs-list [aria-live="polite"]').textContent()).toContain('running → succeeded');
    expect(await page.locator('.jobs-table th[scope="col"]').allTextContents()).toEqual(['Job', 'Status', 'Pipeline', 'Origin', 'Progress', 'Created', 'Started', 'Finished', 'Duration']);
    expect(await page.evaluate('window.marker')).toBe(1);
    expect(await page.locator('.jobs-updated').textContent()).toMatch(/^Live: updated every 2 s, last at /);

    // Filtering by status: the succeeded job is listed under succeeded, not under failed.
    await page.getByLabel('Status').selectOption('JOB_STATUS_FAILED');
    await page.getByText('No jobs match these filters.').waitFor();
    await page.getByLabel('Status').selectOption('JOB_STATUS_SUCCEEDED');
    await row.waitFor();

    await expectAccessible(page);
    expect(problems).toEqual([]);
  }, 60_000);

  it('opens a job from the list and follows its stream as the text grows to the output', async () => {
    const { page, problems } = await openPage('/jobs');
    await page.getByRole('heading', { name: 'Submit a job' }).waitFor();
    const jobId = await submitMessage(page, 'Now tell me the river story again.');
    await page.locator(`tr[data-job-id="${jobId}"] a`).click();
    await page.waitForURL(`${web.baseUrl}/jobs/${jobId}`);
    await page.getByRole('heading', { name: /^Job / }).waitFor();

    // The text arrives piece by piece: seen part-written before it is whole.
    const streamed = page.locator('.job-stream pre.job-text');
    const lengths: number[] = [];
    await expect
      .poll(
        async () => {
          const text = (await streamed.count()) > 0 ? ((await streamed.first().textContent()) ?? '') : '';
          lengths.push(text.length);
          return text;
        },
        { timeout: 20_000, interval: 50 },
      )
      .toBe(STORY);
    const partial = lengths.filter((length) => length > 0 && length < STORY.length);
    expect(partial.length, `lengths seen: ${lengths.join(',')}`).toBeGreaterThan(0);

    await expect.poll(() => page.locator('.job-output').textContent(), { timeout: 10_000 }).toBe(STORY);
    await expect.poll(() => page.locator('.job-heading .badge').textContent()).toBe('succeeded');
    await expect.poll(() => page.locator('.job-stream-state').textContent()).toContain('All of the job\'s events received');
    // The record: its step with model, provider and prompt version; the events in order.
    const step = page.locator('.job-steps tbody tr').first();
    expect(await step.locator('th').textContent()).toContain('answer');
    const { job } = await web.stack.gateway.getJob({ jobId });
    const served = job!.steps[0]!;
    expect(await step.locator('td').allTextContents()).toEqual(expect.arrayContaining(['completed', served.model, served.provider, served.promptVersion]));
    expect(await page.locator('.job-events li').last().textContent()).toContain('Status succeeded');

    await expectAccessible(page);
    await saveScreenshot(page, 'job');
    expect(problems).toEqual([]);
  }, 60_000);

  it('resumes the stream after a dropped connection from the last event seen, nothing lost or repeated', async () => {
    const { job: submitted } = await web.stack.gateway.submitJob({ message: 'Please tell me the numbered tale.' });
    const jobId = submitted!.jobId;
    const { page, problems } = await openPage('/jobs');
    // The first connection to the job's events is cut after half of them (its body ends without
    // the job's last event, as when a proxy or the network drops it); the page must reconnect with
    // Last-Event-ID and get exactly the rest.
    let cutAfter: string | undefined;
    const resumedWith: (string | undefined)[] = [];
    await page.route(`**/v1/jobs/${jobId}/events`, async (route) => {
      if (cutAfter !== undefined) {
        resumedWith.push(route.request().headers()['last-event-id']);
        await route.continue();
        return;
      }
      const response = await route.fetch();
      const events = (await response.text()).split('\n\n').filter((event) => /^id:/m.test(event));
      const kept = events.slice(0, Math.floor(events.length / 2));
      cutAfter = /^id: ?(\d+)$/m.exec(kept.at(-1) ?? '')?.[1] ?? '';
      await route.fulfill({ response, body: `${kept.join('\n\n')}\n\n` });
    });
    await page.goto(`/jobs/${jobId}`);
    const streamed = page.locator('.job-stream pre.job-text');
    const text = async () => ((await streamed.count()) > 0 ? ((await streamed.first().textContent()) ?? '') : '');
    await expect.poll(text, { timeout: 30_000 }).toBe(TALE);
    await expect.poll(() => page.locator('.job-stream-state').textContent(), { timeout: 10_000 }).toContain('it has ended');
    expect(cutAfter).toMatch(/^\d+$/);
    expect(resumedWith[0]).toBe(cutAfter);
    // Each event once, in order.
    const sequences = (await page.locator('.job-events li').allTextContents()).map((entry) => Number(/#(\d+)/.exec(entry)?.[1]));
    expect(sequences).toEqual([...new Set(sequences)].sort((a, b) => a - b));
    expect(await page.locator('.job-output').textContent()).toBe(TALE);
    expect(problems).toEqual([]);
  }, 60_000);

  it('cancels a running job from its page and says who cancelled it at which step', async () => {
    const { job: submitted } = await web.stack.gateway.submitJob({ message: 'Please tell me the endless saga.', idempotencyKey: `web-jobs-cancel-${Date.now()}` });
    const jobId = submitted!.jobId;
    const { page, problems } = await openPage(`/jobs/${jobId}`);
    // Running, its text arriving: then cancel.
    await expect.poll(async () => ((await page.locator('.job-stream pre.job-text').count()) > 0 ? await page.locator('.job-stream pre.job-text').first().textContent() : ''), { timeout: 20_000 }).toMatch(/^The saga/);
    await page.getByLabel('Reason (optional)').fill('seen enough');
    await page.getByRole('button', { name: 'Cancel job' }).click();
    await expect.poll(() => page.locator('.job-cancel-result').textContent(), { timeout: 10_000 }).toBe('Cancelled by api at step answer.');

    const { job } = await web.stack.gateway.getJob({ jobId });
    expect(job).toMatchObject({ status: proto.JobStatus.JOB_STATUS_CANCELLED, cancelledBy: 'api', cancelledAtStep: 'answer', error: 'cancelled by api: seen enough' });
    // The page follows the job to its end: cancelled, the Cancel button gone, the stream ended.
    await expect.poll(() => page.locator('.job-heading .badge').textContent()).toBe('cancelled');
    await expect.poll(() => page.locator('.job-stream-state').textContent(), { timeout: 10_000 }).toContain('it has ended');
    expect(await page.getByRole('button', { name: 'Cancel job' }).count()).toBe(0);
    expect(await page.locator('.job-cancelled').textContent()).toBe('Cancelled by api at step answer.');
    expect((await page.locator('.job-stream pre.job-text').first().textContent())!.length).toBeLessThan(SAGA.length);
    await expectAccessible(page);
    expect(problems).toEqual([]);

    // A job's page in the dark scheme, read afresh: the cancellation in its record.
    const dark = await openPage(`/jobs/${jobId}`, 'dark');
    await expect.poll(() => dark.page.locator('.job-cancelled').textContent()).toBe('Cancelled by api at step answer.');
    await expect.poll(() => dark.page.locator('.job-stream-state').textContent()).toContain('it has ended');
    await expectAccessible(dark.page);
    await saveScreenshot(dark.page, 'job-dark');
    expect(dark.problems).toEqual([]);
  }, 60_000);

  it('refuses a pipeline job without its required input, naming the input, and submits nothing', async () => {
    const { page, problems } = await openPage('/jobs');
    const what = page.getByLabel('What to run');
    await what.locator('option[value="analysis"]').waitFor({ state: 'attached' });
    // A pipeline that is not valid cannot be chosen, and the form says why.
    expect(await what.locator('option[value="broken"]').textContent()).toBe('Pipeline broken (not valid)');
    expect(await what.locator('option[value="broken"]').isDisabled()).toBe(true);
    const invalid = page.locator('.job-invalid-pipelines');
    expect(await invalid.locator('summary').textContent()).toBe('1 pipeline is not valid and cannot run');
    await invalid.locator('summary').click();
    expect(await invalid.locator('li').textContent()).toMatch(/^broken: .*broken\.yaml:\d+:\d+/);
    await what.selectOption('analysis');
    // Its declared inputs as labelled fields: code required, goal optional.
    const code = page.getByRole('textbox', { name: 'code', exact: true });
    expect(await code.getAttribute('required')).not.toBeNull();
    expect(await page.getByRole('textbox', { name: 'goal', exact: true }).getAttribute('required')).toBeNull();
    await page.getByRole('button', { name: 'Submit job' }).click();

    const alert = page.getByRole('alert').filter({ hasText: 'The job was not submitted' });
    await alert.waitFor();
    expect(await alert.textContent()).toContain('code: required by analysis (The code to analyse)');
    expect(await code.getAttribute('aria-invalid')).toBe('true');
    expect(await page.evaluate("document.activeElement?.getAttribute('data-field')")).toBe('inputs.code');
    const { jobs } = await web.stack.gateway.listJobs({ pipeline: 'analysis' });
    expect(jobs).toEqual([]);

    // Once given, the same form submits.
    await code.fill('function add(a, b) { return a + b; }');
    await page.getByRole('button', { name: 'Submit job' }).click();
    await page.locator('.job-submitted a').waitFor();
    expect(await page.locator('.job-submitted').textContent()).toContain('(analysis)');
    expect(await code.getAttribute('aria-invalid')).toBeNull();
    expect(problems).toEqual([]);
  }, 60_000);

  it('pages through the jobs, newest first, filtered by pipeline', async () => {
    const submitted: string[] = [];
    for (let review = 1; review <= 11; review++) {
      const { job } = await web.stack.gateway.submitJob({ pipeline: 'review-sentiment', inputs: { review: `Review ${review}: I love it.` } });
      submitted.push(job!.jobId);
    }
    const { jobs } = await web.stack.gateway.listJobs({ pipeline: 'review-sentiment', pageSize: 100 });
    const newestFirst = jobs.map((job) => job.jobId);
    expect([...newestFirst].sort()).toEqual([...submitted].sort());

    const { page, problems } = await openPage('/jobs');
    await page.locator('.jobs-table').waitFor();
    await page.getByLabel('Pipeline', { exact: true }).selectOption('review-sentiment');
    await page.getByLabel('Per page').selectOption('10');
    const rows = page.locator('.jobs-table tbody tr');
    const listed = async () => {
      const ids: (string | null)[] = [];
      for (let row = 0; row < (await rows.count()); row++) ids.push(await rows.nth(row).getAttribute('data-job-id'));
      return ids;
    };
    await expect.poll(listed).toEqual(newestFirst.slice(0, 10));
    await page.getByRole('button', { name: 'Older jobs' }).click();
    await expect.poll(listed).toEqual(newestFirst.slice(10));
    expect(await page.locator('.jobs-pager').textContent()).toContain('Page 2');
    expect(await page.getByRole('button', { name: 'Older jobs' }).isDisabled()).toBe(true);
    await page.getByRole('button', { name: 'Newer jobs' }).click();
    await expect.poll(listed).toEqual(newestFirst.slice(0, 10));

    // Hidden (another tab in front), the list stops asking and says so; shown again, it goes on.
    const setVisibility = (state: string) =>
      page.evaluate(`Object.defineProperty(document, 'visibilityState', { value: '${state}', configurable: true }); document.dispatchEvent(new Event('visibilitychange'))`);
    await setVisibility('hidden');
    await expect.poll(() => page.locator('.jobs-updated').textContent()).toBe('Paused while this page is hidden.');
    const asked = page.waitForResponse((response) => new URL(response.url()).pathname === '/v1/jobs' && response.request().method() === 'GET');
    await setVisibility('visible');
    expect((await asked).status()).toBe(200);
    await expect.poll(() => page.locator('.jobs-updated').textContent()).toMatch(/^Live: updated every 2 s/);
    expect(problems).toEqual([]);
  }, 60_000);

  it('sends one idempotency key per submission: submitted again after a lost answer, the same job comes back', async () => {
    const { page, problems } = await openPage('/jobs');
    const what = page.getByLabel('What to run');
    await what.locator('option[value="review-sentiment"]').waitFor({ state: 'attached' });
    await what.selectOption('review-sentiment');
    const review = page.getByRole('textbox', { name: 'review', exact: true });
    await review.fill('Superb, I recommend it.');
    // The first submission reaches the gateway, which stores the job, but its answer is lost.
    const keys: string[] = [];
    await page.route('**/v1/jobs', async (route) => {
      if (route.request().method() !== 'POST') return route.fallback();
      keys.push((route.request().postDataJSON() as { idempotencyKey: string }).idempotencyKey);
      if (keys.length > 1) return route.continue();
      await route.fetch();
      await route.abort('connectionreset');
    });
    await page.getByRole('button', { name: 'Submit job' }).click();
    const alert = page.getByRole('alert').filter({ hasText: 'No answer from the gateway' });
    await alert.waitFor();
    expect(await alert.textContent()).toContain('NETWORK');

    await page.getByRole('button', { name: 'Submit job' }).click();
    await expect.poll(() => page.locator('.job-submitted').textContent()).toContain('Already submitted (same idempotency key): job');
    expect(keys[1]).toBe(keys[0]);
    const { jobs } = await web.stack.gateway.listJobs({ pipeline: 'review-sentiment', pageSize: 500 });
    expect(jobs.filter((job) => job.idempotencyKey === keys[0])).toHaveLength(1);

    // A changed form is a new submission, with a new key.
    await review.fill('Flimsy, it broke.');
    await page.getByRole('button', { name: 'Submit job' }).click();
    await expect.poll(() => page.locator('.job-submitted').textContent()).toContain('Submitted job');
    expect(keys).toHaveLength(3);
    expect(keys[2]).not.toBe(keys[0]);
    // The lost answer is the one error the page shows (as a failed request in the console).
    expect(problems.filter((problem) => !problem.includes('net::ERR_CONNECTION_RESET'))).toEqual([]);
  }, 60_000);

  it("shows a chat's job, recorded once it ended, with its output and no event stream", async () => {
    const answer = await web.stack.gateway.chat({ message: 'Please tell me the numbered tale.' });
    // The agent records an inline call a moment after it has answered.
    await expect.poll(() => web.stack.gateway.getJob({ jobId: answer.jobId }).then(() => true, () => false)).toBe(true);
    const { page, problems } = await openPage(`/jobs/${answer.jobId}`);
    await expect.poll(() => page.locator('.job-output').textContent(), { timeout: 10_000 }).toBe(TALE);
    expect(await page.locator('.job-stream-state').textContent()).toContain('has no event stream');
    expect(await page.getByRole('alert').count()).toBe(0);
    expect(await page.getByRole('button', { name: 'Cancel job' }).count()).toBe(0);
    expect(problems).toEqual([]);
  }, 30_000);

  it('says plainly that an unknown job does not exist', async () => {
    const { page } = await openPage('/jobs/00000000-0000-4000-8000-000000000000');
    const alert = page.getByRole('alert');
    await alert.waitFor();
    expect(await alert.textContent()).toContain('No such job');
    expect(await alert.textContent()).toContain('NOT_FOUND');
    await expectAccessible(page);
  }, 30_000);

  it('lists jobs of every kind accessibly in both schemes', async () => {
    for (const colorScheme of ['light', 'dark'] as const) {
      const { page, problems } = await openPage('/jobs', colorScheme);
      await page.locator('.jobs-table tbody tr').first().waitFor();
      // By now: succeeded, cancelled, chat and submitted jobs, several pipelines.
      expect(await page.locator('.jobs-table tbody tr').count()).toBeGreaterThan(5);
      await expectAccessible(page);
      await saveScreenshot(page, colorScheme === 'light' ? 'jobs' : 'jobs-dark');
      expect(problems).toEqual([]);
    }
  }, 30_000);
});
