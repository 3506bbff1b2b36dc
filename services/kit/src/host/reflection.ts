import type { ServiceImplementation } from 'nice-grpc';
import { HealthDefinition } from 'nice-grpc-server-health';
import { ServerReflection, ServerReflectionService } from 'nice-grpc-server-reflection';
import { descriptorSetBase64 } from '../generated/descriptor-set.js';

// Server reflection as Go and Java gRPC servers serve it: both grpc.reflection.v1 and v1alpha
// (older grpcurl, Postman and evans ask only v1alpha), each listing every service the server
// serves, the health and reflection services included, from a descriptor set that holds their
// files too (proto-grpc, built by scripts/generate.sh). Clients need no proto files.

const V1_SERVICE = 'grpc.reflection.v1.ServerReflection';
const V1ALPHA_SERVICE = 'grpc.reflection.v1alpha.ServerReflection';

/**
 * grpc.reflection.v1alpha.ServerReflection: v1 under its older name. The two protos' messages have
 * the same fields and numbers, so v1's (de)serializers and implementation serve both.
 */
export const ServerReflectionV1AlphaService: { serverReflectionInfo: Omit<typeof ServerReflectionService.serverReflectionInfo, 'path'> & { path: string } } = {
  serverReflectionInfo: {
    ...ServerReflectionService.serverReflectionInfo,
    path: `/${V1ALPHA_SERVICE}/ServerReflectionInfo`,
  },
};

/** The services the server adds beside the hosted ones, by full name. */
const STANDARD_SERVICES = [HealthDefinition.fullName, V1_SERVICE, V1ALPHA_SERVICE] as const;

/** One reflection implementation for both versions, listing `hosted` and the standard services. */
export function reflection(hosted: readonly string[]): ServiceImplementation<typeof ServerReflectionService> & ServiceImplementation<typeof ServerReflectionV1AlphaService> {
  return ServerReflection(Buffer.from(descriptorSetBase64, 'base64'), [...hosted, ...STANDARD_SERVICES]);
}
