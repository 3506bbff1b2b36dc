// The form that submits a job (POST /v1/jobs): a chat message the agent routes, or a pipeline
// with its declared inputs. Checked here first (required inputs, numbers, JSON), then by the
// gateway; either refusal names the field and marks it.
import { useRef, useState } from 'preact/hooks';
import { ApiError, call } from '../../api.js';
import { linkClick } from '../../router.js';
import { ErrorNotice } from '../../ui/error-notice.js';
import { shortId, statusLabel } from './job-status.js';
import type { Job, PipelineInput, PipelineSummary, SubmitJobResponse } from './job-types.js';

/** The select's value for "no pipeline: route the message". */
const ROUTED = '';
/** The field key of the chat message (pipeline inputs are keyed `inputs.<name>`). */
const MESSAGE_FIELD = 'message';

/**
 * A fresh idempotency key. Not crypto.randomUUID: that exists only in secure contexts, and the
 * gateway may be reached over plain http on a LAN address.
 */
function newIdempotencyKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `web-${Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('')}`;
}

function inputField(name: string): string {
  return `inputs.${name}`;
}

/** Why a value cannot be an input of this type (the executor's own rules), or undefined. */
function typeProblem(input: PipelineInput, value: string): string | undefined {
  switch (input.type) {
    case 'number':
      return Number.isFinite(Number(value.trim())) ? undefined : `expected a number, got "${value}"`;
    case 'list':
    case 'object': {
      const wanted = input.type === 'list' ? 'array' : 'object';
      try {
        const parsed = JSON.parse(value) as unknown;
        const ok = input.type === 'list' ? Array.isArray(parsed) : parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed);
        return ok ? undefined : `expected a JSON ${wanted}`;
      } catch {
        return `expected a JSON ${wanted} (it does not parse)`;
      }
    }
    default:
      return undefined;
  }
}

function typeHint(input: PipelineInput): string {
  switch (input.type) {
    case 'number':
      return 'A number.';
    case 'boolean':
      return 'True or false.';
    case 'list':
      return 'A JSON array, e.g. ["first", "second"].';
    case 'object':
      return 'A JSON object, e.g. {"key": "value"}.';
    default:
      return '';
  }
}

/** The field a gateway refusal names ("inputs.code: ...", "body.message: ..."), as this form keys it. */
function fieldOfRefusal(message: string, inputs: readonly PipelineInput[]): string | undefined {
  const named = /\binputs\.([A-Za-z0-9_-]+)/.exec(message)?.[1];
  if (named && inputs.some((input) => input.name === named)) return inputField(named);
  if (/^(body\.)?message\b/.test(message)) return MESSAGE_FIELD;
  if (/^(body\.)?pipeline\b/.test(message)) return 'pipeline';
  return undefined;
}

