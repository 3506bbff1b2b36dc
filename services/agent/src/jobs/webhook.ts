import { createHmac } from 'node:crypto';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { proto, retry, timeoutSignal } from '@elexirion/kit';
import { NonPublicAddressError, literalAddressProblem, publicOnlyLookup } from './webhook-address.js';

/** Longer URLs are refused: the URL is kept on the job record. */
const MAX_WEBHOOK_URL_LENGTH = 2048;

/**
 * What is wrong with a webhook given to SubmitJob, in words naming the field, or undefined when
 * it is fine. Never quotes the secret, nor a URL that carries credentials. Unless
 * `allowPrivate`, a host written as a loopback, private or link-local address is refused (names
 * are resolved by `resolvedAddressProblem` at submit, and checked again as each delivery connects).
 */
export function checkWebhook(webhook: { url: string; secret: string }, allowPrivate = false): string | undefined {
  const { url, secret } = webhook;
  if (!url) return 'webhook.url: required (an http or https URL)';
  if (url.length > MAX_WEBHOOK_URL_LENGTH) return `webhook.url: longer than ${MAX_WEBHOOK_URL_LENGTH} characters`;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'webhook.url: not a URL (expected http://host/path or https://host/path)';
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return `webhook.url: expected an http or https URL, not ${JSON.stringify(parsed.protocol.slice(0, 20))}`;
  if (parsed.username || parsed.password) return 'webhook.url: must not carry credentials (user:password@host); receivers check webhook.secret\'s signature instead';
  if (!secret) return 'webhook.secret: required (it signs every delivery)';
  return allowPrivate ? undefined : literalAddressProblem(parsed);
}

/** Pino's call shape, `(fields, message)`. */
export interface WebhookLogger {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
}

export interface WebhookSenderOptions {
  logger: WebhookLogger;
  /** How long one attempt waits for the receiver's answer (default 10 s). */
  timeoutMs?: number;
  /** Attempts in all, the first included (default 6). */
  attempts?: number;
  /** Backoff between attempts (the kit's retry: full jitter, doubling from baseMs up to maxMs; defaults 1 s and 60 s). */
  baseMs?: number;
  maxMs?: number;
  /** Aborting it stops every delivery in progress (the agent is closing). */
  signal?: AbortSignal;
  /** Deliver to loopback, private and link-local receivers too (AGENT_WEBHOOK_ALLOW_PRIVATE). */
  allowPrivate?: boolean;
}

/** One attempt's failure: why, in words without secrets, and whether another attempt may fare better. */
class DeliveryFailure extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/**
 * POSTs finished jobs to their completion webhooks: the job as proto3 JSON, signed as
 * JobWebhook documents (`elexirion-signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
 * "<t>.<body>")>`, signed again at each attempt so a receiver can refuse old timestamps), with
 * `elexirion-job-id` and `webhook-id` (the job id: the same at every attempt, for receivers to
 * drop duplicates). Network errors, timeouts, 408, 429 and 5xx are retried with backoff
 * (honouring Retry-After); other answers are final, redirects included (they are not followed).
 * Logs name the receiver by its origin only: a webhook URL's path often holds a token.
 */
export class WebhookSender {
  private readonly timeoutMs: number;
  private readonly attempts: number;
  private readonly baseMs: number;
  private readonly maxMs: number;
  private readonly signal: AbortSignal;

  constructor(private readonly options: WebhookSenderOptions) {
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.attempts = options.attempts ?? 6;
    this.baseMs = options.baseMs ?? 1_000;
    this.maxMs = options.maxMs ?? 60_000;
    this.signal = options.signal ?? new AbortController().signal;
    if (!(this.timeoutMs > 0)) throw new RangeError('WebhookSender: timeoutMs must be positive');
    if (!(this.attempts >= 1)) throw new RangeError('WebhookSender: attempts must be at least 1');
  }

