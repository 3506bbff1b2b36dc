import * as proto from '@elexirion/kit/proto';
import type { CommandSpec } from '../args.js';
import type { Context } from '../context.js';
import { ExitCode } from '../exit-codes.js';

export const modelsSpec: CommandSpec = {
  path: ['models'],
  brief: "model aliases, their fallback chains, providers' health",
  usage: '',
  summary: "Lists the model aliases (ListModels): each alias's fallback chain and presets, then the providers' health.",
  options: {},
  positionals: { min: 0, max: 0, names: '' },
  details: '--json: the ListModelsResponse.',
};

/** A URL without its user and password (a proxy's URL may carry them). */
function withoutCredentials(text: string): string {
  try {
    const url = new URL(text);
    if (!url.username && !url.password) return text;
    url.username = '';
    url.password = '';
    return url.toString();
  } catch {
    return text.replace(/\/\/[^/@]*@/, '//');
  }
}

export async function models(ctx: Context): Promise<number> {
  const answer = await ctx.gateway.listModels({}, ctx.unary());
  if (ctx.output.json) {
    ctx.output.document(proto.ListModelsResponse.toJSON(answer));
    return ExitCode.OK;
  }
  const { output } = ctx;
  output.table([['ALIAS', 'TARGETS', 'PRESETS'], ...answer.aliases.map((alias) => [alias.name, alias.targets.join(' > ') || '-', alias.presets.join(',') || '-'])]);
  if (answer.providers.length) {
    output.line();
    output.table([
      ['PROVIDER', 'CONFIGURED', 'BREAKER', 'FAILURES', 'IN FLIGHT', 'QUEUED', 'BASE URL'],
      ...answer.providers.map((provider) => [
        provider.name,
        provider.configured ? 'yes' : 'no',
        provider.breakerState || '-',
        `${(provider.failureRate * 100).toFixed(0)}%`,
        String(provider.inFlight),
        String(provider.queued),
        provider.baseUrl ? withoutCredentials(provider.baseUrl) : '-',
      ]),
    ]);
  }
  if (answer.offline) output.note('offline: no vendor is configured, the mock serves every alias');
  return ExitCode.OK;
}
