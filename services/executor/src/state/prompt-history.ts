/**
 * The prompt registry's history: a stream that sources the KV bucket's own stream and keeps every
 * message (no per-subject limit), so each revision of an entry, carrying the change that wrote it,
 * stays readable after the bucket has dropped it. There is no second write that could be lost: a
 * change is in the history exactly when it is in the bucket (the copy lags by milliseconds).
 *
 * The stream allows rollup headers: a KV purge carries one, and a sourcing stream that refuses it
 * stalls for good (nats-server 2.9 retries the same message forever). A purge therefore clears
 * that key's history too, which is what purging means; the registry itself only deletes.
 */
import { jetstream, jetstreamManager, type StreamConfig } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { ServerError, Status, type KvViewLogger } from '@elexirion/kit';
import { changeOnlySchema, type PromptChangeRecord } from './prompt-entry.js';

/** Creates the history stream, or brings an existing one to the settings it needs. */
export async function ensureHistoryStream(connection: NatsConnection, stream: string, bucket: string, logger: KvViewLogger): Promise<void> {
  const jsm = await jetstreamManager(connection);
  const wanted: Partial<StreamConfig> & { name: string } = {
    name: stream,
    description: `Every revision of KV bucket ${bucket}: the prompt registry's history`,
    sources: [{ name: `KV_${bucket}` }],
    max_msgs_per_subject: -1,
    max_msgs: -1,
    max_bytes: -1,
    max_age: 0,
    allow_rollup_hdrs: true,
  };
  try {
    const info = await jsm.streams.info(stream);
    const config = info.config;
    const sourced = config.sources?.length === 1 && config.sources[0]!.name === `KV_${bucket}`;
    if (!sourced || config.allow_rollup_hdrs !== true || (config.max_msgs_per_subject ?? -1) > 0 || (config.max_msgs ?? -1) > 0 || (config.max_age ?? 0) > 0) {
      await jsm.streams.update(stream, { ...config, ...wanted, sources: sourced ? config.sources : wanted.sources });
      logger.info({ stream, bucket }, 'prompt history stream updated');
    }
  } catch (error) {
    if (!isStreamNotFound(error)) throw error;
    await jsm.streams.add(wanted);
    logger.info({ stream, bucket }, 'prompt history stream created');
  }
}

function isStreamNotFound(error: unknown): boolean {
  const code = (error as { code?: unknown; api_error?: { err_code?: number } })?.api_error?.err_code;
  return code === 10059 || (error instanceof Error && /stream not found/i.test(error.message));
}

/** One change as the history holds it, with the KV revision it wrote and its place in the history stream. */
export interface HistoryItem {
  pipeline: string;
  step: string;
  change: PromptChangeRecord;
  revision: number;
  sequence: number;
}

export interface HistoryPage {
  items: HistoryItem[];
  /** The sequence to pass back for the next (older) page; undefined when there is none. */
  nextBefore: number | undefined;
}

const decoder = new TextDecoder();
/** How long one history read may take before it is answered as unavailable. */
const READ_TIMEOUT_MS = 10_000;

/**
 * Changes of one step (or every step of a pipeline), newest first: at most `pageSize` of those
 * with a history sequence below `before` (all when undefined). Reads the matching part of the
 * stream in order (server-side filtered) and keeps the newest ones.
 */
export async function readHistory(connection: NatsConnection, options: { stream: string; bucket: string; pipeline: string; step: string; pageSize: number; before: number | undefined }): Promise<HistoryPage> {
  const { stream, bucket, pipeline, step, pageSize, before } = options;
  const subject = `$KV.${bucket}.${pipeline}.${step || '*'}`;
  const jsm = await jetstreamManager(connection);
  let total: number;
  try {
    const info = await jsm.streams.info(stream, { subjects_filter: subject });
    total = Object.values(info.state.subjects ?? {}).reduce((sum, count) => sum + count, 0);
  } catch (error) {
    if (isStreamNotFound(error)) return { items: [], nextBefore: undefined };
    throw error;
  }
  if (total === 0) return { items: [], nextBefore: undefined };
  // The newest pageSize + 1 before `before`: one more than the page tells whether another page follows.
  const kept: HistoryItem[] = [];
  const consumer = await jetstream(connection).consumers.get(stream, { filter_subjects: subject });
  const deadline = Date.now() + READ_TIMEOUT_MS;
  let seen = 0;
  try {
    reading: while (seen < total) {
      if (Date.now() > deadline) throw new ServerError(Status.UNAVAILABLE, `the prompt history did not answer within ${READ_TIMEOUT_MS} ms; try again`);
      const batch = await consumer.fetch({ max_messages: 500, expires: 2_000 });
      let got = 0;
      for await (const message of batch) {
        got++;
        seen++;
        if (before !== undefined && message.seq >= before) break reading;
        const item = historyItem(message.data, message.headers?.get('Nats-Stream-Source') ?? '', message.headers?.get('KV-Operation') ?? '', message.seq);
        if (item) {
          kept.push(item);
          if (kept.length > pageSize + 1) kept.shift();
        }
        if (message.info.pending === 0) break reading;
      }
      if (got === 0) break;
    }
  } finally {
    await consumer.delete().catch(() => undefined);
  }
  kept.reverse();
  const more = kept.length > pageSize;
  const items = more ? kept.slice(0, pageSize) : kept;
  return { items, nextBefore: more ? items[items.length - 1]!.sequence : undefined };
}

/** A history message as a change; undefined for a delete marker or an entry without a change (written before issue 15, or by `publish`). */
function historyItem(data: Uint8Array, sourceHeader: string, operation: string, sequence: number): HistoryItem | undefined {
  if (operation === 'DEL' || operation === 'PURGE' || data.length === 0) return undefined;
  let parsed;
  try {
    parsed = changeOnlySchema.safeParse(JSON.parse(decoder.decode(data)));
  } catch {
    return undefined;
  }
  if (!parsed.success || !parsed.data.lastChange) return undefined;
  return { pipeline: parsed.data.pipeline, step: parsed.data.step, change: parsed.data.lastChange, revision: sourceSequence(sourceHeader), sequence };
}

/**
 * The KV revision of a sourced message: nats-server puts the origin's sequence in the
 * Nats-Stream-Source header ("KV_bucket 12 > >" on 2.9; "KV_bucket:hash 12 ..." later).
 */
function sourceSequence(header: string): number {
  const parts = header.trim().split(/\s+/);
  const sequence = Number(parts[1]);
  return Number.isSafeInteger(sequence) ? sequence : 0;
}
