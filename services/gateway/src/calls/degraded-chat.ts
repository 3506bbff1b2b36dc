import { createChannel, createClient, type Channel } from 'nice-grpc';
import { HealthDefinition } from 'nice-grpc-server-health';
import {
  RouteFile,
  callOptions,
  inputsFor,
  isServiceUnreachable,
  proto,
  type RuleMatch,
} from '@elexirion/kit';
import { NO_GATEWAY_ROUTE_TABLE } from './degradation-config.js';
import type { GatewayDeps } from './gateway-deps.js';

type CallContextLike = Parameters<typeof callOptions>[0];

/**
 * What the bypass answers: the agent's answer shape, marked degraded, with the executor's run id
 * (there is no job) for the request event.
 */
export type DegradedAnswer = Omit<proto.ChatResponse, 'executionTimeMs'> & { runId?: string };

const AGENT_HEALTH_SERVICE = 'elexirion.v1.Agent';
/** grpc.health.v1 HealthCheckResponse.ServingStatus.SERVING (the enum is not exported by the package's entry). */
const SERVING = 1;

/**
 * The gateway's way around an agent that cannot be reached: Chat runs the routed pipeline on the
 * executor itself, with the gateway's copy of routes.yaml (the kit's RouteTable, the code the
 * agent routes by, without its classifier). No job record and no emergent fallback: those are the
 * agent's. Once the agent was found unreachable, chats go straight to the bypass for a window
 * (no connection attempt per chat); while the agent is down, its gRPC health is asked once a
 * window, so `/readyz` turns back to serving when it returns even without chats.
 */
export class AgentBypass {
  /** On (GATEWAY_AGENT_BYPASS) and the agent in another process. */
  readonly enabled: boolean;
  private readonly file: RouteFile | undefined;
  /** When the agent was last found unreachable; undefined while it is not known to be down. */
  private downAt: number | undefined;
  private cause = '';
  private probe: NodeJS.Timeout | undefined;
  private healthChannel: Channel | undefined;

  constructor(
    private readonly deps: GatewayDeps,
    /** The health monitor's bypass_agent action (recovery-actions.ts): skip the agent while it is in force. */
    private readonly recovery?: { readonly bypassAgent: boolean },
  ) {
    const { config, clients, logger, metrics } = deps.context;
    // An agent hosted in this process cannot be unreachable: nothing to bypass.
    this.enabled = config.GATEWAY_AGENT_BYPASS && !clients.isLocal('agent');
    if (this.enabled && config.GATEWAY_ROUTES_FILE !== NO_GATEWAY_ROUTE_TABLE) {
      this.file = new RouteFile(config.GATEWAY_ROUTES_FILE, {
        setting: 'GATEWAY_ROUTES_FILE',
        missingHint: 'point it at the agent\'s routes.yaml, set GATEWAY_ROUTES_FILE=none (only chats naming a pipeline bypass a down agent) or GATEWAY_AGENT_BYPASS=false',
        metricPrefix: 'elexirion_gateway',
        pollMs: config.GATEWAY_ROUTES_POLL_MS,
        debounceMs: 100,
        logger,
        registry: metrics.registry,
        // The executor's pipelines are the agent's to check the table against; the gateway trusts the file the agent accepted.
        pipelines: () => undefined,
        onTable: () => {},
      });
      this.file.start();
    }
  }

  /** True while the agent is known to be down and its window has not run out: skip it. */
  get skipAgent(): boolean {
    if (this.enabled && this.recovery?.bypassAgent) return true;
    return this.enabled && this.downAt !== undefined && performance.now() - this.downAt < this.deps.context.config.GATEWAY_AGENT_DOWN_WINDOW_MS;
  }

  /** Why the gateway serves degraded, for `/readyz`; undefined while the agent is not known to be down. */
  degradation(): string | undefined {
    if (this.downAt === undefined && this.enabled && this.recovery?.bypassAgent) return 'agent bypassed: the health monitor\'s bypass_agent action is in force';
    return this.downAt === undefined ? undefined : this.cause;
  }