export function SubmitJobForm({ pipelines, pipelinesError, onSubmitted }: { pipelines: readonly PipelineSummary[] | undefined; pipelinesError: unknown; onSubmitted(job: Job): void }) {
  const [pipelineName, setPipelineName] = useState(ROUTED);
  const [message, setMessage] = useState('');
  const [inputs, setInputs] = useState<Record<string, string>>({});
  const [fieldErrors, setFieldErrors] = useState<Record<string, string>>({});
  const [refusal, setRefusal] = useState<unknown>(undefined);
  const [submitting, setSubmitting] = useState(false);
  const [submitted, setSubmitted] = useState<SubmitJobResponse | undefined>(undefined);
  // One key per submission: kept while the form is unchanged, so resubmitting after a lost answer
  // returns the job already stored instead of a second one; a change or a success makes a new one.
  const idempotencyKey = useRef(newIdempotencyKey());
  const formRef = useRef<HTMLFormElement>(null);

  const pipeline = pipelines?.find((each) => each.name === pipelineName);
  const pipelineInputs = pipeline?.inputs ?? [];
  const invalidPipelines = (pipelines ?? []).filter((each) => !each.valid);

  const changed = () => {
    idempotencyKey.current = newIdempotencyKey();
    setSubmitted(undefined);
  };

  const clearFieldError = (field: string) => {
    if (fieldErrors[field]) setFieldErrors(({ [field]: _, ...rest }) => rest);
  };

  /** The form's problems by field, in the order the fields appear. */
  function check(): Record<string, string> {
    const problems: Record<string, string> = {};
    if (pipelineName === ROUTED) {
      if (!message.trim()) problems[MESSAGE_FIELD] = 'Message: required (the text the agent routes to a pipeline)';
      return problems;
    }
    for (const input of pipelineInputs) {
      const value = inputs[input.name] ?? '';
      if (!value.trim()) {
        if (input.required) problems[inputField(input.name)] = `${input.name}: required by ${pipelineName}${input.description ? ` (${input.description.replace(/\.$/, '')})` : ''}`;
        continue;
      }
      const problem = typeProblem(input, value);
      if (problem) problems[inputField(input.name)] = `${input.name}: ${problem}`;
    }
    return problems;
  }

  const focusField = (field: string) => {
    formRef.current?.querySelector<HTMLElement>(`[data-field="${CSS.escape(field)}"]`)?.focus();
  };

  async function submit(event: Event) {
    event.preventDefault();
    setRefusal(undefined);
    setSubmitted(undefined);
    const problems = check();
    setFieldErrors(problems);
    const fields = Object.keys(problems);
    if (fields.length > 0) {
      setRefusal(new Error(Object.values(problems).join('; ')));
      focusField(fields[0]!);
      return;
    }
    const body =
      pipelineName === ROUTED
        ? { message, idempotencyKey: idempotencyKey.current }
        : {
            pipeline: pipelineName,
            // Empty optional inputs are left out: the pipeline's defaults apply.
            inputs: Object.fromEntries(pipelineInputs.map((input): [string, string] => [input.name, inputs[input.name] ?? '']).filter(([, value]) => value.trim() !== '')),
            idempotencyKey: idempotencyKey.current,
          };
    setSubmitting(true);
    try {
      const answer = await call<SubmitJobResponse>('POST', '/v1/jobs', body);
      setSubmitted(answer);
      idempotencyKey.current = newIdempotencyKey();
      if (pipelineName === ROUTED) setMessage('');
      if (answer.job) onSubmitted(answer.job);
    } catch (error) {
      setRefusal(error);
      const field = error instanceof ApiError ? fieldOfRefusal(error.message, pipelineInputs) : undefined;
      if (field) {
        setFieldErrors({ [field]: error instanceof Error ? error.message : String(error) });
        focusField(field);
      }
    } finally {
      setSubmitting(false);
    }
  }

  /** A field's label, control, hint and error, the hint and error tied to the control by id. */
  const field = (key: string, label: string, required: boolean, hint: string, control: (props: FieldProps) => preact.JSX.Element, wide = true) => {
    const id = `job-field-${key.replace(/[^A-Za-z0-9_-]/g, '-')}`;
    const error = fieldErrors[key];
    return (
      <div key={key} class={wide ? 'job-field job-field-wide' : 'job-field'}>
        <label for={id}>
          {label}
          {required ? <span aria-hidden="true"> *</span> : null}
        </label>
        {control({
          id,
          'data-field': key,
          required,
          'aria-invalid': error ? true : undefined,
          'aria-describedby': [hint ? `${id}-hint` : '', error ? `${id}-error` : ''].filter(Boolean).join(' ') || undefined,
        })}
        {hint ? (
          <span id={`${id}-hint`} class="hint">
            {hint}
          </span>
        ) : null}
        {error ? (
          <span id={`${id}-error`} class="job-field-error">
            {error}
          </span>
        ) : null}
      </div>
    );
  };

  const inputControl = (input: PipelineInput) => (props: FieldProps) => {
    const value = inputs[input.name] ?? '';
    const onInput = (event: Event) => {
      const next = (event.target as HTMLInputElement | HTMLTextAreaElement | HTMLSelectElement).value;
      setInputs((current) => ({ ...current, [input.name]: next }));
      clearFieldError(props['data-field']);
      changed();
    };
    if (input.type === 'number') return <input type="text" inputMode="decimal" value={value} onInput={onInput} {...props} />;
    if (input.type === 'boolean') {
      return (
        <select value={value} onChange={onInput} {...props}>
          <option value="">{input.required ? 'Choose' : 'The default'}</option>
          <option value="true">true</option>
          <option value="false">false</option>
        </select>
      );
    }
    return <textarea rows={input.type === 'string' ? 3 : 4} spellcheck={input.type === 'string'} value={value} onInput={onInput} {...props} />;
  };

  return (
    <section class="card job-submit" aria-labelledby="job-submit-title">
      <h2 id="job-submit-title">Submit a job</h2>
      <form ref={formRef} onSubmit={submit} noValidate aria-describedby="job-submit-hint">
        <p id="job-submit-hint" class="hint">
          A job is stored before it runs and keeps running when you leave this page. Fields marked * are required.
        </p>
        <div class="job-submit-fields">
          {field('pipeline', 'What to run', false, pipeline?.description ? `${pipeline.description}${pipeline.stepCount ? ` (${pipeline.stepCount} step${pipeline.stepCount === 1 ? '' : 's'})` : ''}` : '', (props) => (
            <select
              value={pipelineName}
              onChange={(event) => {
                setPipelineName((event.target as HTMLSelectElement).value);
                setFieldErrors({});
                setRefusal(undefined);
                changed();
              }}
              {...props}
              required={undefined}
            >
              <option value={ROUTED}>A chat message (the agent picks the pipeline)</option>
              {(pipelines ?? []).map((each) => (
                <option key={each.name} value={each.name} disabled={!each.valid}>
                  {each.valid ? `Pipeline ${each.name}` : `Pipeline ${each.name} (not valid)`}
                </option>
              ))}
            </select>
          ))}
          {pipelineName === ROUTED
            ? field(MESSAGE_FIELD, 'Message', true, 'Routed as a chat message is (routes.yaml decides the pipeline).', (props) => (
                <textarea
                  rows={3}
                  value={message}
                  onInput={(event) => {
                    setMessage((event.target as HTMLTextAreaElement).value);
                    clearFieldError(MESSAGE_FIELD);
                    changed();
                  }}
                  {...props}
                />
              ))
            : pipelineInputs.map((input) =>
                field(
                  inputField(input.name),
                  input.name,
                  input.required === true,
                  [input.description, typeHint(input), input.required ? '' : 'Optional: the pipeline\'s default applies when empty.'].filter(Boolean).join(' '),
                  inputControl(input),
                  input.type !== 'number' && input.type !== 'boolean',
                ),
              )}
        </div>
        {pipelinesError ? <ErrorNotice error={pipelinesError} title="The pipelines could not be listed (a chat message can still be submitted)" /> : null}
        {pipelines === undefined && !pipelinesError ? <p class="muted">Loading the pipelines…</p> : null}
        {invalidPipelines.length > 0 ? (
          <details class="job-invalid-pipelines">
            <summary>
              {invalidPipelines.length} pipeline{invalidPipelines.length === 1 ? ' is' : 's are'} not valid and cannot run
            </summary>
            <ul>
              {invalidPipelines.map((each) => (
                <li key={each.name}>
                  <strong>{each.name}</strong>: <code>{each.problem || 'no reason given'}</code>
                </li>
              ))}
            </ul>
          </details>
        ) : null}
        <div class="row job-submit-actions">
          <button type="submit" disabled={submitting}>
            {submitting ? 'Submitting…' : 'Submit job'}
          </button>
        </div>
        {refusal instanceof ApiError && refusal.code === 'NETWORK' ? (
          <>
            <ErrorNotice error={refusal} title="No answer from the gateway: the job may or may not have been stored" />
            <p class="hint">Submit again without changing the form: the same idempotency key is sent, so a job already stored is answered instead of a second one.</p>
          </>
        ) : (
          <ErrorNotice error={refusal} title="The job was not submitted" />
        )}
        <div role="status" class="job-submitted">
          {submitted?.job ? (
            <p>
              {submitted.deduplicated ? 'Already submitted (same idempotency key): job ' : 'Submitted job '}
              <a href={`/jobs/${submitted.job.jobId}`} onClick={(event) => linkClick(event, `/jobs/${submitted.job!.jobId}`)}>
                {shortId(submitted.job.jobId)}
              </a>
              , {statusLabel(submitted.job.status)}
              {submitted.job.pipeline ? ` (${submitted.job.pipeline})` : ''}.
            </p>
          ) : null}
        </div>
      </form>
    </section>
  );
}

/** What every field's control gets from `field`. */
interface FieldProps {
  id: string;
  'data-field': string;
  required: boolean;
  'aria-invalid': true | undefined;
  'aria-describedby': string | undefined;
}
