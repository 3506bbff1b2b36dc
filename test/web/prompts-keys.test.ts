// The prompts page with API keys on (GATEWAY_AUTH=on), in real Chromium against the real
// platform: a key without prompts:write sees the figures read-only, with a line saying why and no
// promote or roll back (without telemetry, the comparison and live updates refused in words); a writer that is no admin may not move a protected baseline (promote is
// off, said in words) but may end a rollout on it, and the runs then serve the baseline.
import { randomBytes } from 'node:crypto';
import { Metadata } from 'nice-grpc';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { proto } from '@elexirion/kit';
import { eventually } from '@elexirion/testing';
import { accessibilityViolations, describeViolations, saveScreenshot } from '@elexirion/testing/browser';
import { startWebStack, type WebStack } from './web-stack.js';

const ADMIN_KEY = `admin-${randomBytes(24).toString('base64url')}`;
const PIPELINE = 'review-sentiment';
const STEP = 'label';
const LABEL = `${PIPELINE}.${STEP}`;
// What the page shows after a call or an event may take a moment on a loaded machine.
const SOON = { timeout: 10_000 };
const bearer = (secret: string) => ({ metadata: Metadata({ authorization: `Bearer ${secret}` }) });

describe('prompts page with keys on', () => {
  let web: WebStack;
  let reader: { name: string; secret: string };
  let writer: { name: string; secret: string };

  async function createKey(name: string, scopes: string[]): Promise<{ name: string; secret: string }> {
    const created = await web.stack.gateway.createKey(proto.CreateKeyRequest.fromPartial({ name, scopes }), bearer(ADMIN_KEY));
    return { name, secret: created.secret };
  }

  beforeAll(async () => {
    web = await startWebStack({ env: { GATEWAY_AUTH: 'on', GATEWAY_ADMIN_KEY: ADMIN_KEY } });
    await eventually('the key store attached', () => web.stack.gateway.listKeys({}, bearer(ADMIN_KEY)).then(() => true, () => undefined), 30_000);
    reader = await createKey('pipeline-viewer', ['pipelines']);
    writer = await createKey('prompt-engineer', ['pipelines', 'telemetry', 'prompts:write']);
    await eventually('the prompt registry attached', () => web.stack.gateway.listPromptVersions({ pipeline: '', step: '' }, bearer(ADMIN_KEY)).then(() => true, () => undefined), 30_000);
    // A rollout of 20% on "eager", and the baseline protected.
    await web.stack.gateway.publishPromptVersion(
      proto.PublishPromptVersionRequest.fromPartial({ pipeline: PIPELINE, step: STEP, versionId: 'eager', template: { prompt: 'Label quickly: {{inputs.review}}' }, source: 'manual', rolloutWeight: 0.2 }),
      bearer(ADMIN_KEY),
    );
    await web.stack.gateway.setPromptRollout(proto.SetPromptRolloutRequest.fromPartial({ pipeline: PIPELINE, step: STEP, baselineProtected: true, reason: 'production prompt' }), bearer(ADMIN_KEY));
  }, 120_000);
  afterAll(async () => {
    await web?.stop();
  });

  /** The page as a user with this key, given once for the tab's session as the shell keeps it. */
  async function openAs(secret: string): Promise<{ page: Page; problems: string[] }> {
    const { page } = await web.browser.newPage(web.baseUrl);
    await page.addInitScript(`sessionStorage.setItem('elexirion.apiKey', ${JSON.stringify(secret)})`);
    const problems: string[] = [];
    page.on('pageerror', (error) => problems.push(error.message));
    await page.goto(`/prompts?pipeline=${PIPELINE}`);
    await page.locator(`section[data-step="${STEP}"] table.prompt-versions tr[data-version="eager"]`).waitFor();
    return { page, problems };
  }

  it('shows a key without prompts:write the versions read-only, saying why', async () => {
    const { page, problems } = await openAs(reader.secret);
    const readOnly = page.getByTestId('read-only');
    await readOnly.waitFor();
    expect(await readOnly.textContent()).toContain('pipeline-viewer');
    expect(await readOnly.textContent()).toContain('prompts:write');
    expect(await page.locator('tr[data-version="eager"]').textContent()).toContain('20%');
    expect(await page.getByRole('button', { name: /Promote/ }).count()).toBe(0);
    expect(await page.getByRole('button', { name: 'Roll back…' }).count()).toBe(0);
    expect(await page.getByRole('columnheader', { name: 'Actions' }).count()).toBe(0);
    // Without the telemetry scope the comparison and live updates are refused, and the page says so.
    const refused = page.getByRole('alert').filter({ hasText: 'The A/B comparison could not be read' });
    await refused.waitFor();
    expect(await refused.textContent()).toContain('PERMISSION_DENIED');
    await expect.poll(() => page.locator('.prompt-live').textContent(), SOON).toContain('Live updates are off');
    const violations = await accessibilityViolations(page);
    expect(violations, describeViolations(violations)).toEqual([]);
    await saveScreenshot(page, 'prompts-read-only');
    expect(problems).toEqual([]);
  });

  it('lets a writer end a rollout on a protected baseline but not move it', async () => {
    const { page, problems } = await openAs(writer.secret);
    expect(await page.getByTestId('read-only').count()).toBe(0);
    // Promote is there but off, and the page says why.
    const promote = page.getByRole('button', { name: `Promote eager in ${LABEL}` });
    expect(await promote.isDisabled()).toBe(true);
    expect(await page.locator(`section[data-step="${STEP}"]`).textContent()).toContain('is protected: promoting another version or rolling back to another one needs an admin key');
    // The only roll back offered: end the rollout on the baseline.
    const target = page.getByLabel(`Roll back ${STEP} to`);
    expect(await target.locator('option').allTextContents()).toEqual(['yaml (end the rollout: every run on the baseline)']);
    await page.getByRole('button', { name: 'Roll back…' }).click();
    const dialog = page.getByRole('dialog', { name: 'End the rollout?' });
    await dialog.getByLabel('Reason (kept in the history)').fill('eager answers were too short');
    await dialog.getByRole('button', { name: 'End the rollout', exact: true }).click();
    await expect.poll(() => page.locator('.prompt-outcome [role="status"]').textContent(), SOON).toContain(`Ended the rollout of ${LABEL}`);
    await expect.poll(() => page.locator('tr[data-version="yaml"]').textContent(), SOON).toContain('100%');
    // Every run on the baseline now.
    for (const review of ['Good', 'Bad', 'Meh']) {
      const run = await web.stack.gateway.executePipeline(proto.ExecutePipelineRequest.fromPartial({ pipeline: PIPELINE, inputs: { review } }), bearer(writer.secret));
      expect(run.steps[0]!.promptVersion).toBe('yaml');
    }
    // The history names the key that did it.
    const rollback = page.locator('section.prompt-history tr[data-action="rollback"]');
    await expect.poll(() => rollback.count(), SOON).toBe(1);
    expect(await rollback.textContent()).toContain('prompt-engineer');
    expect(problems).toEqual([]);
  });
});
