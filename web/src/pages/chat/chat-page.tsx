// The chat page (/): conversations kept in localStorage, each answer a durable job whose stream
// resumes after a reload, rendered as sanitised Markdown with what served it underneath.
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError } from '../../api.js';
import { mayUse, useCaller, type CallerInfo } from '../../caller.js';
import { ErrorNotice } from '../../ui/error-notice.js';
import { formatTime } from '../../ui/format.js';
import { abandon, abortAll, isRunning, recordThumbs, runJobAnswer, runStreamAnswer, stopJobAnswer, stopStreamAnswer } from './chat-runs.js';
import {
  addTurn,
  chatState,
  createConversation,
  deleteConversation,
  newId,
  replaceAnswer,
  selectConversation,
  updateAnswer,
  useChatState,
  type Answer,
  type Conversation,
  type Turn,
} from './chat-store.js';
import { JobFailure } from './job-failure.js';
import { Markdown } from './markdown.js';
import { ProvenanceDetails } from './provenance.js';
import './chat.css';

/** How this key may chat: durable jobs (resumable), ChatStream only, or not at all. */
type ChatMode = 'job' | 'stream' | 'none';

function modeOf(caller: CallerInfo): ChatMode {
  if (mayUse(caller, 'jobs')) return 'job';
  if (mayUse(caller, 'chat')) return 'stream';
  return 'none';
}

function newAnswer(mode: 'job' | 'stream'): Answer {
  return { id: newId(), mode, idempotencyKey: newId(), status: 'sending', text: '' };
}

function start(answer: Answer, message: string, sessionId: string): void {
  if (answer.mode === 'job') void runJobAnswer(answer.id, message, sessionId);
  else void runStreamAnswer(answer.id, message, sessionId);
}

/** Picks up the answers a reload (or a closed tab) left unfinished. */
function resumeUnfinished(mode: ChatMode): void {
  for (const conversation of chatState().conversations) {
    for (const turn of conversation.turns) {
      const answer = turn.answer;
      if (answer.status !== 'sending' && answer.status !== 'streaming') continue;
      if (isRunning(answer.id)) continue;
      if (answer.mode === 'job' && mode === 'job') void runJobAnswer(answer.id, turn.message, conversation.sessionId);
      // A ChatStream answer has no job to go back to: say so instead of waiting forever.
      else if (answer.mode === 'stream') updateAnswer(answer.id, (current) => ({ ...current, status: 'interrupted' }));
    }
  }
}

export function ChatPage() {
  const state = useChatState();
  const { caller, error: callerError } = useCaller();
  const mode = caller ? modeOf(caller) : null;

  useEffect(() => abortAll, []);

  useEffect(() => {
    if (mode) resumeUnfinished(mode);
  }, [mode]);

  const current = state.conversations.find((conversation) => conversation.id === state.currentId) ?? null;

  return (
    <div class="chat-layout">
      <aside class="chat-sidebar" aria-labelledby="chat-conversations-title">
        <h2 id="chat-conversations-title">Conversations</h2>
        <button type="button" onClick={() => createConversation()}>
          New conversation
        </button>
        {state.conversations.length === 0 ? (
          <p class="muted">No conversations yet: your first message starts one.</p>
        ) : (
          <ul class="chat-conversation-list">
            {state.conversations.map((conversation) => (
              <li key={conversation.id}>
                <button
                  type="button"
                  class="secondary"
                  aria-current={conversation.id === state.currentId ? 'true' : undefined}
                  onClick={() => selectConversation(conversation.id)}
                >
                  {conversation.title}
                </button>
              </li>
            ))}
          </ul>
        )}
      </aside>
      <section class="chat-main" aria-labelledby="chat-title">
        <div class="chat-heading">
          <h1 id="chat-title">{current ? current.title : 'Chat'}</h1>
          {current ? (
            <button
              type="button"
              class="secondary"
              onClick={() => {
                abandon(current.turns.map((turn) => turn.answer));
                deleteConversation(current.id);
              }}
            >
              Delete conversation
            </button>
          ) : null}
        </div>
        {callerError ? <ErrorNotice error={callerError} title="Could not ask the gateway what this key may do" /> : null}
        {mode === 'stream' ? (
          <p class="notice">This key may chat but not submit jobs: answers stream directly and cannot be resumed after a reload.</p>
        ) : null}
        {mode === 'none' ? (
          <ErrorNotice error={new ApiError(403, 'PERMISSION_DENIED', 'This key has neither the chat nor the jobs scope, so it cannot chat.')} title="This key cannot chat" />
        ) : null}
        {/* RecordFeedback's scope is chat: a jobs-only key sees no thumbs it could not record. */}
        <ConversationLog conversation={current} canRecordFeedback={mayUse(caller, 'chat')} />
        <Composer
          disabled={mode === null || mode === 'none'}
          waiting={mode === null && !callerError}
          onSend={(message) => {
            if (mode !== 'job' && mode !== 'stream') return;
            const conversation = current ?? createConversation();
            const answer = newAnswer(mode);
            addTurn(conversation.id, { id: newId(), message, answer });
            start(answer, message, conversation.sessionId);
          }}
        />
      </section>
    </div>
  );
}

