/**
 * A finished job POSTed to its webhook, signed. MINIMAL version for the jobs branch: the
 * events/webhook work of issue 12 writes this file; this one has the same shape so the job
 * runner compiles and delivers meanwhile.
 */
import { createHmac } from 'node:crypto';
import { proto, retry } from '@elexirion/kit';

export class WebhookSender {
  constructor(private readonly options: { maxAttempts?: number; timeoutMs?: number } = {}) {}

  /** "delivered", or "failed: <why>" after the retries. Never throws. */
  async deliver(job: proto.Job, webhook: { url: string; secret: string }): Promise<string> {
    const body = JSON.stringify(proto.Job.toJSON(job));
    try {
      await retry(
        async () => {
          const t = Math.floor(Date.now() / 1000);
          const signature = createHmac('sha256', webhook.secret).update(`${t}.${body}`).digest('hex');
          const response = await fetch(webhook.url, {
            method: 'POST',
            headers: { 'content-type': 'application/json', 'elexirion-signature': `t=${t},v1=${signature}` },
            body,
            signal: AbortSignal.timeout(this.options.timeoutMs ?? 10_000),
          });
          if (!response.ok) throw new Error(`HTTP ${response.status}`);
        },
        { maxAttempts: this.options.maxAttempts ?? 5, baseMs: 500, maxMs: 10_000 },
      );
      return 'delivered';
    } catch (error) {
      return `failed: ${error instanceof Error ? error.message : String(error)}`;
    }
  }
}
