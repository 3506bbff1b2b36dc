import { createHmac } from 'node:crypto';
import type { Logger } from '@elexirion/kit';
import type { AlertRecord } from './alert-store.js';

/** Where a firing or resolved alert is published on NATS: elexirion.alerts.<firing|resolved>.<rule>. */
export const ALERTS_SUBJECT_PREFIX = 'elexirion.alerts';
/** The header a webhook receiver checks: `sha256=<hex HMAC of the body with the shared secret>`. */
export const SIGNATURE_HEADER = 'x-elexirion-signature';
/** Same for every retry of one notification, so a receiver can drop a repeat. */
export const DELIVERY_HEADER = 'x-elexirion-delivery';

const WEBHOOK_ATTEMPTS = 5;
const WEBHOOK_TIMEOUT_MS = 5_000;
const BACKOFF_MS = { base: 250, max: 5_000 };

/** What a notification says: the alert, and which change it tells. */
export function notificationBody(record: AlertRecord): Record<string, unknown> {
  const notification = record.notification!;
  return {
    deliveryId: notification.deliveryId,
    status: notification.transition,
    rule: record.rule,
    labels: record.labels,
    severity: record.severity,
    value: record.value,
    threshold: record.threshold,
    summary: record.summary,
    since: record.since,
    at: notification.at,
  };
}

export interface NotifierOptions {
  logger: Logger;
  /** Publishes on NATS (the monitor's connection), resolving when the server has it. */
  publish(subject: string, body: string): Promise<void>;
  /** Signs webhook bodies; none: unsigned (and said so at start). */
  secret: string | undefined;
}

/**
 * Delivers one notification: on NATS, and to each webhook with retries (exponential backoff with
 * jitter on a network error, 429 or 5xx; a 4xx other than 429 is final). Resolves when every
 * webhook took it or gave up; a webhook that gave up is logged, not retried forever.
 */
export async function deliver(record: AlertRecord, webhooks: readonly string[], options: NotifierOptions): Promise<void> {
  const body = JSON.stringify(notificationBody(record));
  const notification = record.notification!;
  await options.publish(`${ALERTS_SUBJECT_PREFIX}.${notification.transition}.${record.rule}`, body);
  await Promise.all(webhooks.map((url) => postWithRetries(url, body, notification.deliveryId, options)));
}

async function postWithRetries(url: string, body: string, deliveryId: string, options: NotifierOptions): Promise<void> {
  const headers: Record<string, string> = { 'content-type': 'application/json', [DELIVERY_HEADER]: deliveryId };
  if (options.secret) headers[SIGNATURE_HEADER] = `sha256=${createHmac('sha256', options.secret).update(body).digest('hex')}`;
  for (let attempt = 1; attempt <= WEBHOOK_ATTEMPTS; attempt += 1) {
    let outcome: string;
    try {
      const response = await fetch(url, { method: 'POST', headers, body, signal: AbortSignal.timeout(WEBHOOK_TIMEOUT_MS) });
      await response.body?.cancel();
      if (response.ok) return;
      outcome = `HTTP ${response.status}`;
      if (response.status < 500 && response.status !== 429) {
        options.logger.warn({ url: redactUrl(url), deliveryId, status: response.status }, 'alert webhook refused the notification; not retried');
        return;
      }
    } catch (error) {
      outcome = (error as Error).name === 'TimeoutError' ? 'timed out' : (error as Error).message;
    }
    if (attempt === WEBHOOK_ATTEMPTS) {
      options.logger.warn({ url: redactUrl(url), deliveryId, attempts: attempt, outcome }, 'alert webhook failed every attempt; notification not delivered there');
      return;
    }
    const wait = Math.random() * Math.min(BACKOFF_MS.max, BACKOFF_MS.base * 2 ** (attempt - 1));
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
}

/** A webhook URL for logs: without user info or query (either may hold a token). */
function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}${parsed.pathname}`;
  } catch {
    return '(invalid URL)';
  }
}
