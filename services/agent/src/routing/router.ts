import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { RouteFile, RouteTable, callOptions, durationMs, inputsFor, proto, type PipelineShape, type RuleMatch, type ServiceContext } from '@elexirion/kit';
import { RouteClassifier } from './classifier.js';
import { PipelineCatalog } from './pipeline-catalog.js';

/** AGENT_ROUTES_FILE's value for no route table. */
export const NO_ROUTE_TABLE = 'none';

/** How the agent's routes.yaml is named in its start-up errors and metrics. */
export const AGENT_ROUTE_FILE_NAMING = {
  setting: 'AGENT_ROUTES_FILE',
  missingHint: 'set AGENT_ROUTES_FILE=none to send every chat to AGENT_DEFAULT_PIPELINE instead',
  metricPrefix: 'elexirion_agent',
} as const;

const defaultRoutesFile = fileURLToPath(new URL('../../../../pipelines/routes.yaml', import.meta.url));

/** The agent's routing settings (spread into its config schema). */
export const routingConfigShape = {
  /** routes.yaml; "none": no route table, every chat goes to AGENT_DEFAULT_PIPELINE (an empty variable is unset, as every variable). */
  AGENT_ROUTES_FILE: z.string().default(defaultRoutesFile),
  AGENT_ROUTES_POLL_MS: durationMs().min(100, 'expected at least 100 ms').default(5_000),
  /** A provider model alias for the classifier route; empty: no classifier. */
  AGENT_CLASSIFIER_MODEL: z.string().default(''),
  AGENT_CLASSIFIER_THRESHOLD: z.coerce.number({ error: 'expected a number from 0 to 1' }).min(0, 'expected a number from 0 to 1').max(1, 'expected a number from 0 to 1').default(0.7),
  AGENT_CLASSIFIER_TIMEOUT_MS: durationMs().min(1).default(2_000),
  /** How often the executor's pipelines are listed again (route checks, the classifier's candidates). */
  AGENT_PIPELINES_REFRESH_MS: durationMs().min(1_000, 'expected at least 1000 ms').default(60_000),
};

const routingConfig = z.object({ ...routingConfigShape, AGENT_DEFAULT_PIPELINE: z.string() });
type RoutingConfig = z.infer<typeof routingConfig>;

/** A message's route: the pipeline, its inputs, and the decision as answers report it. */
export interface RouteChoice {
  pipeline: string;
  inputs: Record<string, string>;
  decision: proto.RouteDecision;
}

export type CallContextLike = Parameters<typeof callOptions>[0];

export interface Router {
  /**
   * Routes a message: an explicit pipeline wins; then the first rule that matches; then, when no
   * rule did and the classifier is on, the classifier above its threshold; else the default route.
   * `context` bounds the classifier's call (its deadline and cancellation).
   */
  route(message: string, options?: { pipeline?: string; context?: CallContextLike }): Promise<RouteChoice>;
  /** The table in use. */
  table(): RouteTable;
  close(): void;
}

function decision(pipeline: string, matchedBy: string, rule: string, reason: string, confidence = 0): proto.RouteDecision {
  return { pipeline, matchedBy, rule, confidence, reason };
}

function fromMatch(match: RuleMatch, confidence = 0): RouteChoice {
  const { route } = match;
  return { pipeline: route.pipeline, inputs: match.inputs, decision: decision(route.pipeline, match.matchedBy, route.name, match.reason, confidence) };
}

/**
 * The route of a message under `table`: an explicit pipeline wins; then the first rule that
 * matches; then, when no rule did and a classifier is given, its pick at or above `threshold`;
 * else the default route. Every answer says why.
 */