  /** Whether `error` says the agent cannot be reached (with the bypass on); remembers it when so. */
  agentFailed(error: unknown): boolean {
    if (!this.enabled || !isServiceUnreachable(error)) return false;
    const first = this.downAt === undefined;
    this.downAt = performance.now();
    if (first) {
      this.cause = `agent unavailable since ${new Date().toISOString()}: Chat runs pipelines on the executor with the gateway's route table`;
      this.deps.context.logger.warn({ windowMs: this.deps.context.config.GATEWAY_AGENT_DOWN_WINDOW_MS }, 'agent unavailable: serving chats degraded, through the executor with the gateway\'s route table');
      this.startProbe();
    }
    return true;
  }

  /** The agent answered: back to normal. */
  agentAnswered(): void {
    if (this.downAt === undefined) return;
    this.downAt = undefined;
    this.cause = '';
    this.stopProbe();
    this.deps.context.logger.info('agent available again: chats go through it');
  }

  /** Whether the bypass can route this chat: it names its pipeline, or the gateway has a route table. */
  canServe(request: { pipeline: string }): boolean {
    return this.enabled && (request.pipeline !== '' || this.file !== undefined);
  }

  /** Routes `message` with the gateway's table and runs the pipeline on the executor. */
  async chat(request: { message: string; sessionId: string; pipeline: string }, callContext: CallContextLike): Promise<DegradedAnswer> {
    const { pipeline, inputs, route } = this.route(request.message, request.pipeline);
    const result = await this.deps.executor.execute({ pipeline, inputs, sessionKey: request.sessionId }, callOptions(callContext));
    return {
      response: result.output,
      pipelineUsed: result.pipeline,
      fallbackUsed: result.steps.some((step) => step.fallbackUsed),
      // No job: the run is the executor's alone (its run id is in the executor's telemetry).
      jobId: '',
      runId: result.runId,
      usage: result.usage,
      route,
      fallback: undefined,
      degraded: true,
      steps: result.steps,
    };
  }

  close(): void {
    this.file?.close();
    this.stopProbe();
  }

  private route(message: string, explicit: string): { pipeline: string; inputs: Record<string, string>; route: proto.RouteDecision } {
    const table = this.file?.current;
    const source = table ? `the gateway's route table ${table.revision}, agent unavailable` : 'the gateway, agent unavailable';
    if (explicit) {
      const route = table?.routeTo(explicit);
      return {
        pipeline: explicit,
        inputs: route ? inputsFor(route, message) : { message },
        route: { pipeline: explicit, matchedBy: 'explicit', rule: '', confidence: 0, reason: `the request named the pipeline (${source})` },
      };
    }
    if (!table) throw new Error('no route table: canServe() is checked first');
    const match: RuleMatch = table.match(message);
    return {
      pipeline: match.route.pipeline,
      inputs: match.inputs,
      route: { pipeline: match.route.pipeline, matchedBy: match.matchedBy, rule: match.route.name, confidence: 0, reason: `${match.reason} (${source})` },
    };
  }

  /** While the agent is down: its gRPC health, once a window, so recovery shows without chats. */
  private startProbe(): void {
    const { config, host } = this.deps.context;
    this.healthChannel ??= createChannel(host.addresses.agent);
    const health = createClient(HealthDefinition, this.healthChannel);
    const every = config.GATEWAY_AGENT_DOWN_WINDOW_MS;
    this.probe = setInterval(() => {
      void health
        .check({ service: AGENT_HEALTH_SERVICE }, { signal: AbortSignal.timeout(Math.min(every, 2_000)) })
        .then((answer) => {
          if (answer.status === SERVING) this.agentAnswered();
        })
        .catch(() => {
          // still down: the next probe, or a chat after the window, asks again
        });
    }, every);
    this.probe.unref();
  }

  private stopProbe(): void {
    clearInterval(this.probe);
    this.probe = undefined;
    this.healthChannel?.close();
    this.healthChannel = undefined;
  }
}
