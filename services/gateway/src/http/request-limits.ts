import type { HttpServerOptions } from '@elexirion/kit';
import type { GatewayConfig } from '../gateway-config.js';
import type { GatewayMethodName } from '../method-options.js';

type LimitSetting = 'GATEWAY_MAX_CHAT_REQUEST_BYTES' | 'GATEWAY_MAX_PIPELINE_REQUEST_BYTES' | 'GATEWAY_MAX_COMPLETE_REQUEST_BYTES';

// The calls that carry text of their own; every other call (ids, filters, key settings) gets
// GATEWAY_MAX_REQUEST_BYTES, so a call added later is small until it says otherwise.
const LIMIT_OF: Partial<Record<GatewayMethodName, LimitSetting>> = {
  chat: 'GATEWAY_MAX_CHAT_REQUEST_BYTES',
  chatStream: 'GATEWAY_MAX_CHAT_REQUEST_BYTES',
  executePipeline: 'GATEWAY_MAX_PIPELINE_REQUEST_BYTES',
  executePipelineStream: 'GATEWAY_MAX_PIPELINE_REQUEST_BYTES',
  validatePipeline: 'GATEWAY_MAX_PIPELINE_REQUEST_BYTES',
  getPipeline: 'GATEWAY_MAX_PIPELINE_REQUEST_BYTES',
  submitJob: 'GATEWAY_MAX_PIPELINE_REQUEST_BYTES',
  // A prompt version: templates up to 64 KiB each and demos up to 256 KiB (the executor's bounds).
  publishPromptVersion: 'GATEWAY_MAX_PIPELINE_REQUEST_BYTES',
  complete: 'GATEWAY_MAX_COMPLETE_REQUEST_BYTES',
  completeStream: 'GATEWAY_MAX_COMPLETE_REQUEST_BYTES',
};

/** The largest request a Gateway call accepts, in bytes (protobuf on gRPC, JSON on HTTP). */
export function maxRequestBytes(config: GatewayConfig, key: string): number {
  const setting = LIMIT_OF[key as GatewayMethodName];
  return setting ? config[setting] : config.GATEWAY_MAX_REQUEST_BYTES;
}

/**
 * The gateway's part of its process's servers: each call's request limit (gRPC checks it before
 * decoding, the REST mirror as each route's body limit), a body limit for the routes other
 * modules register (as large as the largest call's: the OpenAI-compatible and /api/agent bodies
 * carry the same messages), CORS and the access log.
 */
export function gatewayServerOptions(config: GatewayConfig): { maxRequestBytes: (key: string) => number; httpServer: HttpServerOptions } {
  const largest = Math.max(config.GATEWAY_MAX_REQUEST_BYTES, ...Object.values(LIMIT_OF).map((setting) => config[setting]));
  return {
    maxRequestBytes: (key) => maxRequestBytes(config, key),
    httpServer: { bodyLimit: largest, corsOrigins: config.GATEWAY_CORS_ORIGINS, accessLogLevel: config.GATEWAY_ACCESS_LOG_LEVEL },
  };
}
