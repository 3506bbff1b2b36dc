// Real Chromium (Debian's /usr/bin/chromium) driven by playwright-core, for the web pages' tests:
// a page per test, screenshots kept under test-results/web/, and axe-core's accessibility check.
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { repoRoot } from './processes.js';

export const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'];

/** Where the tests leave their screenshots (CI keeps test-results/ as artifacts). */
export const SCREENSHOT_DIR = join(repoRoot, 'test-results', 'web');

export interface TestBrowser {
  browser: Browser;
  /** A fresh context (its own storage: a new user) and a page in it, at `baseUrl`. */
  newPage(baseUrl: string, options?: { colorScheme?: 'light' | 'dark'; viewport?: { width: number; height: number } }): Promise<{ context: BrowserContext; page: Page }>;
  close(): Promise<void>;
}

export async function startBrowser(): Promise<TestBrowser> {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS });
  const contexts: BrowserContext[] = [];
  return {
    browser,
    async newPage(baseUrl, options = {}) {
      const context = await browser.newContext({ baseURL: baseUrl, colorScheme: options.colorScheme ?? 'light', viewport: options.viewport ?? { width: 1280, height: 900 } });
      contexts.push(context);
      const page = await context.newPage();
      return { context, page };
    },
    async close() {
      for (const context of contexts) await context.close().catch(() => {});
      await browser.close();
    },
  };
}

/** Saves a full-page screenshot as test-results/web/<name>.png and answers its path. */
export async function saveScreenshot(page: Page, name: string): Promise<string> {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  const path = join(SCREENSHOT_DIR, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

export interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: { target: string[]; failureSummary?: string }[];
}

const axeSource = (() => {
  let source: string | undefined;
  return () => (source ??= readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8'));
})();

/**
 * axe-core's WCAG 2.1 A/AA rules on the page as it is now. The page's CSP allows scripts from its
 * own origin only, so axe is evaluated through the DevTools protocol (page.evaluate), not a tag.
 */
export async function accessibilityViolations(page: Page): Promise<AxeViolation[]> {
  await page.evaluate(axeSource());
  // A string, not a function: the test code is type-checked without the DOM's types.
  return page.evaluate(`axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } }).then((result) =>
    result.violations.map((violation) => ({ id: violation.id, impact: violation.impact, help: violation.help, nodes: violation.nodes.map((node) => ({ target: node.target, failureSummary: node.failureSummary })) })))`) as Promise<AxeViolation[]>;
}

/** The violations in a line each, for an assertion's message. */
export function describeViolations(violations: readonly AxeViolation[]): string {
  return violations.map((violation) => `${violation.id} (${violation.impact}): ${violation.help} at ${violation.nodes.map((node) => node.target.join(' ')).join(', ')}`).join('\n');
}
