// The dashboard in real Chromium against the real platform: load driven through the gateway
// (chats that succeed and chats the mock provider refuses) moves the figures without a reload,
// errors by status show the failures, health shows the services, the range picker changes what
// is read, and the page passes axe-core in both schemes.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { accessibilityViolations, describeViolations, saveScreenshot } from '@elexirion/testing/browser';
import { startWebStack, type WebStack } from './web-stack.js';

const SUCCEEDING = 24;
const FAILING = 6;

// The mock provider's answers: one that works, one refused as a vendor refuses a bad request
// (400: not retried, not counted against the breaker, so the other chats still go through).
const MOCK_RESPONSES = `responses:
  - pattern: dashboard load
    response: The dashboard moved.
  - pattern: dashboard refusal
    status: 400
    message: refused on purpose by the dashboard test
  - pattern: dashboard outage
    status: 503
    message: down on purpose by the dashboard test
`;

/** A table's body rows as their cells' text (read from the DOM: closed <details> included). */
async function tableRows(page: Page, label: string): Promise<string[][]> {
  const rows = page.locator(`table[aria-label="${label}"] tbody tr`);
  const count = await rows.count();
  const result: string[][] = [];
  for (let index = 0; index < count; index++) {
    const cells = rows.nth(index).locator('th, td');
    result.push((await cells.allTextContents()).map((text) => text.trim()));
  }
  return result;
}

const figure = (page: Page, name: string) => page.locator(`[data-figure="${name}"]`).textContent();
const liveBadge = (page: Page) => page.locator('.live-state .badge').textContent();

