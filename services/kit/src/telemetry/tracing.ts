import { ROOT_CONTEXT, SpanKind, context, propagation, trace, type Span, type TextMapGetter, type TextMapSetter } from '@opentelemetry/api';
import { Metadata, type ClientMiddleware, type ServerMiddleware } from 'nice-grpc-common';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AlwaysOffSampler, BatchSpanProcessor, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';

export interface TracingOptions {
  serviceName: string;
  /** OTLP/HTTP endpoint (…:4318); without it spans still get ids for logs and events, and are not exported. */
  otlpEndpoint?: string | undefined;
}

export interface Tracing {
  shutdown(): Promise<void>;
}

let active: NodeTracerProvider | undefined;
let recording = false;

/**
 * Whether spans are recorded and exported. When they are not, calls between services hosted in
 * one process start no span of their own: the callee runs in the caller's async context, so its
 * logs and events keep the caller's trace, and the hop costs no span machinery.
 */
export function spansRecorded(): boolean {
  return recording;
}

/**
 * Registers the global tracer provider (AsyncLocalStorage context, W3C trace context propagator).
 * Once per process: a process hosting several services shares one provider.
 */
export function initTracing(options: TracingOptions): Tracing {
  if (active) return { shutdown: async () => {} };
  const spanProcessors: SpanProcessor[] = [];
  if (options.otlpEndpoint) {
    const url = new URL('/v1/traces', options.otlpEndpoint).toString();
    spanProcessors.push(new BatchSpanProcessor(new OTLPTraceExporter({ url })));
  }
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': options.serviceName }),
    spanProcessors,
    // With nowhere to send spans, record none: spans still carry trace and span ids (for logs,
    // events and propagation), at a fraction of the cost of recording them.
    ...(options.otlpEndpoint ? {} : { sampler: new AlwaysOffSampler() }),
  });
  provider.register();
  active = provider;
  recording = spanProcessors.length > 0;
  return {
    async shutdown() {
      await provider.shutdown();
      trace.disable();
      active = undefined;
      recording = false;
    },
  };
}

export const tracer = trace.getTracer('elexirion');

/** Trace and span ids of a span (or the active one), empty strings when none. */
export function traceIds(span: Span | undefined = trace.getActiveSpan()): { traceId: string; spanId: string } {
  if (!span) return { traceId: '', spanId: '' };
  const { traceId, spanId } = span.spanContext();
  return { traceId, spanId };
}

/** nice-grpc Metadata as an OpenTelemetry propagation carrier. */
const metadataSetter: TextMapSetter<Metadata> = {
  set: (carrier, key, value) => carrier.set(key, value),
};

const metadataGetter: TextMapGetter<Metadata> = {
  get: (carrier, key) => {
    const value = carrier.get(key);
    return typeof value === 'string' ? value : undefined;
  },
  keys: (carrier) => Array.from(carrier, ([key]) => key),
};

/**
 * Client middleware for calls served in this process: hands the active trace context on in the
 * metadata (the server middleware reads it there) without a client span, which an in-process
 * call does not need.
 */
export const traceContextMiddleware: ClientMiddleware = async function* (call, options) {
  const metadata = Metadata(options.metadata);
  propagation.inject(context.active(), metadata, metadataSetter);
  return yield* call.next(call.request, { ...options, metadata });
};

/**
 * Server middleware for a process that records no spans: the call runs under a server span that
 * continues the caller's trace (or starts one), so logs and events carry trace and span ids, but
 * without what nice-grpc-opentelemetry's middleware does for a recorded span (attributes, status,
 * and three context-bound wrappers per call), which a non-recording span throws away.
 */
export const traceContextServerMiddleware: ServerMiddleware = async function* traceContextServer(call, callContext) {
  const parent = propagation.extract(ROOT_CONTEXT, callContext.metadata, metadataGetter);
  const span = tracer.startSpan(call.method.path.slice(1), { kind: SpanKind.SERVER }, parent);
  const active = trace.setSpan(parent, span);
  const inner = call.next(call.request, callContext);
  let done = false;
  try {
    while (true) {
      const result = await context.with(active, () => inner.next());
      if (result.done) {
        done = true;
        return result.value;
      }
      yield result.value;
    }
  } finally {
    // A consumer that stopped reading a stream: end the handler's generator too.
    if (!done) await inner.return(undefined as never).catch(() => {});
    span.end();
  }
};
