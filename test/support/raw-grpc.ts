import { Metadata, credentials, makeGenericClientConstructor, type ServiceError } from '@grpc/grpc-js';

/**
 * One unary call with plain grpc-js, which (unlike nice-grpc) puts the deadline on the wire as
 * grpc-timeout: what grpcurl, Python and other gRPC clients do.
 */
export function rawUnaryCall<Req, Res>(
  address: string,
  path: string,
  type: { request: { encode(value: Req): { finish(): Uint8Array } }; response: { decode(bytes: Uint8Array): Res } },
  request: Req,
  deadlineMs: number,
): Promise<Res> {
  const Client = makeGenericClientConstructor({}, 'raw');
  const client = new Client(address, credentials.createInsecure());
  return new Promise<Res>((resolve, reject) => {
    client.makeUnaryRequest(
      path,
      (value: Req) => Buffer.from(type.request.encode(value).finish()),
      (bytes: Buffer) => type.response.decode(bytes),
      request,
      new Metadata(),
      { deadline: Date.now() + deadlineMs },
      (error: ServiceError | null, response?: Res) => {
        client.close();
        if (error) reject(error);
        else resolve(response as Res);
      },
    );
  });
}
