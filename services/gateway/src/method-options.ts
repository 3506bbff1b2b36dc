import { BinaryReader } from '@bufbuild/protobuf/wire';
import { proto } from '@elexirion/kit';

// Field numbers of the options in proto/elexirion/v1/options.proto. ts-proto keeps custom
// options as unknown fields of each method's `options`: (field number << 3 | wire type 2) ->
// the length-prefixed bytes.
const HTTP_OPTION = 51001;
const REQUIRED_SCOPE_OPTION = 51002;

type GatewayMethods = typeof proto.GatewayDefinition.methods;
export type GatewayMethodName = keyof GatewayMethods;

/** A Gateway call as its options describe it. */
export interface GatewayMethod {
  /** The definition's key (camelCase): the implementation's and the client's method name. */
  key: GatewayMethodName;
  /** The proto name ("GetJob"), as in the gRPC path /elexirion.v1.Gateway/GetJob. */
  name: string;
  path: string;
  responseStream: boolean;
  /** The REST route mirroring it. */
  http: proto.HttpRoute;
  /** The key scope it needs; '' is any valid key. */
  requiredScope: string;
  definition: GatewayMethods[GatewayMethodName];
}

function optionBytes(options: unknown, field: number): Uint8Array | undefined {
  const unknown = (options as { _unknownFields?: Record<number, Uint8Array[]> } | undefined)?._unknownFields;
  const found = unknown?.[(field << 3) | 2]?.[0];
  // Each entry is the value with its length prefix.
  return found ? new BinaryReader(found).bytes() : undefined;
}

function describe(key: GatewayMethodName): GatewayMethod {
  const definition = proto.GatewayDefinition.methods[key];
  const http = optionBytes(definition.options, HTTP_OPTION);
  const scope = optionBytes(definition.options, REQUIRED_SCOPE_OPTION);
  if (!http) throw new Error(`Gateway.${definition.name} has no (elexirion.v1.http) option in gateway.proto`);
  if (scope === undefined) throw new Error(`Gateway.${definition.name} has no (elexirion.v1.required_scope) option in gateway.proto`);
  return {
    key,
    name: definition.name,
    path: `/${proto.GatewayDefinition.fullName}/${definition.name}`,
    responseStream: definition.responseStream,
    http: proto.HttpRoute.decode(http),
    requiredScope: new TextDecoder().decode(scope),
    definition,
  };
}

/** Every Gateway call with its REST route and scope, read once from the generated definition. */
export const gatewayMethods: readonly GatewayMethod[] = (Object.keys(proto.GatewayDefinition.methods) as GatewayMethodName[]).map(describe);

/** The call by its gRPC path (/elexirion.v1.Gateway/Chat). */
export const gatewayMethodByPath: ReadonlyMap<string, GatewayMethod> = new Map(gatewayMethods.map((method) => [method.path, method]));
