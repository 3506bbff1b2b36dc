import * as proto from '@elexirion/kit/proto';
import { createChannel, createClientFactory, Metadata, type Channel, type Client } from 'nice-grpc';
import { deadlineMiddleware } from 'nice-grpc-client-middleware-deadline';
import { parseDuration, UsageError, type Parsed } from './args.js';
import { Output } from './output.js';
import { Progress } from './progress.js';

export type GatewayClient = Client<typeof proto.GatewayDefinition, { deadline?: Date | number }>;

export interface CallOptions {
  signal: AbortSignal;
  metadata: Metadata;
  deadline?: Date;
}

/** The kit's relative-deadline header (services/kit/src/rpc/deadline.ts), named here so the CLI loads no more of the kit than the contracts. */
const TIMEOUT_METADATA_KEY = 'elexirion-timeout-ms';
const DEFAULT_ADDRESS = '127.0.0.1:50051';
const DEFAULT_TIMEOUT_MS = 60_000;

/** What a client command works with: the gateway, its output, Ctrl-C, and its parsed options. */
export interface Context {
  gateway: GatewayClient;
  address: string;
  output: Output;
  progress: Progress;
  /** Aborted by Ctrl-C: every call takes it, so the gateway (and the run behind it) is cancelled. */
  signal: AbortSignal;
  /**
   * Options for a call that answers once: Ctrl-C and the deadline (--timeout, else 60 s; a
   * `long` call, a whole chat, has none unless --timeout is given).
   */
  unary(long?: boolean): CallOptions;
  /** Options for a stream: Ctrl-C, and a deadline only when --timeout is given (a stream lasts as long as its work). */
  stream(): CallOptions;
  values: Parsed['values'];
  positionals: string[];
  close(): void;
}

export function createContext(parsed: Parsed): Context {
  const address = String(parsed.values.address ?? process.env.ELEXIRION_ADDRESS ?? DEFAULT_ADDRESS).trim();
  if (!address) throw new UsageError('--address: empty');
  // Trimmed: `ELEXIRION_API_KEY=$(cat key)` brings a newline, which gRPC metadata refuses.
  const apiKey = String(parsed.values['api-key'] ?? process.env.ELEXIRION_API_KEY ?? '').trim() || undefined;
  if (apiKey && !/^[\x21-\x7e]+$/.test(apiKey)) throw new UsageError('--api-key: only printable ASCII without spaces');
  const timeoutMs = parsed.values.timeout === undefined ? undefined : parseDuration(String(parsed.values.timeout), '--timeout');

  const output = new Output(Boolean(parsed.values.json), apiKey);
  const metadata = new Metadata();
  if (apiKey) metadata.set('authorization', `Bearer ${apiKey}`);
  let channel: Channel;
  try {
    channel = createChannel(address);
  } catch (error) {
    throw new UsageError(`--address: ${(error as Error).message}`);
  }
  const gateway: GatewayClient = createClientFactory().use(deadlineMiddleware).create(proto.GatewayDefinition, channel);

  const interrupt = new AbortController();
  /**
   * Ctrl-C, the key, and a deadline when there is one: enforced here by the deadline middleware,
   * and sent as `elexirion-timeout-ms` (nice-grpc puts no grpc-timeout on the wire), which the
   * gateway turns into its own deadline for the work it hands on.
   */
  const callOptions = (ms: number | undefined): CallOptions => {
    if (ms === undefined) return { signal: interrupt.signal, metadata };
    const withTimeout = new Metadata(metadata);
    withTimeout.set(TIMEOUT_METADATA_KEY, String(Math.round(ms)));
    return { signal: interrupt.signal, metadata: withTimeout, deadline: new Date(Date.now() + ms) };
  };
  const onInterrupt = () => {
    // The second Ctrl-C does not wait for the cancelled call to wind down.
    if (interrupt.signal.aborted) process.exit(130);
    interrupt.abort();
  };
  process.on('SIGINT', onInterrupt);

  return {
    gateway,
    address,
    output,
    progress: new Progress(output),
    signal: interrupt.signal,
    unary: (long = false) => callOptions(timeoutMs ?? (long ? undefined : DEFAULT_TIMEOUT_MS)),
    stream: () => callOptions(timeoutMs),
    values: parsed.values,
    positionals: parsed.positionals,
    close() {
      process.off('SIGINT', onInterrupt);
      channel.close();
    },
  };
}
