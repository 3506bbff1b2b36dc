import { DDSketch } from '@datadog/sketches-js';
import type { proto } from '@elexirion/kit';

/** What was measured: gateway calls, pipeline runs, pipeline steps, provider calls. */
export const METRIC_KINDS = ['request', 'run', 'step', 'completion'] as const;
export type MetricKind = (typeof METRIC_KINDS)[number];

/** The dimensions a series is kept by, in the order of a series key. */
export const DIMENSIONS = ['kind', 'pipeline', 'step', 'provider', 'model', 'route', 'prompt_version'] as const;
export type Dimension = (typeof DIMENSIONS)[number];
export type SeriesDimensions = Record<Dimension, string>;

/** The value every dimension but the kind takes in a minute's overflow series (see MinuteAggregates.seriesFor). */
export const OVERFLOW_VALUE = '(other)';

/** DDSketch's relative accuracy: the proto promises percentiles within 1%. */
const RELATIVE_ACCURACY = 0.01;

/** Numeric feedback scores as sums, so that minutes and replicas merge and a replaced score can be taken back. */
export interface ScoreSums {
  count: number;
  sum: number;
  sumSquares: number;
}

/** One series' figures (one kind and one set of dimension values, in one minute or merged over many). */
export class SeriesAggregate {
  count = 0;
  errorsByStatus: Record<string, number> = {};
  latency = new DDSketch({ relativeAccuracy: RELATIVE_ACCURACY });
  inputTokens = 0;
  outputTokens = 0;
  costUsd = 0;
  fallbacks = 0;
  feedback: Record<string, ScoreSums> = {};

  constructor(readonly dimensions: SeriesDimensions) {}

  observe(status: string, durationMs: number, usage: proto.Usage | undefined, fallback: boolean): void {
    this.count += 1;
    if (status && status !== 'OK') this.errorsByStatus[status] = (this.errorsByStatus[status] ?? 0) + 1;
    this.latency.accept(Math.max(0, durationMs));
    if (usage) {
      this.inputTokens += usage.inputTokens;
      this.outputTokens += usage.outputTokens;
      this.costUsd += usage.costUsd;
    }
    if (fallback) this.fallbacks += 1;
  }

  /** Adds `score` (when numeric) and takes back `previous` (the score it replaced, when numeric). */
  scoreFeedback(name: string, score: number | undefined, previous: number | undefined): void {
    const sums = (this.feedback[name] ??= { count: 0, sum: 0, sumSquares: 0 });
    if (previous !== undefined) {
      sums.count -= 1;
      sums.sum -= previous;
      sums.sumSquares -= previous * previous;
    }
    if (score !== undefined) {
      sums.count += 1;
      sums.sum += score;
      sums.sumSquares += score * score;
    }
  }

  merge(other: SeriesAggregate): void {
    this.count += other.count;
    for (const [status, count] of Object.entries(other.errorsByStatus)) this.errorsByStatus[status] = (this.errorsByStatus[status] ?? 0) + count;
    if (other.latency.count > 0) this.latency.merge(other.latency);
    this.inputTokens += other.inputTokens;
    this.outputTokens += other.outputTokens;
    this.costUsd += other.costUsd;
    this.fallbacks += other.fallbacks;
    for (const [name, sums] of Object.entries(other.feedback)) {
      const into = (this.feedback[name] ??= { count: 0, sum: 0, sumSquares: 0 });
      into.count += sums.count;
      into.sum += sums.sum;
      into.sumSquares += sums.sumSquares;
    }
  }

  toStored(): StoredSeries {
    return {
      d: DIMENSIONS.map((dimension) => this.dimensions[dimension]),
      count: this.count,
      errors: this.errorsByStatus,
      latency: encodeSketch(this.latency),
      inputTokens: this.inputTokens,
      outputTokens: this.outputTokens,
      costUsd: this.costUsd,
      fallbacks: this.fallbacks,
      feedback: this.feedback,
    };
  }

