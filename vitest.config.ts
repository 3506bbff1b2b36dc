import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['services/*/test/**/*.test.ts', 'server/test/**/*.test.ts', 'test/**/*.test.ts'],
    // Integration tests start nats-server and service processes; on two cores, one file at a
    // time keeps their timings honest.
    fileParallelism: false,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    teardownTimeout: 30_000,
  },
});
