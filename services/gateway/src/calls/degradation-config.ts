import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { boolFlag, durationMs } from '@elexirion/kit';

/** GATEWAY_ROUTES_FILE's value for no route table: only chats naming their pipeline can bypass the agent. */
export const NO_GATEWAY_ROUTE_TABLE = 'none';

// The agent's default: the gateway reads the same routes.yaml (the same ConfigMap in Kubernetes).
const defaultRoutesFile = fileURLToPath(new URL('../../../../pipelines/routes.yaml', import.meta.url));

// Settings of this area, spread into the gateway's config schema.
export const degradationConfigShape = {
  /** When the agent is unavailable, Chat runs the routed pipeline on the executor itself (marked degraded). */
  GATEWAY_AGENT_BYPASS: boolFlag().default(true),
  /**
   * After the agent was found unreachable, chats go straight to the bypass for this long (no
   * connection attempt per chat); the first chat after it tries the agent again.
   */
  GATEWAY_AGENT_DOWN_WINDOW_MS: durationMs().min(100, 'expected at least 100 ms').default(5_000),
  /** The gateway's copy of the route table (the agent's routes.yaml), reloaded live; "none": no copy. */
  GATEWAY_ROUTES_FILE: z.string().default(defaultRoutesFile),
  GATEWAY_ROUTES_POLL_MS: durationMs().min(100, 'expected at least 100 ms').default(5_000),
} satisfies z.ZodRawShape;