  static fromStored(stored: StoredSeries): SeriesAggregate {
    const dimensions = Object.fromEntries(DIMENSIONS.map((dimension, index) => [dimension, stored.d[index] ?? ''])) as SeriesDimensions;
    const series = new SeriesAggregate(dimensions);
    series.count = stored.count;
    series.errorsByStatus = { ...stored.errors };
    series.latency = decodeSketch(stored.latency);
    series.inputTokens = stored.inputTokens;
    series.outputTokens = stored.outputTokens;
    series.costUsd = stored.costUsd;
    series.fallbacks = stored.fallbacks;
    series.feedback = structuredClone(stored.feedback);
    return series;
  }
}

/** A series as a minute's KV record holds it; `d` are the dimension values in DIMENSIONS order. */
export interface StoredSeries {
  d: string[];
  count: number;
  errors: Record<string, number>;
  latency: StoredSketch;
  inputTokens: number;
  outputTokens: number;
  costUsd: number;
  fallbacks: number;
  feedback: Record<string, ScoreSums>;
}

/**
 * A latency DDSketch as a record holds it: its non-empty bins only, as [key, count, key, count,
 * ...], and the sums it keeps. Not DDSketch.toProto(): that writes every bin between the lowest
 * and the highest as an 8-byte double (kilobytes per series) and drops the sum, min and max.
 * Latencies are never negative, so the negative store is not kept.
 */
export interface StoredSketch {
  zeroCount: number;
  bins: number[];
  sum: number;
  min: number;
  max: number;
}

function encodeSketch(sketch: DDSketch): StoredSketch {
  const bins: number[] = [];
  const { store } = sketch;
  for (let index = 0; index < store.bins.length; index += 1) {
    const count = store.bins[index]!;
    if (count > 0) bins.push(index + store.offset, count);
  }
  return { zeroCount: sketch.zeroCount, bins, sum: sketch.count > 0 ? sketch.sum : 0, min: sketch.count > 0 ? sketch.min : 0, max: sketch.count > 0 ? sketch.max : 0 };
}

function decodeSketch(stored: StoredSketch): DDSketch {
  const sketch = new DDSketch({ relativeAccuracy: RELATIVE_ACCURACY });
  for (let index = 0; index + 1 < stored.bins.length; index += 2) sketch.store.add(stored.bins[index]!, stored.bins[index + 1]!);
  sketch.zeroCount = stored.zeroCount;
  sketch.count = stored.zeroCount + sketch.store.count;
  if (sketch.count > 0) {
    sketch.sum = stored.sum;
    sketch.min = stored.min;
    sketch.max = stored.max;
  }
  return sketch;
}

export function seriesKey(dimensions: SeriesDimensions): string {
  // \u001f cannot occur in the names (they come from proto strings, but never with control characters in practice; a collision would only merge two series).
  return DIMENSIONS.map((dimension) => dimensions[dimension]).join('\u001f');
}

function dimensionsOf(kind: MetricKind, values: Partial<Omit<SeriesDimensions, 'kind'>>): SeriesDimensions {
  return { kind, pipeline: '', step: '', provider: '', model: '', route: '', prompt_version: '', ...values };
}

/** The series of one minute, with a bound on how many it keeps. */
export class MinuteAggregates {
  readonly series = new Map<string, SeriesAggregate>();
  /** Events whose own series was not kept because the minute had MAX_SERIES already (they are in the "(other)" series). */
  overflowed = 0;

  constructor(private readonly maxSeries: number) {}

  /**
   * The series for these dimension values, created when missing. Past `maxSeries` a new series
   * goes to its kind's overflow series instead, so a minute's record stays well under NATS's
   * max_payload (a series is at most a few KB: its sketch has a few hundred bins at most): the
   * kind's totals stay exact, only the breakdown of what came late in that minute is lost.
   */
  seriesFor(dimensions: SeriesDimensions): SeriesAggregate {
    const key = seriesKey(dimensions);
    let series = this.series.get(key);
    if (series) return series;
    if (this.series.size >= this.maxSeries) {
      this.overflowed += 1;
      return this.overflowSeries(dimensions.kind);
    }
    series = new SeriesAggregate(dimensions);
    this.series.set(key, series);
    return series;
  }

