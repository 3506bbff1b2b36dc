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

function guard<T>(path: string, decode: (bytes: Buffer) => T): (bytes: Buffer) => T | UndecodableRequest {
  return (bytes) => {
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

/** `definition` with request deserializers that return an UndecodableRequest instead of throwing. */
export function withGuardedDecoding<D extends CompatServiceDefinition>(definition: D): D {
  if (isTsProto(definition)) {
    const methods: Record<string, unknown> = {};
    for (const [key, method] of Object.entries(definition.methods)) {
      const path = `/${definition.fullName}/${method.name}`;
      const decode = method.requestType.decode.bind(method.requestType) as (bytes: Buffer) => unknown;
      methods[key] = { ...method, requestType: { ...method.requestType, decode: guard(path, decode) } };
    }
    return { ...definition, methods } as D;
  }
  const guarded: Record<string, unknown> = {};
  for (const [key, method] of Object.entries(definition as GrpcJsServiceDefinition)) {
    guarded[key] = { ...method, requestDeserialize: guard(method.path, method.requestDeserialize) };
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
