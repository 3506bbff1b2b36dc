import type { ServiceContext, proto } from '@elexirion/kit';
import type { MonitorConfig } from './monitor-config.js';

/** The monitor's calls, by method key, as nice-grpc's implementation takes them. */
export type MonitorImplementation = proto.MonitorServiceImplementation;

/**
 * One area of the monitor (performance database, executions and feedback, alerts, health, rollouts): the
 * calls it answers, and what it stops on close. The service composes the areas.
 */
export interface MonitorArea<Keys extends keyof MonitorImplementation> {
  implementation: Pick<MonitorImplementation, Keys>;
  close(): Promise<void>;
}

export type MonitorContext = ServiceContext<MonitorConfig>;
