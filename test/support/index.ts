// @elexirion/testing: what the project's tests and benchmark share. Real parts only: a real
// nats-server, real service processes on free loopback ports, fake vendor upstreams that speak
// the vendors' wire formats. It never loads vitest, so the benchmark's processes can import it;
// the vitest fixtures (per-test cleanups, a nats-server per file) are @elexirion/testing/fixtures.
export * from './agent.js';
export * from './executor.js';
export * from './fake-upstreams/index.js';
export * from './host.js';
export * from './monitor.js';
export * from './nats.js';
export * from './pipelines.js';
export * from './ports.js';
export * from './processes.js';
export * from './provider.js';
export * from './raw-grpc.js';
export * from './stack.js';
export * from './wait.js';