  /**
   * The second bound, on bytes (a series with a wide latency spread holds a few hundred bins):
   * folds the series with the fewest events into their kind's "(other)" series until the record
   * is at most `maxBytes` of JSON. Totals stay exact. Returns the record's size in bytes.
   */
  fitInto(maxBytes: number, encode: () => string): number {
    for (;;) {
      const bytes = Buffer.byteLength(encode());
      const smallest = [...this.series.entries()].filter(([, series]) => series.dimensions.pipeline !== OVERFLOW_VALUE).sort(([, a], [, b]) => a.count - b.count)[0];
      if (bytes <= maxBytes || !smallest) return bytes;
      const [key, series] = smallest;
      this.series.delete(key);
      this.overflowSeries(series.dimensions.kind).merge(series);
      this.overflowed += series.count;
    }
  }

  private overflowSeries(kind: string): SeriesAggregate {
    const overflow = dimensionsOf(kind as MetricKind, { pipeline: OVERFLOW_VALUE, step: OVERFLOW_VALUE, provider: OVERFLOW_VALUE, model: OVERFLOW_VALUE, route: OVERFLOW_VALUE, prompt_version: OVERFLOW_VALUE });
    const key = seriesKey(overflow);
    let series = this.series.get(key);
    if (!series) this.series.set(key, (series = new SeriesAggregate(overflow)));
    return series;
  }

  /** Adds one event; false when it is not one the performance database counts (jobs, breakers, recoveries). */
  apply(event: proto.TelemetryEvent): boolean {
    const status = event.status || 'OK';
    if (event.gatewayRequest) {
      const request = event.gatewayRequest;
      this.seriesFor(dimensionsOf('request', { pipeline: request.pipeline, route: request.route })).observe(status, event.durationMs, undefined, false);
      return true;
    }
    if (event.executorRun) {
      const run = event.executorRun;
      const fallback = run.steps.some((step) => step.fallbackUsed);
      this.seriesFor(dimensionsOf('run', { pipeline: run.pipeline })).observe(status, event.durationMs, run.usage, fallback);
      return true;
    }
    if (event.executorStep) {
      const { pipeline, step } = event.executorStep;
      if (!step) return false;
      const dimensions = dimensionsOf('step', { pipeline, step: step.name, provider: step.provider, model: step.model, prompt_version: step.promptVersion });
      this.seriesFor(dimensions).observe(status, event.durationMs || step.durationMs, step.usage, step.fallbackUsed);
      return true;
    }
    if (event.providerCompletion) {
      const completion = event.providerCompletion;
      this.seriesFor(dimensionsOf('completion', { provider: completion.provider, model: completion.model })).observe(status, event.durationMs, completion.usage, false);
      return true;
    }
    if (event.agentJob) {
      // The emergent fallback: the agent served the job with its fallback pipeline. That run is
      // counted by its own event; the job adds the fallback to its pipeline's runs, not a run.
      if (!event.agentJob.fallbackUsed) return false;
      this.seriesFor(dimensionsOf('run', { pipeline: event.agentJob.pipeline })).fallbacks += 1;
      return true;
    }
    if (event.monitorFeedback) {
      // Feedback counts no call: it goes to the run's series (by pipeline) and to each step's
      // series by prompt version (the event does not say the step's provider or model). A
      // replaced score is taken back where it is added, so the run counts once.
      const feedback = event.monitorFeedback;
      const score = feedback.score;
      const previous = feedback.replaced ? feedback.previousScore : undefined;
      if (score === undefined && previous === undefined) return true;
      this.seriesFor(dimensionsOf('run', { pipeline: feedback.pipeline })).scoreFeedback(feedback.name, score, previous);
      for (const [step, version] of Object.entries(feedback.promptVersions)) {
        this.seriesFor(dimensionsOf('step', { pipeline: feedback.pipeline, step, prompt_version: version })).scoreFeedback(feedback.name, score, previous);
      }
      return true;
    }
    return false;
  }

  toStored(): StoredSeries[] {
    return [...this.series.values()].map((series) => series.toStored());
  }

  static fromStored(stored: StoredSeries[], overflowed: number, maxSeries: number): MinuteAggregates {
    const minute = new MinuteAggregates(maxSeries);
    for (const entry of stored) {
      const series = SeriesAggregate.fromStored(entry);
      minute.series.set(seriesKey(series.dimensions), series);
    }
    minute.overflowed = overflowed;
    return minute;
  }
}
