// The generated contracts (elexirion.v1), in one namespace.
export * from './generated/elexirion/v1/common.js';
export * from './generated/elexirion/v1/gateway.js';
export * from './generated/elexirion/v1/agent.js';
export * from './generated/elexirion/v1/executor.js';
export * from './generated/elexirion/v1/provider.js';
export * from './generated/elexirion/v1/telemetry.js';
