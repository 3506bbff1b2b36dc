import { ApiError } from '../api.js';

/** A failure said plainly: what happened (the gateway's message) and what the user can do. */
export function ErrorNotice({ error, title }: { error: unknown; title?: string }) {
  if (!error) return null;
  const apiError = error instanceof ApiError ? error : null;
  const message = error instanceof Error ? error.message : String(error);
  return (
    <div class="notice notice-error" role="alert">
      <strong>{title ?? 'Something went wrong'}</strong>
      {apiError && apiError.code !== 'UNKNOWN' ? <span class="code">{apiError.code}</span> : null}
      <p>{message}</p>
      {apiError ? <p class="advice">{apiError.advice}</p> : null}
    </div>
  );
}
