// The chat page with keys on, in real Chromium against the real platform: the key asked for once
// and kept for the tab's session, asked again in a new session, a wrong key refused plainly, and a
// key that may chat but not submit jobs served by ChatStream (saying it cannot resume).
import { randomBytes } from 'node:crypto';
import { Metadata } from 'nice-grpc';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { startWebStack, type WebStack } from './web-stack.js';

const ADMIN_KEY = `elx-admin-${randomBytes(12).toString('hex')}`;
const HELLO = 'Hello! I am Elexirion running on the offline mock provider. Ask me anything.';

describe('chat page with API keys', () => {
  let web: WebStack;
  const createKey = async (scopes: string[], name = `chat-${randomBytes(4).toString('hex')}`) =>
    (await web.stack.gateway.createKey({ name, scopes }, { metadata: Metadata({ authorization: `Bearer ${ADMIN_KEY}` }) })).secret;

  beforeAll(async () => {
    // The mock's greeting streams in over about a second and a half: long enough to stop or reload.
    web = await startWebStack({ env: { GATEWAY_AUTH: 'on', GATEWAY_ADMIN_KEY: ADMIN_KEY, PROVIDER_MOCK_STREAM_CHUNK_DELAY_MS: '150', PROVIDER_MOCK_STREAM_CHUNK_CHARS: '8' } });
  }, 120_000);
  afterAll(async () => {
    await web?.stop();
  });

  const keyDialog = (page: Page) => page.getByRole('dialog', { name: 'API key' });
  const lastAnswer = (page: Page) => page.locator('.chat-answer').last();

  async function giveKey(page: Page, key: string): Promise<void> {
    await keyDialog(page).waitFor();
    await keyDialog(page).getByLabel('Key').fill(key);
    await keyDialog(page).getByRole('button', { name: 'Use this key' }).click();
  }

  /** Ready to send: the page knows what the key may do. */
  const ready = (page: Page) => page.getByText('Enter sends, Shift+Enter starts a new line.').waitFor();

  async function chat(page: Page, message: string): Promise<void> {
    await page.getByLabel('Message', { exact: true }).fill(message);
    await page.getByLabel('Message', { exact: true }).press('Enter');
    await expect.poll(() => lastAnswer(page).getAttribute('data-status'), { timeout: 20_000 }).toBe('succeeded');
  }

  it('asks for the key once, keeps it across a reload, and asks again in a new session', async () => {
    const keyName = `chat-jobs-${randomBytes(4).toString('hex')}`;
    const secret = await createKey(['chat', 'jobs'], keyName);
    const { page } = await web.browser.newPage(web.baseUrl);
    await page.goto('/');
    // Asked once, because this gateway wants a key.
    await keyDialog(page).getByText('missing API key').waitFor();
    await giveKey(page, secret);
    await keyDialog(page).waitFor({ state: 'hidden' });
    await ready(page);
    await chat(page, 'hello there');
    expect(await lastAnswer(page).locator('.chat-markdown').textContent()).toContain(HELLO);
    // A durable job (the key has `jobs`): no note that it cannot resume.
    expect(await page.getByText('cannot resume after a reload').count()).toBe(0);
    // Thumbs up, recorded under the key's name.
    await lastAnswer(page).getByRole('button', { name: 'Good answer' }).click();
    await lastAnswer(page).getByRole('button', { name: 'Send feedback' }).click();
    await lastAnswer(page).getByText(/^Feedback recorded: good answer,/).waitFor();
    const runId = (await lastAnswer(page).getAttribute('data-job-id'))!;
    const { execution } = await web.stack.gateway.getExecution({ runId }, { metadata: Metadata({ authorization: `Bearer ${ADMIN_KEY}` }) });
    expect(execution!.feedback.find((feedback) => feedback.name === 'thumbs')).toMatchObject({ score: 1, recordedBy: keyName });

    // A reload in the same tab: the key is still there, nothing asked.
    await page.reload();
    await ready(page);
    expect(await keyDialog(page).count()).toBe(0);
    await chat(page, 'hello again');
    expect(await page.locator('.chat-answer').count()).toBe(2);

    // A new session (another context): asked again.
    const { page: other } = await web.browser.newPage(web.baseUrl);
    await other.goto('/');
    await keyDialog(other).waitFor();
  });

  it('refuses a wrong key plainly and asks again', async () => {
    const { page } = await web.browser.newPage(web.baseUrl);
    await page.goto('/');
    await giveKey(page, 'elx_notakey_0000000000000000');
    // Asked again, with the gateway's reason, and the page says what happened and what to do.
    await keyDialog(page).getByText('invalid API key').waitFor();
    await keyDialog(page).getByRole('button', { name: 'Cancel' }).click();
    const alert = page.getByRole('alert');
    await alert.getByText('invalid API key').waitFor();
    expect(await alert.textContent()).toContain('UNAUTHENTICATED');
    expect(await alert.locator('.advice').textContent()).toBe('Give an API key (the key button at the top).');
    expect(await page.getByRole('button', { name: 'Send' }).isDisabled()).toBe(true);
  });

  it('serves a key with chat but not jobs by ChatStream, saying the answer cannot resume', async () => {
    const secret = await createKey(['chat']);
    const { page } = await web.browser.newPage(web.baseUrl);
    await page.goto('/');
    await giveKey(page, secret);
    await ready(page);
    await page.getByText('answers stream directly and cannot be resumed after a reload').waitFor();
    await chat(page, 'hello from a chat key');
    expect(await lastAnswer(page).locator('.chat-markdown').textContent()).toContain(HELLO);
    await lastAnswer(page).getByText('Streamed directly (no job): an answer like this cannot resume after a reload.').waitFor();
    // The run is still the chat's job on the server, and its provenance is shown.
    expect(await lastAnswer(page).getAttribute('data-job-id')).toBeTruthy();
    expect(await lastAnswer(page).locator('.chat-provenance').textContent()).toContain('general');

    // Stop aborts the stream: what arrived stays.
    await page.getByLabel('Message', { exact: true }).fill('hello, then stop');
    await page.getByLabel('Message', { exact: true }).press('Enter');
    const text = () => lastAnswer(page).locator('.chat-markdown').textContent();
    await lastAnswer(page).locator('.chat-markdown').waitFor();
    await lastAnswer(page).getByRole('button', { name: 'Stop' }).click();
    await expect.poll(() => lastAnswer(page).getAttribute('data-status')).toBe('stopped');
    const kept = (await text())!.trim();
    expect(kept.length).toBeGreaterThan(0);
    expect(HELLO.startsWith(kept) && kept.length < HELLO.length).toBe(true);

    // A reload mid-stream: no job to resume, said plainly.
    await page.getByLabel('Message', { exact: true }).fill('hello before a reload');
    await page.getByLabel('Message', { exact: true }).press('Enter');
    await lastAnswer(page).locator('.chat-markdown').waitFor();
    await page.reload();
    await expect.poll(() => lastAnswer(page).getAttribute('data-status')).toBe('interrupted');
    await lastAnswer(page).getByText('could not resume after the reload: regenerate it').waitFor();
  });
});
