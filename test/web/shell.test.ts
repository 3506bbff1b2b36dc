// The frame every page shares, in real Chromium against the real platform: the page paths, the
// navigation between them without reloads, the colour schemes, and no script or CSP errors.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessibilityViolations, describeViolations, saveScreenshot } from '@elexirion/testing/browser';
import { startWebStack, type WebStack } from './web-stack.js';

describe('web shell', () => {
  let web: WebStack;
  beforeAll(async () => {
    web = await startWebStack();
  }, 120_000);
  afterAll(async () => {
    await web?.stop();
  });

  it('navigates between the pages without reloading, each with its title and a current link', async () => {
    const { page } = await web.browser.newPage(web.baseUrl);
    const problems: string[] = [];
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(message.text());
    });
    page.on('pageerror', (error) => problems.push(error.message));
    await page.goto('/');
    await page.waitForSelector('nav[aria-label="Pages"]');
    const marker = await page.evaluate('window.marker = Math.random()');
    for (const [label, path] of [['Jobs', '/jobs'], ['Prompts', '/prompts'], ['Dashboard', '/dashboard'], ['Chat', '/']] as const) {
      await page.getByRole('link', { name: label, exact: true }).click();
      await page.waitForURL(`${web.baseUrl}${path}`);
      await expect.poll(() => page.title()).toBe(`${label} · Elexirion`);
      expect(await page.getByRole('link', { name: label, exact: true }).getAttribute('aria-current')).toBe('page');
    }
    // The same document all along: in-page navigation, not four loads.
    expect(await page.evaluate('window.marker')).toBe(marker);
    // Back and forward follow the history.
    await page.goBack();
    await page.waitForURL(`${web.baseUrl}/dashboard`);
    expect(problems).toEqual([]);
  });

  it('opens any page by its address, and takes a dark scheme from the system or the picker', async () => {
    const { page } = await web.browser.newPage(web.baseUrl, { colorScheme: 'dark' });
    await page.goto('/prompts');
    await expect.poll(() => page.title()).toBe('Prompts · Elexirion');
    const background = () => page.evaluate<string>('getComputedStyle(document.body).backgroundColor');
    const dark = await background();
    await page.getByLabel('Colour scheme').selectOption('light');
    await expect.poll(background).toBe('rgb(255, 255, 255)');
    expect(dark).not.toBe('rgb(255, 255, 255)');
    // The choice is kept across a reload.
    await page.reload();
    await expect.poll(background).toBe('rgb(255, 255, 255)');
  });

  it('passes axe-core in both schemes', async () => {
    for (const colorScheme of ['light', 'dark'] as const) {
      const { page } = await web.browser.newPage(web.baseUrl, { colorScheme });
      await page.goto('/');
      await page.waitForSelector('nav[aria-label="Pages"]');
      const violations = await accessibilityViolations(page);
      expect(violations, describeViolations(violations)).toEqual([]);
      await saveScreenshot(page, `shell-${colorScheme}`);
    }
  });
});