  /** Delivers `job` to `webhook`; resolves with "delivered" or "failed: <why>", never rejects. */
  async deliver(job: proto.Job, webhook: { url: string; secret: string }): Promise<string> {
    const { logger } = this.options;
    // A name is resolved, and its addresses checked, when each attempt connects (post).
    const problem = checkWebhook(webhook, this.options.allowPrivate ?? false);
    if (problem) return `failed: ${problem}`;
    const receiver = new URL(webhook.url).origin;
    const body = JSON.stringify(proto.Job.toJSON(job));
    let attempts = 0;
    try {
      await retry(
        (attempt) => {
          attempts = attempt;
          return this.post(job.jobId, webhook, body);
        },
        {
          maxAttempts: this.attempts,
          baseMs: this.baseMs,
          maxMs: this.maxMs,
          signal: this.signal,
          retryable: (error) => error instanceof DeliveryFailure && error.retryable,
          retryAfterMs: (error) => (error instanceof DeliveryFailure ? error.retryAfterMs : undefined),
          onRetry: ({ attempt, delayMs, error }) => logger.warn({ jobId: job.jobId, receiver, attempt, delayMs, reason: reasonOf(error) }, 'webhook delivery failed; retrying'),
        },
      );
      logger.info({ jobId: job.jobId, receiver, attempts }, 'webhook delivered');
      return 'delivered';
    } catch (error) {
      const status = `failed: ${reasonOf(error)} (${attempts} attempt${attempts === 1 ? '' : 's'})`;
      logger.warn({ jobId: job.jobId, receiver, attempts, status }, 'webhook delivery failed');
      return status;
    }
  }

  private async post(jobId: string, webhook: { url: string; secret: string }, body: string): Promise<void> {
    const timestamp = Math.floor(Date.now() / 1000);
    const signature = createHmac('sha256', webhook.secret).update(`${timestamp}.${body}`).digest('hex');
    const timeout = timeoutSignal(this.signal, this.timeoutMs);
    const url = new URL(webhook.url);
    try {
      let response: IncomingMessage;
      try {
        // node:http rather than fetch: its `lookup` checks the address each connection goes to.
        response = await new Promise<IncomingMessage>((resolve, reject) => {
          const request = (url.protocol === 'https:' ? httpsRequest : httpRequest)(
            url,
            {
              method: 'POST',
              headers: {
                'content-type': 'application/json',
                'content-length': Buffer.byteLength(body),
                'user-agent': 'elexirion-webhook/1',
                'elexirion-signature': `t=${timestamp},v1=${signature}`,
                'elexirion-job-id': jobId,
                'webhook-id': jobId,
              },
              signal: timeout.signal,
              ...(this.options.allowPrivate ? {} : { lookup: publicOnlyLookup }),
            },
            resolve,
          );
          request.on('error', reject);
          request.end(body);
        });
      } catch (error) {
        if (timeout.timedOut) throw new DeliveryFailure(`no answer within ${this.timeoutMs} ms`, true);
        if (this.signal.aborted) throw error;
        if (error instanceof NonPublicAddressError) throw new DeliveryFailure(error.message, false);
        throw new DeliveryFailure(`could not reach the receiver (${networkReason(error)})`, true);
      }
      // Only the status counts; the body is let go so the connection can serve the next delivery.
      response.resume();
      const status = response.statusCode ?? 0;
      if (status >= 200 && status < 300) return;
      const retryable = status === 408 || status === 429 || status >= 500;
      const redirect = status >= 300 && status < 400 ? ' (redirects are not followed)' : '';
      const retryAfter = response.headers['retry-after'];
      throw new DeliveryFailure(`HTTP ${status}${redirect}`, retryable, retryable ? retryAfterMs(typeof retryAfter === 'string' ? retryAfter : null, this.maxMs) : undefined);
    } finally {
      timeout.dispose();
    }
  }
}

function reasonOf(error: unknown): string {
  if (error instanceof DeliveryFailure) return error.message;
  if (error instanceof Error && error.name === 'AbortError') return 'stopped: the agent is shutting down';
  return 'unexpected error';
}

/** The system's code for a failed connection (ECONNREFUSED, ENOTFOUND ...), not its whole message. */
function networkReason(error: unknown): string {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' ? code : 'network error';
}

/** Retry-After in seconds or as an HTTP date, capped at `maxMs`; undefined when absent or unreadable. */
function retryAfterMs(header: string | null, maxMs: number): number | undefined {
  if (!header) return undefined;
  const seconds = Number(header);
  const ms = Number.isFinite(seconds) ? seconds * 1000 : Date.parse(header) - Date.now();
  return Number.isFinite(ms) ? Math.min(maxMs, Math.max(0, ms)) : undefined;
}
