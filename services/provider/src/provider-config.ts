import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { z } from 'zod';

export const PROVIDER_NAMES = ['anthropic', 'gemini', 'openai', 'mock'] as const;
export type ProviderName = (typeof PROVIDER_NAMES)[number];

const target = z
  .string()
  .regex(/^(anthropic|gemini|openai|mock)\/[\w.:-]+$/, 'expected "<provider>/<model>" with provider anthropic, gemini, openai or mock');

const preset = z.object({
  max_tokens: z.number().int().positive(),
  temperature: z.number().min(0).max(2).optional(),
  targets: z.array(target).min(1).optional(),
});

const providerSettings = z.object({
  max_concurrency: z.number().int().positive(),
  max_queue: z.number().int().min(0),
  requests_per_second: z.number().positive(),
  burst: z.number().positive(),
  timeout_ms: z.number().int().positive(),
  max_attempts: z.number().int().min(1).max(10),
  backoff_base_ms: z.number().int().min(0),
  backoff_max_ms: z.number().int().min(0),
  breaker: z.object({
    window_ms: z.number().int().positive(),
    min_requests: z.number().int().positive(),
    failure_rate: z.number().gt(0).max(1),
    cooldown_ms: z.number().int().positive(),
  }),
});
export type ProviderSettings = z.infer<typeof providerSettings>;

const configSchema = z
  .object({
    default_alias: z.string().min(1),
    default_max_tokens: z.number().int().positive().default(4096),
    aliases: z.record(
      z.string().regex(/^[a-z][a-z0-9_]*$/, 'expected an alias of lowercase letters, digits and _'),
      z.object({
        targets: z.array(target).min(1),
        default_preset: z.string().optional(),
        presets: z.record(z.string(), preset).default({}),
      }),
    ),
    providers: z.object({
      anthropic: providerSettings,
      gemini: providerSettings,
      openai: providerSettings,
      mock: providerSettings,
    }),
    prices: z.record(target, z.object({ input: z.number().min(0), output: z.number().min(0) })).default({}),
  })
  .superRefine((config, context) => {
    if (!config.aliases[config.default_alias]) {
      context.addIssue({ code: 'custom', path: ['default_alias'], message: `alias "${config.default_alias}" is not defined` });
    }
    for (const [name, alias] of Object.entries(config.aliases)) {
      if (alias.default_preset && !alias.presets[alias.default_preset]) {
        context.addIssue({ code: 'custom', path: ['aliases', name, 'default_preset'], message: `preset "${alias.default_preset}" is not defined` });
      }
    }
  });

export type ProviderFileConfig = z.infer<typeof configSchema>;

export function parseProviderConfig(text: string, source: string): ProviderFileConfig {
  let raw: unknown;
  try {
    raw = parse(text);
  } catch (error) {
    throw new Error(`${source}: malformed YAML: ${(error as Error).message.split('\n')[0]}`);
  }
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`${source}: ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  return parsed.data;
}

export function loadProviderConfig(path: string): ProviderFileConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new Error(`cannot read provider config ${path}: ${(error as Error).message}`);
  }
  return parseProviderConfig(text, path);
}

export interface Target {
  provider: ProviderName;
  model: string;
}

export function parseTarget(text: string): Target {
  const slash = text.indexOf('/');
  return { provider: text.slice(0, slash) as ProviderName, model: text.slice(slash + 1) };
}

export function targetName(target: Target): string {
  return `${target.provider}/${target.model}`;
}

/** Price of a call in USD; zero (and `known: false`) for a model without a price. */
export function costOf(config: ProviderFileConfig, target: Target, inputTokens: number, outputTokens: number): { usd: number; known: boolean } {
  const price = config.prices[targetName(target)];
  if (!price) return { usd: 0, known: false };
  return { usd: (inputTokens * price.input + outputTokens * price.output) / 1_000_000, known: true };
}
