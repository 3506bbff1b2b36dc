import type { ServiceDefinition as GrpcJsServiceDefinition } from '@grpc/grpc-js';
import type { CompatServiceDefinition, TsProtoServiceDefinition } from 'nice-grpc';
import { ServerError, Status, type ServerMiddleware } from 'nice-grpc-common';

// Request bytes that are not a valid protobuf message are the caller's mistake: INVALID_ARGUMENT.
// grpc-js answers INTERNAL whenever a request deserializer throws, before any interceptor or
// middleware sees the call, so the deserializers the kit's servers use never throw: bytes that do
// not decode become an UndecodableRequest, which the server's first middleware (the call policy,
// or `rejectUndecodableRequests`) answers with INVALID_ARGUMENT.

/** A request whose bytes did not decode: what reaches the middleware instead of the message. */
export class UndecodableRequest {
  constructor(
    readonly path: string,
    readonly reason: string,
  ) {}

  toError(): ServerError {
    return new ServerError(Status.INVALID_ARGUMENT, `${this.path}: the request is not a valid protobuf message for this method (${this.reason})`);
  }
}

/**
 * A request over its call's size limit, refused before it is decoded (decoding would copy its
 * strings again): RESOURCE_EXHAUSTED, as grpc-js answers a message over the server's limit.
 */
export class OversizeRequest extends UndecodableRequest {
  constructor(
    path: string,
    readonly bytes: number,
    readonly limit: number,
  ) {
    super(path, `${bytes} bytes is over the ${limit} this call accepts`);
  }

  override toError(): ServerError {
    return new ServerError(Status.RESOURCE_EXHAUSTED, `${this.path}: the request's ${this.bytes} bytes are over the ${this.limit} bytes this call accepts`);
  }
}

function guard<T>(path: string, decode: (bytes: Buffer) => T, limit?: number): (bytes: Buffer) => T | UndecodableRequest {
  return (bytes) => {
    if (limit !== undefined && bytes.length > limit) return new OversizeRequest(path, bytes.length, limit);
    try {
      return decode(bytes);
    } catch (error) {
      return new UndecodableRequest(path, error instanceof Error ? error.message : String(error));
    }
  };
}

function isTsProto(definition: CompatServiceDefinition): definition is TsProtoServiceDefinition {
  return 'fullName' in definition && 'methods' in definition;
}

/**
 * `definition` with request deserializers that return an UndecodableRequest instead of throwing,
 * and, with `maxRequestBytes` (by method key), an OversizeRequest for a request over its call's limit.
 */
export function withGuardedDecoding<D extends CompatServiceDefinition>(definition: D, maxRequestBytes?: (methodKey: string) => number): D {
  if (isTsProto(definition)) {
    const methods: Record<string, unknown> = {};
    for (const [key, method] of Object.entries(definition.methods)) {
      const path = `/${definition.fullName}/${method.name}`;
      const decode = method.requestType.decode.bind(method.requestType) as (bytes: Buffer) => unknown;
      methods[key] = { ...method, requestType: { ...method.requestType, decode: guard(path, decode, maxRequestBytes?.(key)) } };
    }
    return { ...definition, methods } as D;
  }
  const guarded: Record<string, unknown> = {};
  for (const [key, method] of Object.entries(definition as GrpcJsServiceDefinition)) {
    guarded[key] = { ...method, requestDeserialize: guard(method.path, method.requestDeserialize, maxRequestBytes?.(key)) };
  }
  return guarded as D;
}

/** Answers INVALID_ARGUMENT for an undecodable request, for services added without the call policy. */
export const rejectUndecodableRequests: ServerMiddleware = async function* rejectUndecodable(call, context) {
  if (!call.requestStream) {
    if (call.request instanceof UndecodableRequest) throw call.request.toError();
    return yield* call.next(call.request, context);
  }
  return yield* call.next(checkEach(call.request), context);
};

async function* checkEach<T>(requests: AsyncIterable<T>): AsyncIterable<T> {
  for await (const request of requests) {
    if (request instanceof UndecodableRequest) throw request.toError();
    yield request;
  }
}
