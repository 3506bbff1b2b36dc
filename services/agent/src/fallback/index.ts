// Emergent fallback: a pipeline generated for a failed run's class and run once (issue 12).
export { FALLBACK_CLASSES, NoFallbackError, STRATEGY_BY_CLASS, failureClassSlug, fallbackName, generateFallback, type FallbackStrategy, type GeneratedFallback } from './generate.js';
export { FallbackFailedError, describeFailure, fallbackApplies, recover, type FailedRun } from './recover.js';
