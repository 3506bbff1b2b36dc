import * as proto from '@elexirion/kit/proto';
import { parseAmount, parseInteger, parseTime, UsageError, type CommandSpec } from '../args.js';
import type { Context } from '../context.js';
import { ExitCode } from '../exit-codes.js';
import { formatCost, formatTime } from '../format.js';

export const keysCreateSpec: CommandSpec = {
  path: ['keys', 'create'],
  brief: 'create an API key; prints its secret once',
  usage: 'NAME --scope SCOPE... [--expires TIME] [--rpm N] [--tpm N] [--daily-budget USD] [--monthly-budget USD]',
  summary: 'Creates an API key (CreateKey; needs an admin key) and prints its secret on stdout: this is the only time it is shown.',
  options: {
    scope: { type: 'string', short: 's', multiple: true, commaList: true, value: 'SCOPE', description: 'chat, jobs, pipelines, models, telemetry, prompts:write or admin' },
    expires: { type: 'string', value: 'TIME', description: 'expiry: ISO 8601, or a duration from now (30d)' },
    rpm: { type: 'string', value: 'N', description: 'requests per minute (0: no limit)' },
    tpm: { type: 'string', value: 'N', description: 'input plus output tokens per minute (0: no limit)' },
    'daily-budget': { type: 'string', value: 'USD', description: 'spend per UTC day (0: no limit)' },
    'monthly-budget': { type: 'string', value: 'USD', description: 'spend per UTC month (0: no limit)' },
  },
  positionals: { min: 1, max: 1, names: 'NAME' },
  details: 'Output: the secret alone on stdout (KEY=$(elexirion keys create ci --scope chat)), the key\'s id and scopes on stderr; --json: the CreateKeyResponse, secret included.',
};

export async function keysCreate(ctx: Context): Promise<number> {
  const scopes = (ctx.values.scope as string[] | undefined) ?? [];
  if (!scopes.length) throw new UsageError('--scope: give at least one scope');
  const request: proto.CreateKeyRequest = {
    name: ctx.positionals[0]!,
    scopes,
    expiresAt: ctx.values.expires ? parseTime(String(ctx.values.expires), '--expires', true) : undefined,
    limits: {
      requestsPerMinute: ctx.values.rpm ? parseInteger(String(ctx.values.rpm), '--rpm') : 0,
      tokensPerMinute: ctx.values.tpm ? parseInteger(String(ctx.values.tpm), '--tpm') : 0,
      dailyBudgetUsd: ctx.values['daily-budget'] ? parseAmount(String(ctx.values['daily-budget']), '--daily-budget') : 0,
      monthlyBudgetUsd: ctx.values['monthly-budget'] ? parseAmount(String(ctx.values['monthly-budget']), '--monthly-budget') : 0,
    },
  };
  const answer = await ctx.gateway.createKey(request, ctx.unary());
  if (ctx.output.json) ctx.output.document(proto.CreateKeyResponse.toJSON(answer));
  else {
    ctx.output.line(answer.secret);
    const key = answer.key!;
    ctx.output.note(`key ${key.keyId} (${key.name}) created with scopes ${key.scopes.join(', ')}${key.expiresAt ? `, expiring ${formatTime(key.expiresAt)}` : ''}; its secret is shown only now`);
  }
  return ExitCode.OK;
}

export const keysListSpec: CommandSpec = {
  path: ['keys', 'list'],
  brief: 'list API keys with their limits and use',
  usage: '[--all]',
  summary: 'Lists API keys (ListKeys; needs an admin key) with their limits and use in the current windows; never their secrets.',
  options: { all: { type: 'boolean', short: 'a', description: 'revoked and expired keys too' } },
  positionals: { min: 0, max: 0, names: '' },
  details: '--json: the ListKeysResponse.',
};

function keyState(key: proto.ApiKey): string {
  if (key.revokedAt) return `revoked ${formatTime(key.revokedAt)}`;
  if (key.expiresAt && key.expiresAt.getTime() <= Date.now()) return `expired ${formatTime(key.expiresAt)}`;
  return key.expiresAt ? `active until ${formatTime(key.expiresAt)}` : 'active';
}

/** "3/60 req/min" or "3 req/min" without a limit. */
function used(value: number, limit: number | undefined, unit: string): string {
  return limit ? `${value}/${limit} ${unit}` : `${value} ${unit}`;
}

export async function keysList(ctx: Context): Promise<number> {
  const answer = await ctx.gateway.listKeys({ includeInactive: Boolean(ctx.values.all) }, ctx.unary());
  if (ctx.output.json) {
    ctx.output.document(proto.ListKeysResponse.toJSON(answer));
    return ExitCode.OK;
  }
  if (!answer.keys.length) {
    ctx.output.note('no keys');
    return ExitCode.OK;
  }
  ctx.output.table([
    ['KEY', 'NAME', 'SCOPES', 'STATE', 'CREATED', 'USE'],
    ...answer.keys.map((key) => {
      const usage = key.usage;
      const limits = key.limits;
      const use = usage
        ? [
            used(usage.requestsThisMinute, limits?.requestsPerMinute, 'req/min'),
            used(usage.tokensThisMinute, limits?.tokensPerMinute, 'tok/min'),
            `${formatCost(usage.spentTodayUsd)}${limits?.dailyBudgetUsd ? `/${formatCost(limits.dailyBudgetUsd)}` : ''} today`,
            `${formatCost(usage.spentThisMonthUsd)}${limits?.monthlyBudgetUsd ? `/${formatCost(limits.monthlyBudgetUsd)}` : ''} month`,
          ].join(', ')
        : '-';
      return [key.keyId, key.name, key.scopes.join(','), keyState(key), formatTime(key.createdAt), use];
    }),
  ]);
  return ExitCode.OK;
}

export const keysRevokeSpec: CommandSpec = {
  path: ['keys', 'revoke'],
  brief: 'revoke an API key on every replica',
  usage: 'KEY_ID',
  summary: 'Revokes an API key at once on every gateway replica (RevokeKey; needs an admin key); it stays listed as revoked.',
  options: {},
  positionals: { min: 1, max: 1, names: 'KEY_ID' },
  details: '--json: the RevokeKeyResponse.',
};

export async function keysRevoke(ctx: Context): Promise<number> {
  const answer = await ctx.gateway.revokeKey({ keyId: ctx.positionals[0]! }, ctx.unary());
  if (ctx.output.json) ctx.output.document(proto.RevokeKeyResponse.toJSON(answer));
  else ctx.output.line(`key ${answer.key?.keyId} (${answer.key?.name}) revoked at ${formatTime(answer.key?.revokedAt)}`);
  return ExitCode.OK;
}
