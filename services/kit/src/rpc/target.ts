import { isIPv4, isIPv6 } from 'node:net';
import { experimental } from '@grpc/grpc-js';

// The gRPC target forms grpc-js resolves (gRPC's naming doc, grpc/grpc doc/naming.md), checked
// when the configuration is read, so a typo stops the process naming the variable instead of
// failing every call later. grpc-js parses a target with this expression (uri-parser.ts) and
// takes a scheme it has no resolver for as part of a DNS name.
const URI = /^(?:([A-Za-z0-9+.-]+):)?(?:\/\/([^/]*)\/)?(.+)$/;
const SCHEMES = new Set(['dns', 'ipv4', 'ipv6', 'unix']);
const HOST_NAME = /^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$/;

/** What `<NAME>_ADDRESS` accepts, for messages. */
export const GRPC_TARGET_FORMS = 'dns:///host:port, host:port, ipv4:ip:port[,ip:port...], ipv6:[ip]:port[,...], unix:path';

/**
 * The problem with `target` as grpc-js would resolve it, in words; undefined when it resolves.
 * Every address needs its port: grpc-js would otherwise use 443, which no Elexirion service
 * listens on.
 */
export function grpcTargetProblem(target: string): string | undefined {
  const parsed = URI.exec(target);
  if (!parsed) return 'expected a gRPC target';
  const [, scheme, , path = ''] = parsed;
  if (scheme === undefined || !SCHEMES.has(scheme)) {
    const problem = hostPortProblem(target, 'host');
    return problem && scheme !== undefined && !/^\d+$/.test(path) ? `unknown scheme "${scheme}:" (${problem})` : problem;
  }
  switch (scheme) {
    case 'dns':
      return hostPortProblem(path, 'host');
    case 'ipv4':
    case 'ipv6':
      for (const address of path.split(',')) {
        const problem = hostPortProblem(address, scheme);
        if (problem) return problem;
      }
      return undefined;
    default:
      return path.length > 0 ? undefined : 'expected a socket path after "unix:"';
  }
}

function hostPortProblem(address: string, kind: 'host' | 'ipv4' | 'ipv6'): string | undefined {
  const hostPort = experimental.splitHostPort(address);
  if (!hostPort || hostPort.host === '') return `"${address}" is not host:port`;
  if (kind === 'ipv4' && !isIPv4(hostPort.host)) return `"${hostPort.host}" is not an IPv4 address`;
  if (kind === 'ipv6' && !isIPv6(hostPort.host)) return `"${hostPort.host}" is not an IPv6 address (write [address]:port)`;
  if (kind === 'host' && !isIPv6(hostPort.host) && !HOST_NAME.test(hostPort.host)) return `"${hostPort.host}" is not a host name or address`;
  if (hostPort.port === undefined) return `"${address}" has no port`;
  if (hostPort.port > 65535) return `"${address}" has no valid port`;
  return undefined;
}

/** `address` as a channel target: a bare host:port resolved through DNS, any other form as given. */
export function channelTarget(address: string): string {
  const problem = grpcTargetProblem(address);
  if (problem) throw new Error(`${JSON.stringify(address)} is not a gRPC target (${problem}; expected ${GRPC_TARGET_FORMS})`);
  const scheme = URI.exec(address)?.[1];
  return scheme !== undefined && SCHEMES.has(scheme) ? address : `dns:///${address}`;
}