function ConversationLog({ conversation, canRecordFeedback }: { conversation: Conversation | null; canRecordFeedback: boolean }) {
  const end = useRef<HTMLDivElement>(null);
  // Follow a growing answer only while the reader is at the bottom: scrolling up to read stays put.
  const following = useRef(true);
  useEffect(() => {
    const onScroll = () => {
      following.current = window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 80;
    };
    window.addEventListener('scroll', onScroll, { passive: true });
    return () => window.removeEventListener('scroll', onScroll);
  }, []);
  const turns = conversation?.turns ?? [];
  const lastText = turns.at(-1)?.answer.text.length ?? 0;
  useEffect(() => {
    if (following.current) end.current?.scrollIntoView({ block: 'end' });
  }, [lastText]);
  useEffect(() => {
    // A new message or another conversation: back to following.
    following.current = true;
    end.current?.scrollIntoView({ block: 'end' });
  }, [conversation?.id, turns.length]);
  return (
    <div class="chat-log" role="log" aria-label="Conversation">
      {turns.length === 0 ? <p class="muted">Type a message below: the answer streams in here, with what served it underneath.</p> : null}
      {turns.map((turn) => (
        <TurnView key={turn.id} turn={turn} sessionId={conversation?.sessionId ?? ''} canRecordFeedback={canRecordFeedback} />
      ))}
      <div ref={end} />
    </div>
  );
}

const STATUS_LABEL: Record<Answer['status'], string> = {
  sending: 'Sending',
  streaming: 'Answering',
  succeeded: 'Done',
  failed: 'Failed',
  stopped: 'Stopped',
  interrupted: 'Interrupted',
};

function TurnView({ turn, sessionId, canRecordFeedback }: { turn: Turn; sessionId: string; canRecordFeedback: boolean }) {
  const answer = turn.answer;
  const live = answer.status === 'sending' || answer.status === 'streaming';
  const [stopError, setStopError] = useState<unknown>(null);
  return (
    <article class="chat-turn" aria-label={`Message: ${turn.message.slice(0, 80)}`}>
      <div class="chat-user">
        <h2 class="visually-hidden">You</h2>
        <p class="chat-user-text">{turn.message}</p>
      </div>
      <div class="chat-answer" data-status={answer.status} data-job-id={answer.jobId}>
        <h2 class="visually-hidden">Answer</h2>
        <div class="chat-answer-head">
          <span class={`badge ${answer.status === 'succeeded' ? 'ok' : answer.status === 'failed' || answer.status === 'interrupted' ? 'bad' : answer.status === 'stopped' ? 'warn' : ''}`}>
            {STATUS_LABEL[answer.status]}
          </span>
          {answer.jobId ? <span class="muted mono">job {answer.jobId}</span> : null}
        </div>
        <div class="chat-answer-body" aria-live="polite" aria-busy={live ? 'true' : 'false'}>
          {answer.text ? <Markdown class="chat-markdown" text={answer.text} /> : live ? <p class="muted">Waiting for the first words…</p> : null}
        </div>
        {live && answer.reconnecting ? (
          <p class="notice" role="status">
            Connection lost ({answer.reconnecting}): reconnecting, and resuming after the last part received…
          </p>
        ) : null}
        {answer.status === 'stopped' ? <p class="muted">Stopped: the text above is what had arrived.</p> : null}
        {answer.status === 'interrupted' ? (
          <p class="notice">This answer was streamed without a job (the key has no jobs scope), so it could not resume after the reload: regenerate it.</p>
        ) : null}
        {answer.mode === 'stream' && !live && answer.status !== 'interrupted' ? <p class="muted">Streamed directly (no job): an answer like this cannot resume after a reload.</p> : null}
        {answer.status === 'failed' && answer.error ? (
          <ErrorNotice error={answer.error.job ? new JobFailure(answer.error.code, answer.error.message) : new ApiError(0, answer.error.code, answer.error.message)} title="The answer failed" />
        ) : null}
        <ErrorNotice error={stopError} title="Could not stop the answer" />
        <div class="row chat-actions">
          {live ? (
            <button
              type="button"
              class="danger"
              disabled={answer.stopRequested}
              onClick={() => {
                setStopError(null);
                if (answer.mode === 'job') stopJobAnswer(answer.id).catch(setStopError);
                else stopStreamAnswer(answer.id);
              }}
            >
              {answer.stopRequested ? 'Stopping…' : 'Stop'}
            </button>
          ) : (
            <button
              type="button"
              class="secondary"
              onClick={() => {
                const next = newAnswer(answer.mode);
                replaceAnswer(turn.id, next);
                start(next, turn.message, sessionId);
              }}
            >
              Regenerate
            </button>
          )}
        </div>
        {answer.provenance && !live ? (
          <details class="chat-details" open>
            <summary>How this answer was made</summary>
            <ProvenanceDetails provenance={answer.provenance} />
          </details>
        ) : null}
        {canRecordFeedback && answer.jobId && (answer.status === 'succeeded' || answer.status === 'failed' || answer.status === 'stopped') ? <FeedbackControls key={answer.id} answer={answer} /> : null}
      </div>
    </article>
  );
}

