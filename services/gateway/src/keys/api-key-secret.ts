import { hash, randomBytes, timingSafeEqual } from 'node:crypto';

// An API key's secret is `elx_<key_id>_<random>`: the key id (public, 16 hex characters) says
// which stored key to compare with, the random part (32 bytes, base64url) is what makes it
// secret. Only the SHA-256 of the whole secret is stored: the random part has 256 bits, so a
// slow password hash would add nothing but latency on every request.

export const KEY_ID_PATTERN = /^[0-9a-f]{16}$/;
const SECRET_PATTERN = /^elx_([0-9a-f]{16})_[A-Za-z0-9_-]{43}$/;

export interface NewSecret {
  keyId: string;
  secret: string;
  sha256: string;
}

export function newSecret(): NewSecret {
  const keyId = randomBytes(8).toString('hex');
  const secret = `elx_${keyId}_${randomBytes(32).toString('base64url')}`;
  return { keyId, secret, sha256: sha256Hex(secret) };
}

/** The key id a secret names, or undefined when it is not shaped like one of ours. */
export function keyIdOf(secret: string): string | undefined {
  return SECRET_PATTERN.exec(secret)?.[1];
}

// crypto.hash, the one-shot form: a fraction of createHash's cost for a short input (it runs on
// every keyed request).
export function sha256Hex(text: string): string {
  return hash('sha256', text, 'hex');
}

/** Compares a secret with a stored hash in constant time. */
export function secretMatches(secret: string, storedSha256: string): boolean {
  const actual = hash('sha256', secret, 'buffer');
  const expected = Buffer.from(storedSha256, 'hex');
  return expected.length === actual.length && timingSafeEqual(actual, expected);
}

/** The secret in `authorization: Bearer <secret>`, or undefined when there is none. */
export function bearerSecret(authorization: string | undefined): string | undefined {
  if (!authorization) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
  return match?.[1];
}