describe('dashboard page', () => {
  let web: WebStack;
  let directory: string;
  beforeAll(async () => {
    directory = mkdtempSync(join(tmpdir(), 'elexirion-dashboard-'));
    const responses = join(directory, 'mock-responses.yaml');
    writeFileSync(responses, MOCK_RESPONSES);
    web = await startWebStack({ env: { PROVIDER_MOCK_RESPONSES: responses } });
  }, 120_000);
  afterAll(async () => {
    await web?.stop();
    if (directory) rmSync(directory, { recursive: true, force: true });
  });

  async function chat(message: string): Promise<number> {
    const response = await fetch(`${web.baseUrl}/v1/chat`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ message }) });
    await response.arrayBuffer();
    return response.status;
  }

  it('moves under load without reloading: throughput, errors by status, providers, health', async () => {
    // A candidate prompt for the chats' pipeline, on half the runs: something to compare.
    const published = await fetch(`${web.baseUrl}/v1/prompts/general/answer/versions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ template: { prompt: '{{inputs.message}}', system: 'You are Elexirion; answer in one line.' }, source: 'manual', description: 'dashboard test candidate', rolloutWeight: 0.5 }),
    });
    expect(published.status).toBe(200);
    const candidate = ((await published.json()) as { version: { id: string } }).version.id;

    const { page } = await web.browser.newPage(web.baseUrl);
    const problems: string[] = [];
    page.on('console', (message) => {
      // A 503 from the health stream while the monitor computes its first verdict is retried by
      // the page (and logged by Chromium); anything else is a problem.
      if (message.type() === 'error' && !message.text().includes('status of 503')) problems.push(message.text());
    });
    page.on('pageerror', (error) => problems.push(error.message));
    await page.goto('/dashboard');
    await expect.poll(() => page.title()).toBe('Dashboard · Elexirion');

    // A fresh platform: nothing ran yet, said in words.
    await page.getByRole('heading', { name: 'Throughput' }).waitFor();
    await expect.poll(() => page.locator('section[aria-labelledby="dashboard-throughput"]').textContent()).toContain('No runs in this range yet.');
    expect(await figure(page, 'runs')).toBe('0');
    // Health streams in: every service's check, and the live badge.
    await expect.poll(() => liveBadge(page), { timeout: 20_000 }).toBe('Live');
    await expect
      .poll(async () => Object.fromEntries((await tableRows(page, 'Services')).map(([service, check]) => [service, check])), { timeout: 20_000 })
      .toEqual({ gateway: 'serving', agent: 'serving', executor: 'serving', provider: 'serving' });
    await page.evaluate('window.dashboardMarker = 42');

    // Load: succeeding and refused chats, eight at a time.
    const messages = [...Array.from({ length: SUCCEEDING }, (_, index) => `dashboard load ${index}`), ...Array.from({ length: FAILING }, (_, index) => `dashboard refusal ${index}`)];
    const statuses: number[] = [];
    for (let index = 0; index < messages.length; index += 8) statuses.push(...(await Promise.all(messages.slice(index, index + 8).map(chat))));
    expect(statuses.filter((status) => status === 200)).toHaveLength(SUCCEEDING);

    // The figures follow (run events make the page read them again), in the totals and in the
    // charts' tables; well before the page's periodic read (30 s), which is not what moved them.
    await expect.poll(() => figure(page, 'runs'), { timeout: 10_000 }).toBe(String(SUCCEEDING + FAILING));
    await expect.poll(() => figure(page, 'failed'), { timeout: 10_000 }).toBe(String(FAILING));
    const throughputTotal = page.locator('table[aria-label="Runs per minute"] tfoot tr');
    expect((await throughputTotal.locator('td').allTextContents()).map(Number)).toEqual([SUCCEEDING + FAILING, FAILING]);
    const perMinute = await tableRows(page, 'Runs per minute');
    expect(perMinute.reduce((sum, [, runs]) => sum + Number(runs), 0)).toBe(SUCCEEDING + FAILING);

    // Errors by status: the refusals under one status, as many as were refused.
    await expect.poll(async () => (await tableRows(page, 'Failed runs by status')).reduce((sum, [, count]) => sum + Number(count), 0), { timeout: 20_000 }).toBe(FAILING);
    const [[status]] = (await tableRows(page, 'Failed runs by status')) as [[string]];
    expect(status).toMatch(/^[A-Z_]+$/);

    // Latency percentiles for the minutes that had runs, in order.
    const latency = await tableRows(page, 'Latency per minute');
    expect(latency.length).toBeGreaterThan(0);

    // Per provider and model: the mock served the calls, with tokens counted.
    await expect
      .poll(async () => (await tableRows(page, 'Provider calls per provider and model')).find(([provider]) => provider === 'mock'), { timeout: 20_000 })
      .toBeTruthy();
    const mock = (await tableRows(page, 'Provider calls per provider and model')).find(([provider]) => provider === 'mock')!;
    expect(Number(mock[2]!.replaceAll(',', ''))).toBeGreaterThanOrEqual(SUCCEEDING);
    expect(Number(mock[4]!.replaceAll(',', ''))).toBeGreaterThan(0);
    // Its breaker: closed (400s say nothing against the provider).
    expect((await tableRows(page, 'Provider breakers')).find(([provider]) => provider === 'mock')?.[1]).toBe('closed');

    // Prompt versions: the pipeline with versions is the one shown, its runs split between the
    // YAML prompt and the candidate, and the candidate compared with its baseline.
    expect(await page.getByLabel('Pipeline', { exact: true }).inputValue()).toBe('general');
    await expect
      .poll(async () => (await tableRows(page, 'Prompt versions of general')).reduce((sum, row) => sum + Number(row[2]), 0), { timeout: 10_000 })
      .toBe(SUCCEEDING + FAILING);
    const versions = (await tableRows(page, 'Prompt versions of general')).map(([step, version]) => `${step}:${version}`);
    expect(versions).toEqual(expect.arrayContaining(['answer:yaml baseline', `answer:${candidate}`]));
    const [comparison] = await tableRows(page, 'Candidates against their baselines in general');
    expect(comparison?.slice(0, 2)).toEqual(['answer', `${candidate} vs yaml`]);

    // Alerts: the rules loaded are named, with where they came from.
    await expect.poll(() => page.locator('section[aria-labelledby="dashboard-alerts"]').textContent()).toMatch(/\d+ rules? loaded from .*alerts\.yaml/);

    // All of it in the same document: nothing reloaded.
    expect(await page.evaluate('window.dashboardMarker')).toBe(42);
    expect(problems).toEqual([]);
  }, 60_000);

  it('reads the range the picker says', async () => {
    const { page } = await web.browser.newPage(web.baseUrl);
    const starts: string[] = [];
    page.on('request', (request) => {
      if (request.url().endsWith('/v1/monitor/metrics')) starts.push((JSON.parse(request.postData() ?? '{}') as { startTime?: string }).startTime ?? '');
    });
    await page.goto('/dashboard');
    await expect.poll(() => figure(page, 'runs'), { timeout: 20_000 }).toBe(String(SUCCEEDING + FAILING));
    const hourStart = Date.parse(starts.at(-1)!);
    expect(Date.now() - hourStart).toBeGreaterThan(55 * 60_000);

    starts.length = 0;
    await page.getByLabel('Time range').selectOption('15m');
    // A read of the hour may have been under way already: the reads that follow are of 15 minutes.
    await expect.poll(() => (starts.length > 0 ? Date.now() - Date.parse(starts.at(-1)!) : Infinity)).toBeLessThan(16 * 60_000);
    expect(Date.now() - Date.parse(starts.at(-1)!)).toBeGreaterThan(13 * 60_000);
    await expect.poll(() => page.locator('section[aria-labelledby="dashboard-throughput"] figcaption').textContent()).toContain('over the last 15 minutes');
    // The runs were minutes ago: the same runs in the shorter range.
    expect(await figure(page, 'runs')).toBe(String(SUCCEEDING + FAILING));
    // The longest ranges are within what the monitor keeps (24 h): read without a refusal.
    for (const [value, words] of [['6h', 'last 6 hours'], ['24h', 'last 24 hours']] as const) {
      await page.getByLabel('Time range').selectOption(value);
      await expect.poll(() => page.locator('section[aria-labelledby="dashboard-throughput"] figcaption').textContent()).toContain(`over the ${words}`);
      expect(await figure(page, 'runs')).toBe(String(SUCCEEDING + FAILING));
      expect(await page.getByRole('alert').count()).toBe(0);
    }
    await page.getByLabel('Time range').selectOption('15m');
    // The choice is kept across a reload.
    await page.reload();
    expect(await page.getByLabel('Time range').inputValue()).toBe('15m');
  });

  it('passes axe-core in both schemes, with its charts drawn', async () => {
    for (const colorScheme of ['light', 'dark'] as const) {
      const { page } = await web.browser.newPage(web.baseUrl, { colorScheme });
      await page.goto('/dashboard');
      await page.getByLabel('Time range').selectOption('1h');
      await expect.poll(() => figure(page, 'runs'), { timeout: 20_000 }).toBe(String(SUCCEEDING + FAILING));
      await expect.poll(() => liveBadge(page), { timeout: 20_000 }).toBe('Live');
      await page.locator('table[aria-label^="Prompt versions of "]').waitFor();
      const violations = await accessibilityViolations(page);
      expect(violations, describeViolations(violations)).toEqual([]);
      await saveScreenshot(page, colorScheme === 'light' ? 'dashboard' : 'dashboard-dark');
    }
  });

  it('says when its stream dropped and it is reconnecting, then is live again', async () => {
    const { page } = await web.browser.newPage(web.baseUrl);
    // The first health stream ends after its first event (the real health, as a connection cut
    // by a proxy or a restart would); the page's next connection is held until the test has
    // seen the page say so, then goes through to the gateway.
    let connections = 0;
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    await page.route('**/v1/health/watch', async (route) => {
      connections += 1;
      if (connections === 1) {
        const current = (await (await page.request.get('/v1/health')).json()) as { health: unknown };
        await route.fulfill({ status: 200, contentType: 'text/event-stream', body: `data: ${JSON.stringify(current)}\n\n` });
      } else {
        await released;
        await route.continue();
      }
    });
    await page.goto('/dashboard');
    await expect.poll(() => liveBadge(page), { timeout: 20_000 }).toBe('Reconnecting…');
    expect(Object.fromEntries((await tableRows(page, 'Services')).map(([service, check]) => [service, check])).gateway).toBe('serving');
    release();
    await expect.poll(() => liveBadge(page), { timeout: 20_000 }).toBe('Live');
    expect(connections).toBeGreaterThanOrEqual(2);
  });

  // Last: it leaves the mock provider's breaker open for a while.
  it('shows a provider breaker opening, and the health degraded by it', async () => {
    const { page } = await web.browser.newPage(web.baseUrl);
    await page.goto('/dashboard');
    await expect.poll(() => liveBadge(page), { timeout: 20_000 }).toBe('Live');
    // Server errors are retried and counted against the provider; the breaker opens at 90% failures
    // over its window (config/providers.yaml), where the earlier tests' successes may still be:
    // rounds of failing chats until the page shows it open (a bounded number).
    const breakerOf = async () => (await tableRows(page, 'Provider breakers')).find(([provider]) => provider === 'mock')?.[1];
    for (let round = 0; round < 15 && !/open/.test((await breakerOf()) ?? ''); round++) {
      const statuses = await Promise.all(Array.from({ length: 20 }, (_, index) => chat(`dashboard outage ${round}.${index}`)));
      expect(statuses.every((status) => status !== 200)).toBe(true);
    }
    await expect
      .poll(async () => (await tableRows(page, 'Provider breakers')).find(([provider]) => provider === 'mock')?.[1], { timeout: 20_000 })
      .toMatch(/^(open|half-open)$/);
    await expect.poll(() => page.locator('section[aria-labelledby="dashboard-health"] .causes').textContent(), { timeout: 20_000 }).toMatch(/provider mock: breaker (open|half-open)/);
    expect(await page.locator('section[aria-labelledby="dashboard-health"] .badge').first().textContent()).toMatch(/^(degraded|critical)$/);
  });
});
