import * as proto from '@elexirion/kit/proto';
import { readFileSync } from 'node:fs';
import { UsageError } from './args.js';

// Small human formats shared by the commands. (--json never goes through these.)

/** US dollars to the micro-dollar, without float noise or trailing zeros: "$0.00042", "$1.5", "$0". */
export function formatCost(usd: number): string {
  return `$${Number(usd.toFixed(6))}`;
}

export function formatUsage(usage: proto.Usage | undefined): string {
  if (!usage) return 'no usage reported';
  return `${usage.inputTokens} in / ${usage.outputTokens} out tokens · ${formatCost(usage.costUsd)}`;
}

export function formatMs(ms: number): string {
  return ms < 1000 ? `${ms}ms` : `${(ms / 1000).toFixed(1)}s`;
}

export function formatTime(time: Date | undefined): string {
  return time ? time.toISOString().replace(/\.\d{3}Z$/, 'Z') : '-';
}

export function formatRoute(route: proto.RouteDecision): string {
  const how = [route.matchedBy, route.rule && `rule "${route.rule}"`, route.confidence ? `confidence ${route.confidence.toFixed(2)}` : ''].filter(Boolean).join(', ');
  return `${route.pipeline} (${how}${route.reason ? `: ${route.reason}` : ''})`;
}

/** "JOB_STATUS_SUCCEEDED" -> "succeeded". */
export function statusName(status: proto.JobStatus): string {
  return proto.jobStatusToJSON(status).replace(/^JOB_STATUS_/, '').toLowerCase();
}

const JOB_STATUS_NAMES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;

/** "failed" (or "JOB_STATUS_FAILED") -> the enum; UsageError naming the choices otherwise. */
export function parseJobStatus(text: string): proto.JobStatus {
  const name = text.trim().toLowerCase().replace(/^job_status_/, '');
  if (!(JOB_STATUS_NAMES as readonly string[]).includes(name)) throw new UsageError(`--status: "${text}" is not one of ${JOB_STATUS_NAMES.join(', ')}`);
  return proto.jobStatusFromJSON(`JOB_STATUS_${name.toUpperCase()}`);
}

/** The whole of stdin, for arguments given as "-". */
export function readStdin(): string {
  try {
    return readFileSync(0, 'utf8');
  } catch (error) {
    throw new UsageError(`cannot read stdin: ${(error as Error).message}`);
  }
}

/** A positional text argument: "-" reads stdin; several words are one text. */
export function textArgument(words: string[], what: string): string {
  const text = words.length === 1 && words[0] === '-' ? readStdin().replace(/\n$/, '') : words.join(' ');
  if (!text.trim()) throw new UsageError(`${what} is empty`);
  return text;
}
