// The conversations, kept in localStorage so that a reload (or a crash) loses nothing: each answer
// keeps its job id, its idempotency key and the last event sequence it applied, which is all the
// page needs to resume the job's stream where it left off.
import { useEffect, useState } from 'preact/hooks';
import type { Job, RouteDecision, StepResult, Usage, EmergentFallback } from './chat-types.js';

const STORAGE_KEY = 'elexirion.chat.v1';

export type AnswerStatus = 'sending' | 'streaming' | 'succeeded' | 'failed' | 'stopped' | 'interrupted';

export interface FeedbackState {
  score: 0 | 1;
  comment: string;
  recordedAt?: string;
}

/** What served an answer, from the finished job (or the chat stream's `done`). */
export interface Provenance {
  pipeline?: string;
  route?: RouteDecision;
  steps?: StepResult[];
  usage?: Usage;
  fallbackUsed?: boolean;
  fallback?: EmergentFallback;
  /** Time to first token and total, in milliseconds. */
  firstTokenMs?: number;
  totalMs?: number;
}

export interface Answer {
  id: string;
  /** "job": a durable job, resumable after a reload; "stream": ChatStream (a key without `jobs`). */
  mode: 'job' | 'stream';
  /** One per answer: a resend after a reload returns the same job instead of running it twice. */
  idempotencyKey: string;
  jobId?: string;
  /** The sequence of the last job event applied to `text` (the resume point). */
  lastSequence?: string;
  status: AnswerStatus;
  text: string;
  /** The step whose deltas `text` holds: a later step's text replaces an earlier one's. */
  textStep?: string;
  /** The job's createdAt (job mode) or the send time (stream mode), and the first delta's time. */
  startedAt?: string;
  firstTokenAt?: string;
  provenance?: Provenance;
  /** Why it failed: the job's error (job true), or a refused or failed call (submit, stream). */
  error?: { code: string; message: string; job?: boolean };
  feedback?: FeedbackState;
  /** Stop was pressed and the cancel is under way (or waits for the job's id). */
  stopRequested?: boolean;
  /** Why the job's stream is being reconnected, while it is. */
  reconnecting?: string;
}

export interface Turn {
  id: string;
  message: string;
  answer: Answer;
}

export interface Conversation {
  id: string;
  title: string;
  /** One per conversation: sticky prompt-version selection (the same A/B arm throughout). */
  sessionId: string;
  turns: Turn[];
  updatedAt: string;
}

export interface ChatState {
  conversations: Conversation[];
  currentId: string | null;
}

function load(): ChatState {
  try {
    const raw = localStorage.getItem(STORAGE_KEY);
    if (raw) {
      const parsed = JSON.parse(raw) as ChatState;
      if (Array.isArray(parsed.conversations)) return parsed;
    }
  } catch {
    // A damaged entry (edited by hand, another version): start afresh rather than not at all.
  }
  return { conversations: [], currentId: null };
}

let state: ChatState = load();
const listeners = new Set<(state: ChatState) => void>();

export function chatState(): ChatState {
  return state;
}

function commit(next: ChatState): void {
  state = next;
  localStorage.setItem(STORAGE_KEY, JSON.stringify(state));
  for (const listener of listeners) listener(state);
}

export function useChatState(): ChatState {
  const [current, setCurrent] = useState(state);
  useEffect(() => {
    listeners.add(setCurrent);
    setCurrent(state);
    return () => {
      listeners.delete(setCurrent);
    };
  }, []);
  return current;
}

export function newId(): string {
  return crypto.randomUUID();
}

export function createConversation(): Conversation {
  const conversation: Conversation = { id: newId(), title: 'New conversation', sessionId: newId(), turns: [], updatedAt: new Date().toISOString() };
  commit({ conversations: [conversation, ...state.conversations], currentId: conversation.id });
  return conversation;
}

export function selectConversation(id: string): void {
  commit({ ...state, currentId: id });
}

export function deleteConversation(id: string): void {
  const conversations = state.conversations.filter((conversation) => conversation.id !== id);
  commit({ conversations, currentId: state.currentId === id ? (conversations[0]?.id ?? null) : state.currentId });
}

export function addTurn(conversationId: string, turn: Turn): void {
  commit({
    ...state,
    conversations: state.conversations.map((conversation) =>
      conversation.id === conversationId
        ? {
            ...conversation,
            // The first message names the conversation in the list.
            title: conversation.turns.length === 0 ? turn.message.slice(0, 60) : conversation.title,
            turns: [...conversation.turns, turn],
            updatedAt: new Date().toISOString(),
          }
        : conversation,
    ),
  });
}

/** Changes one answer (found by its id in any conversation); a no-op when it was deleted. */
export function updateAnswer(answerId: string, change: (answer: Answer) => Answer): void {
  let changed = false;
  const conversations = state.conversations.map((conversation) => {
    if (!conversation.turns.some((turn) => turn.answer.id === answerId)) return conversation;
    changed = true;
    return { ...conversation, turns: conversation.turns.map((turn) => (turn.answer.id === answerId ? { ...turn, answer: change(turn.answer) } : turn)) };
  });
  if (changed) commit({ ...state, conversations });
}

/** Replaces a turn's answer with a new one (regenerate). */
export function replaceAnswer(turnId: string, answer: Answer): void {
  commit({
    ...state,
    conversations: state.conversations.map((conversation) => ({
      ...conversation,
      turns: conversation.turns.map((turn) => (turn.id === turnId ? { ...turn, answer } : turn)),
    })),
  });
}

export function findAnswer(answerId: string): { conversation: Conversation; turn: Turn } | undefined {
  for (const conversation of state.conversations) {
    const turn = conversation.turns.find((candidate) => candidate.answer.id === answerId);
    if (turn) return { conversation, turn };
  }
  return undefined;
}
