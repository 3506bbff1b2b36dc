// Who this tab calls as (GET /v1/caller): the key's name and what it may do, or keys off.
import { useEffect, useState } from 'preact/hooks';
import { call } from './api.js';

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

/**
 * The caller, read once per mount (the shell remounts pages when the key changes); undefined
 * while loading or when the key was refused (the shell then asks for one).
 */
export function useCaller(): { caller: CallerInfo | undefined; error: unknown } {
  const [caller, setCaller] = useState<CallerInfo | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  useEffect(() => {
    const controller = new AbortController();
    call<CallerInfo>('GET', '/v1/caller', undefined, { signal: controller.signal }).then(setCaller, (caught: unknown) => {
      if (!controller.signal.aborted) setError(caught);
    });
    return () => controller.abort();
  }, []);
  return { caller, error };
}
