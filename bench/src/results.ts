// What a scenario returns and the harness writes: types only, so that the reporting code (and
// the tests that check its verdicts) can use them without loading the harness.
import type { LatencySummary } from './stats.ts';

/** One configuration's figures over every round of a measurement. */
export interface ConfigResult {
  name: string;
  description: string;
  concurrency: number;
  rounds: number;
  count: number;
  errors: number;
  errorSamples: string[];
  latencyMs: LatencySummary;
  ttftMs?: LatencySummary;
  reqPerSec: number;
  /** Successful requests per second in each round, in round order (configurations of a round ran back to back). */
  roundReqPerSec: number[];
  wallSec: number;
  /** CPU ms per successful request, per process (system under test, fake upstream, NATS, driver). */
  cpuMsPerRequest: Record<string, number>;
  /** Sum over the system under test's processes only. */
  sutCpuMsPerRequest: number;
  /** Highest RSS of each process (VmHWM) over the scenario so far, MiB. */
  peakRssMiB: Record<string, number>;
  /** The warm-up before the rounds (not in the figures above): requests that succeeded and failed. */
  warmup: { count: number; errors: number };
}

/** What a scenario returns: written as <scenario>.json, read by the targets, the summary and the chart. */
export interface ScenarioOutput {
  scenario: string;
  title: string;
  settings: Record<string, unknown>;
  notes: string[];
  configs?: ConfigResult[];
  [key: string]: unknown;
}
