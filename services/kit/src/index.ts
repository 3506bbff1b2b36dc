// The service kit: everything the services share, and all of it that they use. It never imports
// a service. What is not named here (middleware, interceptors, metric recorders) is the kit's own.

// host/: a process and the services it hosts.
export { PIPELINE_NAME, ROUTE_TABLE_NAME, RUN_ID_DESCRIPTION, RUN_ID_PATTERN, callsOf, parseServiceList, primaryService, serviceCatalog, serviceNames, type ServiceDefinitionOf, type ServiceName } from './host/catalog.js';
export { parseCommandLine, runService, type CommandLine } from './host/command-line.js';
export { ConfigError, boolFlag, durationMs, hostConfigSchema, loadHostConfig, parseEnv, port, type HostConfig } from './host/config.js';
export { defineService, runHost, startHost, type Host, type HostOptions, type ServiceContext, type ServiceInstance, type ServiceModule } from './host/host.js';
export { httpErrorBody, httpRoutes, type HttpRoutes, type HttpServerOptions, type OpenApiFragment, type AccessLogLevel, ACCESS_LOG_LEVELS, injectRequestTrace, requestTraceId } from './host/http.js';
// The contract's FileDescriptorSet (base64): JSON Schemas and OpenAPI are built from it.
export { descriptorSetBase64 } from './generated/descriptor-set.js';
export {
  SharedNatsConnection,
  type NatsReadiness,
  type NatsState,
  type NatsStatusListener,
  type NatsUseState,
  type ServiceNats,
} from './host/shared-nats-connection.js';

// rpc/: calls between services, their deadlines, and the one vocabulary for failures.
export { clientCallPolicy, isServiceUnreachable, type ClientCallPolicy, type ServerCallPolicy } from './rpc/call-policy.js';
export { ChannelPool, ServiceClients, connectService, type LocalService, type ServiceClient, type ServiceClientsOptions, type UnaryServerMiddleware } from './rpc/clients.js';
export { CallMetadata } from './rpc/call-metadata.js';
export { CALLER_ADMIN_METADATA, CALLER_METADATA, GUARD_METADATA } from './rpc/caller-headers.js';
export {
  DEADLINE_METADATA_KEY,
  TIMEOUT_METADATA_KEY,
  callOptions,
  deadlineToMs,
  incomingDeadline,
  mergeDeadline,
  type Deadline,
  type PropagatedCallOptions,
} from './rpc/deadline.js';
export { ClientError, ElexirionError, RETRY_PUSHBACK_KEY, ServerError, Status, failureMessage, httpStatusFromGrpc, statusNameOf, statusOf, toServerError } from './rpc/errors.js';
export { FALLBACK_USED_TRAILER, PROVIDER_OVERLOADED_TRAILER, RUN_FAILURE_TRAILER, TrailerCapture, runFailureOf, setRunFailure } from './rpc/run-failure.js';

// reliability/: the one retry, limits, timeouts.
export { ConcurrencyLimiter, LimitExceededError } from './reliability/concurrency-limiter.js';
export { backoffDelay, grpcRetryPolicy, retry, type RetryOptions, type RetryPolicy } from './reliability/retry.js';
export { timeoutSignal, type TimeoutSignal } from './reliability/timeout-signal.js';

// state/: JetStream KV, typed, and watched.
export { KvCorruptEntryError, KvInvalidKeyError, KvRejectedValueError, KvRevisionConflictError, describeIssues } from './state/kv-errors.js';
export { KvStore, type KvBucketSpec, type KvKeyRule, type KvRecord } from './state/kv-store.js';
export { KvView, type KvViewChange, type KvViewLogger, type KvViewOptions } from './state/kv-view.js';
export { RECOVERY_ACTIONS_BUCKET, RECOVERY_ACTION_NAMES, RecoveryActions, recoveryActionKey, recoveryActionSchema, type RecoveryActionName, type RecoveryActionRecord } from './state/recovery-actions.js';

// telemetry/: events out and in, metrics, traces, logs; secrets kept out of all of them.
export {
  EVENT_SUBJECT_PREFIX,
  EventPublisher,
  eventSubject,
  serviceEvents,
  type EventFields,
  type EventPublisherOptions,
  type Observation,
  type ServiceEvents,
} from './telemetry/event-publisher.js';
export { TELEMETRY_EVENT_KINDS, type TelemetryEventKind } from './telemetry/event-kinds.js';
export {
  EventsReader,
  EventsReaderError,
  type DeliveredBatch,
  type DeliveredBatchHandler,
  type EventsConsumeOptions,
  type EventsReaderOptions,
  type TracedEvent,
  type UndecodableMessage,
} from './telemetry/events-reader.js';
export { createLogger, type Logger, type LoggerOptions } from './telemetry/logger.js';
export { Metrics } from './telemetry/metrics.js';
export { initTracing, spansRecorded, traceIds, tracer, type Tracing, type TracingOptions } from './telemetry/tracing.js';
export { REDACTED, isSecretName, redactSecrets, redactSecretsDeep, redactUrlCredentials, registerSecret } from './secrets.js';

// yaml/: YAML files checked against a zod schema, with positioned problems and "did you mean".
export { fieldsAt } from './yaml/fields.js';
export { didYouMean } from './yaml/suggest.js';
export {
  formatProblem,
  keyPosition,
  nodeAt,
  parseYamlDocument,
  positionIn,
  validateYamlDocument,
  type IssueDescriber,
  type Problem,
  type YamlDocument,
  type YamlIssue,
  type YamlPosition,
} from './yaml/yaml-document.js';

// routing/: routes.yaml, the route table the agent routes by and the gateway keeps a copy of.
export { FileWatcher, type FileWatcherOptions } from './host/file-watcher.js';
export { RouteFile, type RouteFileOptions } from './routing/route-file.js';
export { RouteTable, inputsFor, revisionOf, routeTableDocument, type CompiledRoute, type PipelineShape, type RouteTableDocument, type RuleMatch } from './routing/route-table.js';

export * as proto from './proto.js';
