import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { registerSecret } from '@elexirion/kit';
import type { ProviderName } from './provider-config.js';

export interface VendorCredentials {
  apiKey?: string;
  baseUrl?: string;
}

const VARIABLES: Record<Exclude<ProviderName, 'mock'>, { key: string; baseUrl: string }> = {
  anthropic: { key: 'ANTHROPIC_API_KEY', baseUrl: 'ANTHROPIC_BASE_URL' },
  gemini: { key: 'GEMINI_API_KEY', baseUrl: 'GEMINI_BASE_URL' },
  openai: { key: 'OPENAI_API_KEY', baseUrl: 'OPENAI_BASE_URL' },
};

/**
 * Keys and base URLs from the environment, or from files in a mounted secrets folder (one file
 * per variable, as a Kubernetes Secret volume lays them out); the environment wins. Every key,
 * and the password of a base URL, is registered as a secret, so no log, error, event or
 * response can carry it.
 */
export function readCredentials(env: NodeJS.ProcessEnv, secretsDir: string | undefined): Record<Exclude<ProviderName, 'mock'>, VendorCredentials> {
  const fromFile = (name: string): string | undefined => {
    if (!secretsDir) return undefined;
    const path = join(secretsDir, name);
    try {
      if (!statSync(path).isFile()) return undefined;
      return readFileSync(path, 'utf8').trim() || undefined;
    } catch {
      return undefined;
    }
  };
  const read = (name: string) => env[name]?.trim() || fromFile(name);
  const result = {} as Record<Exclude<ProviderName, 'mock'>, VendorCredentials>;
  for (const [provider, names] of Object.entries(VARIABLES) as [Exclude<ProviderName, 'mock'>, { key: string; baseUrl: string }][]) {
    const apiKey = read(names.key);
    const baseUrl = read(names.baseUrl);
    registerSecret(apiKey);
    registerUrlPassword(baseUrl);
    result[provider] = { ...(apiKey ? { apiKey } : {}), ...(baseUrl ? { baseUrl } : {}) };
  }
  return result;
}

/**
 * Registers the password of a base URL with credentials in it (`http://user:pass@host`), as
 * written and decoded, as a secret: then an SDK error that quotes the URL is scrubbed too.
 * Wherever the URL itself is shown, it goes through redactUrlCredentials.
 */
function registerUrlPassword(baseUrl: string | undefined): void {
  if (!baseUrl || !URL.canParse(baseUrl)) return;
  const { password } = new URL(baseUrl);
  registerSecret(password);
  try {
    registerSecret(decodeURIComponent(password));
  } catch {
    // Not valid percent-encoding: it is only ever seen as written.
  }
}

/** A vendor is usable with a key; an OpenAI-compatible server (Ollama, vLLM) may need only a base URL. */
export function isConfigured(provider: ProviderName, credentials: VendorCredentials | undefined): boolean {
  if (provider === 'mock') return true;
  if (!credentials) return false;
  return Boolean(credentials.apiKey) || (provider === 'openai' && Boolean(credentials.baseUrl));
}
