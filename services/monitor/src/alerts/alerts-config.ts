import { fileURLToPath } from 'node:url';
import { z } from 'zod';

// dist/alerts/ -> the repository's config/ folder (the image copies it alongside).
const configDir = fileURLToPath(new URL('../../../../config/', import.meta.url));

/** The alerts area's settings. */
export const alertsConfigShape = {
  /** The rules file (YAML): reloaded when it changes, a bad version refused with positions. */
  MONITOR_ALERT_RULES: z.string().min(1).default(`${configDir}alerts.yaml`),
  /** How often every rule is evaluated. */
  MONITOR_ALERT_EVAL_MS: z.coerce.number().int().min(100).max(3_600_000).default(15_000),
  /** The stat check under the rules file's watcher. */
  MONITOR_ALERT_RULES_POLL_MS: z.coerce.number().int().min(50).max(3_600_000).default(2_000),
  /** Signs webhook bodies (x-elexirion-signature: sha256=HMAC); unset: unsigned. */
  MONITOR_ALERT_WEBHOOK_SECRET: z.string().min(16, 'at least 16 characters').optional(),
};
