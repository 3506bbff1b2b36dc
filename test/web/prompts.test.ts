// The prompts page (/prompts) in real Chromium against the real platform (keys off, as `npm
// start`): a version published over gRPC shows with its share of runs; promoted on the page, it
// is the prompt the pipeline serves; rolled back on the page, the earlier baseline serves again;
// the history shows both; the A/B comparison shows the monitor's figures from real runs and
// feedback and says when there is too little data; a change racing another writer is refused
// plainly and the page shows the new state; changes, runs and feedback show live; the monitor's
// guard rolling back a worse candidate shows in the history and is announced; axe-core passes in
// light and dark.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { ClientError, Status } from 'nice-grpc-common';
import { proto } from '@elexirion/kit';
import { eventually } from '@elexirion/testing';
import { accessibilityViolations, describeViolations, saveScreenshot } from '@elexirion/testing/browser';
import { startWebStack, type WebStack } from './web-stack.js';

const PIPELINE = 'review-sentiment';
const STEP = 'label';
const LABEL = `${PIPELINE}.${STEP}`;
// What the page shows after a call or an event may take a moment on a loaded machine.
const SOON = { timeout: 10_000 };

describe('prompts page', () => {
  let web: WebStack;

  beforeAll(async () => {
    // The monitor's guard looks at rollouts every second (5 s by default), so its decision comes soon.
    web = await startWebStack({ env: { MONITOR_ROLLOUT_INTERVAL_MS: '1000' } });
    // The registry attaches to NATS just after the executor serves.
    await eventually('the prompt registry attached', () => web.stack.gateway.listPromptVersions({ pipeline: '', step: '' }).then(() => true, () => undefined), 30_000);
  }, 120_000);
  afterAll(async () => {
    await web?.stop();
  });

  /** A run of the pipeline through the gateway: the prompt version its step used, and its run id. */
  async function run(review: string): Promise<{ version: string; runId: string }> {
    const answer = await web.stack.gateway.executePipeline(proto.ExecutePipelineRequest.fromPartial({ pipeline: PIPELINE, inputs: { review } }));
    return { version: answer.steps[0]!.promptVersion, runId: answer.jobId };
  }

  async function openPage(colorScheme: 'light' | 'dark' = 'light'): Promise<{ page: Page; problems: string[] }> {
    const { page } = await web.browser.newPage(web.baseUrl, { colorScheme });
    const problems: string[] = [];
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(message.text());
    });
    page.on('pageerror', (error) => problems.push(error.message));
    await page.goto(`/prompts?pipeline=${PIPELINE}`);
    await page.locator(`section[data-step="${STEP}"]`).waitFor();
    return { page, problems };
  }

  const versionRow = (page: Page, version: string) => page.locator(`section[data-step="${STEP}"] table.prompt-versions tr[data-version="${version}"]`);
  const outcome = (page: Page) => page.locator('.prompt-outcome [role="status"]');
  const historyRow = (page: Page, action: string) => page.locator(`section.prompt-history tr[data-action="${action}"]`);

  it('says so when no version is published yet', async () => {
    const { page } = await web.browser.newPage(web.baseUrl);
    await page.goto('/prompts');
    await page.getByText('No prompt versions are published yet: every LLM step runs its YAML prompt.').waitFor();
    expect(await page.locator('section.prompt-step').count()).toBe(0);
  });

  it('shows a published version with its share, promotes it on the page so it is served, and rolls back to the earlier baseline', async () => {
    const published = await web.stack.gateway.publishPromptVersion(
      proto.PublishPromptVersionRequest.fromPartial({
        pipeline: PIPELINE,
        step: STEP,
        versionId: 'terse',
        template: { prompt: 'In one word, the sentiment of: {{inputs.review}}', system: 'You label sentiment.', demos: [{ input: 'Great kettle', output: 'positive' }] },
        source: 'manual',
        description: 'One word only',
        scores: { dev: 0.92 },
        rolloutWeight: 0.1,
        reason: 'try a terser prompt',
      }),
    );
    expect(published.step!.rollout!.weights).toEqual({ yaml: 0.9, terse: 0.1 });

    const { page, problems } = await openPage();
    // The version with its share, source, description, scores and template; the YAML prompt with the rest.
    await expect.poll(() => versionRow(page, 'terse').textContent(), SOON).toContain('10%');
    const terse = (await versionRow(page, 'terse').textContent())!;
    expect(terse).toContain('manual');
    expect(terse).toContain('One word only');
    expect(terse).toContain('dev: 0.920');
    expect(await versionRow(page, 'yaml').textContent()).toContain('90%');
    await versionRow(page, 'terse').getByText('Template').click();
    expect(await versionRow(page, 'terse').locator('pre').first().textContent()).toBe('In one word, the sentiment of: {{inputs.review}}');
    expect(await versionRow(page, 'terse').textContent()).toContain('Great kettle');

    // Promote: a modal confirmation with focus on its reason field; Escape cancels it and gives
    // focus back to the button, nothing changed.
    const promoteTerse = page.getByRole('button', { name: `Promote terse in ${LABEL}` });
    await promoteTerse.focus();
    await page.keyboard.press('Enter');
    await page.getByRole('dialog', { name: 'Promote terse?' }).waitFor();
    await page.keyboard.press('Escape');
    await page.getByRole('dialog').waitFor({ state: 'detached' });
    expect(await page.evaluate('document.activeElement && document.activeElement.getAttribute("aria-label")')).toBe(`Promote terse in ${LABEL}`);
    expect(await versionRow(page, 'terse').textContent()).toContain('10%');
    await promoteTerse.click();
    const dialog = page.getByRole('dialog', { name: 'Promote terse?' });
    await dialog.waitFor();
    expect(await page.evaluate('document.activeElement && document.activeElement.tagName')).toBe('TEXTAREA');
    const dialogViolations = await accessibilityViolations(page);
    expect(dialogViolations, describeViolations(dialogViolations)).toEqual([]);
    await dialog.getByLabel('Reason (kept in the history)').fill('terse labels won the offline eval');
    await dialog.getByRole('button', { name: 'Promote terse', exact: true }).click();
    await expect.poll(() => outcome(page).textContent(), SOON).toContain(`Promoted terse in ${LABEL}`);
    await dialog.waitFor({ state: 'detached' });
    // The page read the state again: terse is the baseline with every run.
    await expect.poll(() => versionRow(page, 'terse').textContent(), SOON).toContain('100%');
    expect(await versionRow(page, 'terse').textContent()).toContain('baseline');
    expect(await versionRow(page, 'yaml').textContent()).toContain('0%');

    // The promoted prompt is what runs get.
    for (const review of ['Lovely mug', 'Broke in a day', 'Fine']) expect((await run(review)).version).toBe('terse');

    // The history shows the promote: who, what, why.
    await expect.poll(() => historyRow(page, 'promote').count(), SOON).toBe(1);
    const promoteRow = (await historyRow(page, 'promote').textContent())!;
    expect(promoteRow).toContain('terse');
    expect(promoteRow).toContain('terse labels won the offline eval');
    expect(promoteRow).toContain('anonymous');
    expect(await historyRow(page, 'publish').textContent()).toContain('try a terser prompt');
    // The page's own change is told by its outcome line, not announced again as someone else's.
    expect(await page.locator('.prompt-others-change').textContent()).toBe('');

    // Roll back to the YAML prompt, the baseline before.
    await page.getByLabel(`Roll back ${STEP} to`).selectOption('yaml');
    await page.getByRole('button', { name: 'Roll back…' }).click();
    const rollbackDialog = page.getByRole('dialog', { name: 'Roll back to yaml?' });
    await rollbackDialog.getByLabel('Reason (kept in the history)').fill('users disliked one-word answers');
    await rollbackDialog.getByRole('button', { name: 'Roll back to yaml', exact: true }).click();
    await expect.poll(() => outcome(page).textContent(), SOON).toContain(`Rolled ${LABEL} back to yaml`);
    await expect.poll(() => versionRow(page, 'yaml').textContent(), SOON).toContain('100%');
    expect((await run('Lovely mug')).version).toBe('yaml');
    await expect.poll(() => historyRow(page, 'rollback').count(), SOON).toBe(1);
    expect(await historyRow(page, 'rollback').textContent()).toContain('users disliked one-word answers');
    expect(problems).toEqual([]);
  });

  it('shows the A/B comparison from real runs and feedback, saying when there is too little data', async () => {
    // Three runs on a version of their own, two on the YAML prompt, each with a thumbs score.
    await web.stack.gateway.publishPromptVersion(
      proto.PublishPromptVersionRequest.fromPartial({ pipeline: PIPELINE, step: STEP, versionId: 'polite', template: { prompt: 'Kindly label: {{inputs.review}}' }, source: 'manual' }),
    );
    await web.stack.gateway.promotePromptVersion({ pipeline: PIPELINE, step: STEP, versionId: 'polite', reason: 'A/B', expectedRevision: 0 });
    const politeRuns = [await run('Nice'), await run('Nice enough'), await run('Very nice')];
    await web.stack.gateway.rollbackPrompt({ pipeline: PIPELINE, step: STEP, toVersion: 'yaml', reason: 'A/B', expectedRevision: 0 });
    const yamlRuns = [await run('Bad'), await run('Bad again')];
    expect(politeRuns.map((entry) => entry.version)).toEqual(['polite', 'polite', 'polite']);
    expect(yamlRuns.map((entry) => entry.version)).toEqual(['yaml', 'yaml']);
    const feedback = async (runId: string, score: number) =>
      eventually(`feedback on ${runId}`, () =>
        web.stack.gateway.recordFeedback(proto.RecordFeedbackRequest.fromPartial({ runId, feedback: { name: 'thumbs', score } })).then(
          () => true,
          () => undefined,
        ),
      );
    for (const entry of politeRuns) await feedback(entry.runId, 1);
    for (const entry of yamlRuns) await feedback(entry.runId, 0);
    // The monitor has them all before the page is opened.
    await eventually('the monitor counted the scored runs', async () => {
      const stats = await web.stack.gateway.getPromptVersionStats(proto.GetPromptVersionStatsRequest.fromPartial({ pipeline: PIPELINE, step: STEP }));
      const polite = stats.versions.find((entry) => entry.version === 'polite');
      return polite && Number(polite.score?.count) === 3 ? true : undefined;
    });

    const { page, problems } = await openPage();
    const statsRow = page.locator(`section[data-step="${STEP}"] table.prompt-stats tr[data-version="polite"]`);
    await statsRow.waitFor();
    const figures = (await statsRow.locator('td').allTextContents()).map((text) => text.trim());
    expect(figures[0]).toBe('3');
    expect(figures[1]).toBe('100%');
    expect(figures[5]).toContain('1.00');
    expect(figures[5]).toContain('3 scores');
    const comparison = page.locator(`section[data-step="${STEP}"] table.prompt-comparisons tr[data-candidate="polite"]`);
    const compared = (await comparison.textContent())!;
    expect(compared).toContain('polite vs yaml');
    expect(compared).toContain('+1.00');
    expect(compared).toMatch(/Too little data: 3 and \d+ runs; a decision needs at least 30 a side\. So far: “thumbs” score higher \(p < 0\.001\)\./);

    // Another score name: no such scores, said in words.
    await page.getByLabel('Feedback score').fill('correct');
    await page.getByLabel('Feedback score').press('Enter');
    await page.getByLabel('Feedback score').blur();
    await expect.poll(() => comparison.textContent(), SOON).toContain('no “correct” scores on both sides');
    expect(problems).toEqual([]);
  });

  it('refuses a change that raced another writer, saying so, and shows the state as it is now', async () => {
    await web.stack.gateway.publishPromptVersion(
      proto.PublishPromptVersionRequest.fromPartial({ pipeline: PIPELINE, step: STEP, versionId: 'polite', template: { prompt: 'Kindly label: {{inputs.review}}' }, source: 'manual' }),
    ).catch((error: unknown) => {
      // Published already when the test before ran.
      if (!(error instanceof ClientError && error.code === Status.ALREADY_EXISTS)) throw error;
    });
    const { page } = await openPage();
    await versionRow(page, 'polite').waitFor();
    await page.getByRole('button', { name: `Promote polite in ${LABEL}` }).click();
    const dialog = page.getByRole('dialog', { name: 'Promote polite?' });
    await dialog.waitFor();
    // Another writer publishes while the user decides on what the page showed.
    await web.stack.gateway.publishPromptVersion(
      proto.PublishPromptVersionRequest.fromPartial({ pipeline: PIPELINE, step: STEP, versionId: 'racer', template: { prompt: 'Race: {{inputs.review}}' }, source: 'manual' }),
    );
    await dialog.getByRole('button', { name: 'Promote polite', exact: true }).click();
    const alert = page.locator('.prompt-outcome [role="alert"]');
    await expect.poll(() => alert.textContent(), SOON).toContain('someone changed review-sentiment.label meanwhile');
    expect(await alert.textContent()).toContain('ABORTED');
    // Read again: the other writer's version is there, and nothing was promoted.
    await versionRow(page, 'racer').waitFor();
    expect(await versionRow(page, 'yaml').textContent()).toContain('baseline');
    // Focus is on the outcome, not lost with the dialog.
    expect(await page.evaluate('document.activeElement && document.activeElement.className')).toBe('prompt-outcome');
  });

  it('follows changes, runs and feedback live, without a refresh', async () => {
    const { page, problems } = await openPage();
    const yamlRuns = page.locator(`section[data-step="${STEP}"] table.prompt-stats tr[data-version="yaml"] td`).first();
    await yamlRuns.waitFor();
    const before = Number(await yamlRuns.textContent());
    await web.stack.gateway.publishPromptVersion(
      proto.PublishPromptVersionRequest.fromPartial({ pipeline: PIPELINE, step: STEP, versionId: 'live-one', template: { prompt: 'Live: {{inputs.review}}' }, source: 'manual', rolloutWeight: 0.25 }),
    );
    await expect.poll(() => versionRow(page, 'live-one').count(), SOON).toBe(1);
    // Someone else's change is announced (a polite live region).
    expect(await page.locator('.prompt-others-change').getAttribute('aria-live')).toBe('polite');
    await expect.poll(() => page.locator('.prompt-others-change').textContent(), SOON).toContain('review-sentiment.label changed: published: live-one (by anonymous).');
    expect(await versionRow(page, 'live-one').textContent()).toContain('25%');
    await expect.poll(() => historyRow(page, 'publish').first().textContent(), SOON).toContain('live-one');
    // A run: the comparison counts it for the version it used.
    const ran = await web.stack.gateway.executePipeline(proto.ExecutePipelineRequest.fromPartial({ pipeline: PIPELINE, inputs: { review: 'Steady' }, sessionId: 'live-check' }));
    const onYaml = ran.steps[0]!.promptVersion === 'yaml';
    const row = onYaml ? yamlRuns : page.locator(`section[data-step="${STEP}"] table.prompt-stats tr[data-version="live-one"] td`).first();
    await expect.poll(async () => Number((await row.count()) > 0 ? await row.textContent() : 0), SOON).toBe(onYaml ? before + 1 : 1);
    expect(problems).toEqual([]);
  });

  it('shows a guarded rollout of another pipeline, picked on the page, and pages through its history', async () => {
    const other = { pipeline: 'general', step: 'answer' };
    await web.stack.gateway.publishPromptVersion(
      proto.PublishPromptVersionRequest.fromPartial({
        ...other,
        versionId: 'guarded',
        template: { prompt: 'Briefly: {{inputs.message}}' },
        source: 'dspy:BootstrapFewShot',
        rolloutWeight: 0.2,
        guard: { metric: 'score', scoreName: 'correct', minRuns: 5, significance: 0.01 },
        reason: 'guarded trial',
      }),
    );
    // More changes than a page of the history holds (20): 22 publishes in all.
    for (let index = 1; index <= 21; index++) {
      await web.stack.gateway.publishPromptVersion(
        proto.PublishPromptVersionRequest.fromPartial({ ...other, versionId: `draft-${index}`, template: { prompt: `Draft ${index}: {{inputs.message}}` }, source: 'manual' }),
      );
    }
    const { page, problems } = await openPage();
    // A pipeline with no versions of its own is said so, the page shows one that has.
    await page.goto('/prompts?pipeline=triage');
    await page.getByText('has no published prompt versions').waitFor();
    await page.getByLabel('Pipeline').selectOption('general');
    await page.waitForURL(`${web.baseUrl}/prompts?pipeline=general`);
    const section = page.locator('section[data-step="answer"]');
    await section.waitFor();
    const facts = (await section.locator('dl.prompt-facts').textContent())!;
    expect(facts).toContain('guarded');
    expect(facts).toContain('feedback score "correct"');
    expect(facts).toContain('decides after 5 runs a side at p < 0.01');
    expect(facts).toContain('after 50 runs a side');
    expect(await section.locator('tr[data-version="guarded"]').textContent()).toContain('candidate');
    expect(await section.locator('tr[data-version="guarded"]').textContent()).toContain('dspy:BootstrapFewShot');
    // The history a page at a time, newest first.
    const rows = page.locator('section.prompt-history tbody tr');
    await expect.poll(() => rows.count(), SOON).toBe(20);
    expect(await rows.first().textContent()).toContain('draft-21');
    await page.getByRole('button', { name: 'Show older changes' }).click();
    await expect.poll(() => rows.count(), SOON).toBe(22);
    expect(await rows.last().textContent()).toContain('guarded trial');
    expect(await page.getByRole('button', { name: 'Show older changes' }).count()).toBe(0);
    expect(problems).toEqual([]);
  });

  it('shows the guard rolling back a worse candidate by itself: in the history and announced', async () => {
    const other = { pipeline: 'general', step: 'answer' };
    // A candidate of its own on half the runs, guarded by a feedback score.
    await web.stack.gateway.publishPromptVersion(
      proto.PublishPromptVersionRequest.fromPartial({ ...other, versionId: 'judged', template: { prompt: 'Judged: {{inputs.message}}' }, source: 'manual' }),
    );
    await web.stack.gateway.setPromptRollout(
      proto.SetPromptRolloutRequest.fromPartial({ ...other, weights: { yaml: 0.5, judged: 0.5 }, candidate: 'judged', guard: { metric: 'score', scoreName: 'correct', minRuns: 5, significance: 0.01 }, reason: 'half and half' }),
    );
    const { page, problems } = await openPage();
    await page.getByLabel('Pipeline').selectOption('general');
    await page.locator('section[data-step="answer"] table.prompt-versions tr[data-version="judged"]').waitFor();
    await expect.poll(() => page.locator('section[data-step="answer"] table.prompt-versions tr[data-version="judged"]').textContent(), SOON).toContain('50%');
    // Runs on both arms, each judged: the candidate always wrong, the YAML prompt always right;
    // the guard decides once each arm has its 5 (then every run is on the YAML prompt).
    const arms = new Map<string, number>();
    for (let index = 0; (arms.get('judged') ?? 0) < 5 || (arms.get('yaml') ?? 0) < 5; index++) {
      expect(index, 'runs needed to reach both arms').toBeLessThan(80);
      const ran = await web.stack.gateway.executePipeline(proto.ExecutePipelineRequest.fromPartial({ pipeline: 'general', inputs: { message: `question ${index}` }, sessionId: `guard-${index}` }));
      const version = ran.steps[0]!.promptVersion;
      arms.set(version, (arms.get(version) ?? 0) + 1);
      await eventually(`feedback on ${ran.jobId}`, () =>
        web.stack.gateway.recordFeedback(proto.RecordFeedbackRequest.fromPartial({ runId: ran.jobId, feedback: { name: 'correct', score: version === 'judged' ? 0 : 1 } })).then(
          () => true,
          () => undefined,
        ),
      );
    }
    // The monitor rolls it back on its own; the page shows it without a refresh and says so.
    const guardRow = page.locator('section.prompt-history tr[data-action="guard_rollback"]');
    await expect.poll(() => guardRow.count(), { timeout: 30_000 }).toBe(1);
    expect(await guardRow.textContent()).toContain('rolled back by the guard');
    expect(await guardRow.textContent()).toContain('monitor');
    await expect.poll(() => page.locator('.prompt-others-change').textContent(), SOON).toContain('general.answer changed: rolled back by the guard: judged (by monitor');
    await expect.poll(() => page.locator('section[data-step="answer"] table.prompt-versions tr[data-version="yaml"]').textContent(), SOON).toContain('100%');
    expect(problems).toEqual([]);
  });

  it('passes axe-core in light and dark', async () => {
    for (const colorScheme of ['light', 'dark'] as const) {
      const { page, problems } = await openPage(colorScheme);
      await page.locator('table.prompt-comparisons').waitFor();
      await historyRow(page, 'promote').first().waitFor();
      await versionRow(page, 'terse').getByText('Template').click();
      const violations = await accessibilityViolations(page);
      expect(violations, describeViolations(violations)).toEqual([]);
      await saveScreenshot(page, colorScheme === 'light' ? 'prompts' : 'prompts-dark');
      expect(problems).toEqual([]);
    }
  });
});
