// The service kit: everything the services share. It never imports a service.
export * from './host/catalog.js';
export * from './host/config.js';
export * from './host/host.js';
export * from './host/http.js';
export * from './host/shared-nats-connection.js';
export * from './reliability/concurrency-limiter.js';
export * from './reliability/retry.js';
export * from './reliability/timeout-signal.js';
export * from './rpc/call-policy.js';
export * from './rpc/clients.js';
export * from './rpc/deadline.js';
export * from './rpc/errors.js';
export * from './secrets.js';
export * from './telemetry/event-publisher.js';
export * from './telemetry/logger.js';
export * from './telemetry/metrics.js';
export * from './telemetry/tracing.js';
export * as proto from './proto.js';
