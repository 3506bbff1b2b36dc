// Who this tab calls as (GET /v1/caller): the key's name and what it may do, or keys off.
import { useEffect, useState } from 'preact/hooks';
import { apiKey, call } from './api.js';

/** GetCallerResponse as proto3 JSON: false, empty and unset fields are absent. */
export interface CallerInfo {
  keysEnabled?: boolean;
  name?: string;
  scopes?: string[];
  admin?: boolean;
}

/** Whether the caller may use `scope`: keys off, an admin key, or a key with the scope. */
export function mayUse(caller: CallerInfo | undefined, scope: string): boolean {
  if (!caller) return false;
  return !caller.keysEnabled || caller.admin === true || (caller.scopes ?? []).includes(scope);
}

// One GetCaller per key: the shell's key button and the page mounted with it ask together.
let asked: { key: string | null; answer: Promise<CallerInfo> } | undefined;

function askCaller(): Promise<CallerInfo> {
  const key = apiKey();
  if (asked?.key !== key) {
    const answer = call<CallerInfo>('GET', '/v1/caller');
    asked = { key, answer };
    // A refusal or a network failure is asked again by the next mount, not kept.
    answer.catch(() => {
      if (asked?.answer === answer) asked = undefined;
    });
  }
  return asked.answer;
}

/**
 * The caller, read once per key (the shell remounts pages when the key changes); undefined
 * while loading or when the key was refused (the shell then asks for one).
 */
export function useCaller(): { caller: CallerInfo | undefined; error: unknown } {
  const [caller, setCaller] = useState<CallerInfo | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  useEffect(() => {
    let current = true;
    askCaller().then(
      (answer) => current && setCaller(answer),
      (caught: unknown) => current && setError(caught),
    );
    return () => {
      current = false;
    };
  }, []);
  return { caller, error };
}