export async function decideRoute(
  table: RouteTable,
  message: string,
  options: { pipeline?: string; context?: CallContextLike; classifier?: RouteClassifier; threshold?: number },
): Promise<RouteChoice> {
  if (options.pipeline) {
    // A route to that pipeline says which input gets the message; else its "message" input.
    const route = table.routeTo(options.pipeline);
    return {
      pipeline: options.pipeline,
      inputs: route ? inputsFor(route, message) : { message },
      decision: decision(options.pipeline, 'explicit', '', 'the request named the pipeline'),
    };
  }
  const match = table.match(message);
  const { classifier, threshold = 0.7 } = options;
  if (match.matchedBy === 'rule' || !classifier) return fromMatch(match);
  const verdict = await classifier.classify(message, options.context);
  const fallback = table.defaultRoute.name;
  if ('failure' in verdict) return fromMatch(table.fallThrough(message, `${verdict.failure}: default route "${fallback}"`));
  const confidence = verdict.confidence;
  if (confidence < threshold) return fromMatch(table.fallThrough(message, `classifier ${confidence.toFixed(2)} below ${threshold}: default route "${fallback}"`), confidence);
  const route = table.routeTo(verdict.pipeline);
  // The candidates follow the table; a reload between the two may have dropped this pipeline.
  if (!route) return fromMatch(table.fallThrough(message, `classifier chose "${verdict.pipeline}", which the route table no longer has: default route "${fallback}"`), confidence);
  return {
    pipeline: route.pipeline,
    inputs: inputsFor(route, message),
    decision: decision(route.pipeline, 'classifier', '', `classifier ${confidence.toFixed(2)} at or above ${threshold}`, confidence),
  };
}

export function createRouter(context: ServiceContext<RoutingConfig>): Router {
  const { config, logger, clients, metrics } = context;
  const threshold = config.AGENT_CLASSIFIER_THRESHOLD;
  const classifier = config.AGENT_CLASSIFIER_MODEL
    ? new RouteClassifier(() => clients.get('provider'), { model: config.AGENT_CLASSIFIER_MODEL, timeoutMs: config.AGENT_CLASSIFIER_TIMEOUT_MS })
    : undefined;
  let catalog: PipelineCatalog | undefined;

  /** The classifier chooses among the pipelines the table routes to (their inputs are mapped), by their descriptions. */
  const updateCandidates = (table: RouteTable) => {
    const listed = catalog?.current;
    if (!classifier || !listed) return;
    const names = [...new Set(table.routes.map((route) => route.pipeline))];
    classifier.setCandidates(names.map((name) => listed.get(name)).filter((shape): shape is PipelineShape => shape?.valid === true));
  };

  const file = config.AGENT_ROUTES_FILE !== NO_ROUTE_TABLE
    ? new RouteFile(config.AGENT_ROUTES_FILE, {
        ...AGENT_ROUTE_FILE_NAMING,
        pollMs: config.AGENT_ROUTES_POLL_MS,
        debounceMs: 100,
        logger,
        registry: metrics.registry,
        pipelines: () => catalog?.current,
        onTable: updateCandidates,
      })
    : undefined;
  const fixed = file ? undefined : RouteTable.only(config.AGENT_DEFAULT_PIPELINE);
  if (fixed) logger.info({ pipeline: config.AGENT_DEFAULT_PIPELINE }, 'AGENT_ROUTES_FILE=none: no route table, every chat goes to AGENT_DEFAULT_PIPELINE');
  const table = () => file?.current ?? fixed!;

  if (file || classifier) {
    const executor = clients.get('executor');
    catalog = new PipelineCatalog(
      async (signal) =>
        (await executor.listPipelines({}, { signal })).pipelines.map((summary) => ({
          name: summary.name,
          description: summary.description,
          valid: summary.valid,
          inputs: summary.inputs.map((input) => ({ name: input.name, required: input.required })),
        })),
      {
        refreshMs: config.AGENT_PIPELINES_REFRESH_MS,
        logger,
        onChange: (shapes) => {
          file?.checkAgainst(shapes);
          updateCandidates(table());
        },
      },
    );
    catalog.start();
  }
  file?.start();
  if (classifier) logger.info({ model: config.AGENT_CLASSIFIER_MODEL, threshold, timeoutMs: config.AGENT_CLASSIFIER_TIMEOUT_MS }, 'classifier route on: asked when no rule matches');

  return {
    table,
    route: (message, options = {}) => decideRoute(table(), message, { ...options, ...(classifier ? { classifier, threshold } : {}) }),
    close() {
      file?.close();
      catalog?.close();
    },
  };
}
