import { createServer, type Server } from 'node:http';
import { afterAll, describe, expect, it } from 'vitest';
import { startNats, type NatsServer, stopAll, startStack } from '@elexirion/testing';

interface ExportedSpan {
  service: string;
  name: string;
  traceId: string;
  attributes: Record<string, unknown>;
}

/** A stand-in OTLP/HTTP collector: keeps every span the services export (JSON encoding). */
async function startCollector(): Promise<{ url: string; spans: ExportedSpan[]; server: Server }> {
  const spans: ExportedSpan[] = [];
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString() || '{}');
      for (const resourceSpans of body.resourceSpans ?? []) {
        const service = resourceSpans.resource?.attributes?.find((attribute: any) => attribute.key === 'service.name')?.value?.stringValue;
        for (const scope of resourceSpans.scopeSpans ?? []) {
          for (const span of scope.spans ?? []) {
            const attributes: Record<string, unknown> = {};
            for (const attribute of span.attributes ?? []) attributes[attribute.key] = Object.values(attribute.value ?? {})[0];
            spans.push({ service, name: span.name, traceId: span.traceId, attributes });
          }
        }
      }
      response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  const port = await new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
  return { url: `http://127.0.0.1:${port}`, spans, server };
}

describe('OpenTelemetry export', () => {
  let nats: NatsServer | undefined;
  let collector: Awaited<ReturnType<typeof startCollector>> | undefined;

  afterAll(async () => {
    await stopAll();
    await nats?.stop();
    await new Promise((resolve) => collector?.server.close(resolve));
  });

  it('exports one trace across the four processes, with a GenAI client span for the model call', async () => {
    nats = await startNats();
    collector = await startCollector();
    const stack = await startStack('one-process-per-service', nats.url, { OTEL_EXPORTER_OTLP_ENDPOINT: collector.url });
    const response = await stack.gateway.chat({ message: 'trace me' });
    expect(response.pipelineUsed).toBe('general');
    await stack.stop(); // a drain flushes the span batches

    const services = ['elexirion-gateway', 'elexirion-agent', 'elexirion-executor', 'elexirion-provider'];
    const chatSpan = collector.spans.find((span) => span.name.startsWith('elexirion.v1.Gateway/Chat') && span.service === 'elexirion-gateway');
    expect(chatSpan).toBeDefined();
    const trace = collector.spans.filter((span) => span.traceId === chatSpan!.traceId);
    expect(new Set(trace.map((span) => span.service))).toEqual(new Set(services));
    const llm = trace.find((span) => span.name === 'chat mock');
    expect(llm?.service).toBe('elexirion-provider');
    expect(llm?.attributes).toMatchObject({ 'gen_ai.operation.name': 'chat', 'gen_ai.provider.name': 'mock', 'gen_ai.request.model': 'mock', 'gen_ai.response.model': 'mock' });
    expect(Number(llm?.attributes['gen_ai.usage.output_tokens'])).toBeGreaterThan(0);
  });

  it('exports a server span for each in-process hop when all services share one process', async () => {
    nats ??= await startNats();
    collector ??= await startCollector();
    const stack = await startStack('all-in-one', nats.url, { OTEL_EXPORTER_OTLP_ENDPOINT: collector.url });
    const response = await stack.gateway.chat({ message: 'trace me in one process' });
    expect(response.pipelineUsed).toBe('general');
    await stack.stop();

    const chatSpan = collector.spans.find((span) => span.name.startsWith('elexirion.v1.Gateway/Chat') && span.service === 'elexirion');
    expect(chatSpan).toBeDefined();
    const names = collector.spans.filter((span) => span.traceId === chatSpan!.traceId).map((span) => span.name);
    for (const hop of ['elexirion.v1.Agent/HandleChat', 'elexirion.v1.Executor/Execute', 'elexirion.v1.Provider/Complete']) {
      expect(names.some((name) => name.startsWith(hop)), `${hop} in ${names.join(', ')}`).toBe(true);
    }
    expect(names).toContain('chat mock');
  });
});
