// @elexirion/testing: what the project's tests and benchmark share. Real parts only: a real
// nats-server, real service processes on free loopback ports, fake vendor upstreams that speak
// the vendors' wire formats.
export * from './executor.js';
export * from './fake-upstreams/index.js';
export * from './fixtures.js';
export * from './host.js';
export * from './nats.js';
export * from './ports.js';
export * from './processes.js';
export * from './provider.js';
export * from './raw-grpc.js';
export * from './stack.js';
export * from './wait.js';