function FeedbackControls({ answer }: { answer: Answer }) {
  const [score, setScore] = useState<0 | 1 | null>(answer.feedback?.score ?? null);
  const [comment, setComment] = useState(answer.feedback?.comment ?? '');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const recorded = answer.feedback?.recordedAt ? answer.feedback : null;
  const commentId = `feedback-comment-${answer.id}`;
  return (
    <form
      class="chat-feedback"
      aria-label="Feedback on this answer"
      onSubmit={(event) => {
        event.preventDefault();
        if (score === null || !answer.jobId) return;
        setBusy(true);
        setError(null);
        recordThumbs(answer.jobId, score, comment.trim())
          .then((feedback) => updateAnswer(answer.id, (current) => ({ ...current, feedback: { score, comment: feedback.comment ?? '', recordedAt: feedback.recordedAt ?? new Date().toISOString() } })))
          .catch(setError)
          .finally(() => setBusy(false));
      }}
    >
      <div class="row">
        <button type="button" class="secondary" aria-pressed={score === 1 ? 'true' : 'false'} onClick={() => setScore(1)}>
          Good answer
        </button>
        <button type="button" class="secondary" aria-pressed={score === 0 ? 'true' : 'false'} onClick={() => setScore(0)}>
          Bad answer
        </button>
      </div>
      {score !== null ? (
        <div class="row">
          <label for={commentId} class="chat-feedback-comment">
            Comment (optional)
            <input id={commentId} type="text" value={comment} maxLength={2000} onInput={(event) => setComment((event.target as HTMLInputElement).value)} />
          </label>
          <button type="submit" disabled={busy}>
            {busy ? 'Recording…' : 'Send feedback'}
          </button>
        </div>
      ) : null}
      <p class="muted" aria-live="polite">
        {recorded
          ? `Feedback recorded: ${recorded.score === 1 ? 'good' : 'bad'} answer${recorded.comment ? ` (“${recorded.comment}”)` : ''}, ${formatTime(recorded.recordedAt)}.`
          : busy
            ? 'Recording your feedback…'
            : ''}
      </p>
      <ErrorNotice error={error} title="Could not record the feedback" />
    </form>
  );
}

function Composer({ disabled, waiting, onSend }: { disabled: boolean; waiting: boolean; onSend(message: string): void }) {
  const [text, setText] = useState('');
  const send = () => {
    const message = text.trim();
    if (!message || disabled) return;
    onSend(message);
    setText('');
  };
  return (
    <form
      class="chat-composer"
      onSubmit={(event) => {
        event.preventDefault();
        send();
      }}
    >
      <label for="chat-message">Message</label>
      <textarea
        id="chat-message"
        rows={3}
        value={text}
        aria-describedby="chat-message-hint"
        onInput={(event) => setText((event.target as HTMLTextAreaElement).value)}
        onKeyDown={(event) => {
          // Enter sends; Shift+Enter is a new line (and Enter while composing text in an IME is the IME's).
          if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
            event.preventDefault();
            send();
          }
        }}
      />
      <div class="row chat-composer-row">
        <span id="chat-message-hint" class="hint">
          {waiting ? 'Asking the gateway what this key may do…' : 'Enter sends, Shift+Enter starts a new line.'}
        </span>
        <button type="submit" disabled={disabled || text.trim() === ''}>
          Send
        </button>
      </div>
    </form>
  );
}
