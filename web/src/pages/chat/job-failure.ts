// A failed answer said plainly: the job's error_code and error, with what the user can do about
// a failed generation (which differs from a refused API call: the remedy is mostly Regenerate).
import { ApiError } from '../../api.js';

export class JobFailure extends ApiError {
  constructor(code: string, message: string) {
    super(0, code, message);
  }

  override get advice(): string {
    switch (this.code) {
      case 'INVALID_ARGUMENT':
      case 'FAILED_PRECONDITION':
        return 'The model’s provider refused this request: rephrase or shorten the message, then send it again.';
      case 'UNAVAILABLE':
      case 'RESOURCE_EXHAUSTED':
        return 'The model’s providers are overloaded or rate limited: Regenerate in a moment (the dashboard shows their breakers).';
      case 'DEADLINE_EXCEEDED':
        return 'The answer took too long: Regenerate, or ask for something shorter.';
      case 'NOT_FOUND':
        return 'The job is no longer kept by the platform: Regenerate to ask again.';
      default:
        return super.advice;
    }
  }
}
