// The service kit: everything the services share. It never imports a service.
export * from './call-policy.js';
export * from './catalog.js';
export * from './clients.js';
export * from './concurrency-limiter.js';
export * from './config.js';
export * from './deadline.js';
export * from './errors.js';
export * from './events.js';
export * from './host.js';
export * from './logger.js';
export * from './metrics.js';
export * from './secrets.js';
export * from './timeout-signal.js';
export * from './tracing.js';
export * as proto from './proto.js';
