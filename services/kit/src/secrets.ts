/**
 * Values that must never leave the process in logs, errors, events or responses (provider keys,
 * API keys). Whatever reads a secret registers it here; `redactSecrets` scrubs text on its way out.
 */
const secretValues = new Set<string>();
let secretBytes: Buffer[] = [];
const MIN_SECRET_LENGTH = 6; // shorter values would scrub ordinary words

export const REDACTED = '[redacted]';

export function registerSecret(value: string | undefined): void {
  if (value && value.length >= MIN_SECRET_LENGTH && !secretValues.has(value)) {
    secretValues.add(value);
    secretBytes = [...secretValues].map((secret) => Buffer.from(secret, 'utf8'));
  }
}

/** Whether encoded bytes (UTF-8 text, a protobuf message) hold a registered secret verbatim. */
export function containsSecret(bytes: Uint8Array): boolean {
  if (secretBytes.length === 0) return false;
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return secretBytes.some((secret) => view.includes(secret));
}

export function redactSecrets(text: string): string {
  if (secretValues.size === 0) return text;
  let result = text;
  for (const secret of secretValues) {
    if (result.includes(secret)) result = result.split(secret).join(REDACTED);
  }
  return result;
}

/** Deep copy of a log record with every registered secret replaced. */
export function redactSecretsDeep<T>(value: T, depth = 0): T {
  if (secretValues.size === 0 || depth > 8) return value;
  if (typeof value === 'string') return redactSecrets(value) as T;
  if (Array.isArray(value)) return value.map((item) => redactSecretsDeep(item, depth + 1)) as T;
  if (value instanceof Error) {
    const copy = new Error(redactSecrets(value.message));
    copy.name = value.name;
    if (value.stack) copy.stack = redactSecrets(value.stack);
    return copy as T;
  }
  // Only plain objects are copied: a Date, Buffer or Map stays what it is.
  if (value && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) out[key] = redactSecretsDeep(item, depth + 1);
    return out as T;
  }
  return value;
}

/** Variable names whose values are never echoed, even in a config error. */
export function isSecretName(name: string): boolean {
  return /KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL/i.test(name);
}

/**
 * The userinfo of a URL: everything between `scheme://` and the last `@` before the path (a
 * password may hold an unencoded `@`; the URL parser, too, takes the last one).
 */
const URL_USERINFO = /\b([a-z][a-z\d+.-]*:\/\/)([^/?#\s]*)@/gi;

/**
 * Text with the credentials of every URL in it hidden, for URLs that are logged or returned:
 * `http://user:pass@host` becomes `http://user:***@host`, and a user alone (often a token, as in
 * `nats://token@host`) becomes `***`. Text without such a URL comes back unchanged.
 */
export function redactUrlCredentials(text: string): string {
  if (!text.includes('@')) return text;
  return text.replace(URL_USERINFO, (_match, scheme: string, userinfo: string) => {
    const colon = userinfo.indexOf(':');
    return `${scheme}${colon === -1 ? '***' : `${userinfo.slice(0, colon)}:***`}@`;
  });
}
