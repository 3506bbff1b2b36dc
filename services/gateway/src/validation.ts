import { PIPELINE_NAME, ServerError, Status } from '@elexirion/kit';

export const MAX_MESSAGE_CHARS = 100_000;

export function invalid(message: string): ServerError {
  return new ServerError(Status.INVALID_ARGUMENT, message);
}

export function checkMessage(message: string): void {
  if (message.trim() === '') throw invalid('message: must not be empty');
  if (message.length > MAX_MESSAGE_CHARS) throw invalid(`message: ${message.length} characters is over the limit of ${MAX_MESSAGE_CHARS}`);
}

export function checkPipelineName(field: string, name: string, required: boolean): void {
  if (name === '') {
    if (required) throw invalid(`${field}: must name a pipeline`);
    return;
  }
  if (!PIPELINE_NAME.test(name)) throw invalid(`${field}: "${name.slice(0, 80)}" is not a pipeline name (lowercase letters, digits, _ and -, at most 64)`);
}

export function checkSessionId(sessionId: string): void {
  if (sessionId.length > 128) throw invalid('session_id: at most 128 characters');
}
