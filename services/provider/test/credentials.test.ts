import { describe, expect, it } from 'vitest';
import { REDACTED, redactSecrets } from '@elexirion/kit';
import { readCredentials } from '../src/credentials.js';

describe('readCredentials', () => {
  it('registers the password of a base URL as a secret, as written and decoded, so an error quoting it is scrubbed', () => {
    const credentials = readCredentials({ OPENAI_BASE_URL: 'http://proxy:pw%2Fbase-url-0042@127.0.0.1:8000/v1' }, undefined);
    expect(credentials.openai).toEqual({ baseUrl: 'http://proxy:pw%2Fbase-url-0042@127.0.0.1:8000/v1' });
    expect(redactSecrets('GET http://proxy:pw%2Fbase-url-0042@127.0.0.1:8000/v1 refused')).toBe(`GET http://proxy:${REDACTED}@127.0.0.1:8000/v1 refused`);
    expect(redactSecrets('upstream echoed pw/base-url-0042')).toBe(`upstream echoed ${REDACTED}`);
  });

  it('reads a base URL whose password is not valid percent-encoding without failing', () => {
    expect(readCredentials({ GEMINI_BASE_URL: 'http://proxy:bad%zz-pass-0042@127.0.0.1:8000' }, undefined).gemini.baseUrl).toBe('http://proxy:bad%zz-pass-0042@127.0.0.1:8000');
    expect(redactSecrets('bad%zz-pass-0042')).toBe(REDACTED);
  });
});
