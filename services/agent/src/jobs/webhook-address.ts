/**
 * Which webhook receivers the agent may POST to. A webhook URL is chosen by whoever submits a
 * job, and the agent runs inside the cluster: without this check a caller could make the agent
 * POST to its own network (a metadata service, an admin port on loopback). Loopback, private,
 * link-local, shared (CGNAT), multicast and reserved addresses are refused unless
 * AGENT_WEBHOOK_ALLOW_PRIVATE=true (local development and tests with a receiver on loopback).
 */
import { lookup as lookupCallback, type LookupAddress, type LookupOptions } from 'node:dns';
import { lookup } from 'node:dns/promises';
import { BlockList, isIP, type LookupFunction } from 'node:net';

const notPublic = new BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8], // "this" network
  ['10.0.0.0', 8],
  ['100.64.0.0', 10], // shared address space (carrier-grade NAT)
  ['127.0.0.0', 8],
  ['169.254.0.0', 16], // link-local, where cloud metadata services answer
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15], // benchmarking
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, broadcast included
] as const) {
  notPublic.addSubnet(network, prefix, 'ipv4');
}
for (const [network, prefix] of [
  ['::', 128], // unspecified
  ['::1', 128],
  ['fc00::', 7], // unique local
  ['fe80::', 10], // link-local
  ['ff00::', 8], // multicast
] as const) {
  notPublic.addSubnet(network, prefix, 'ipv6');
}

/** The IPv4 address an IPv4-mapped or -compatible IPv6 address (::ffff:a.b.c.d) stands for. */
function embeddedIpv4(address: string): string | undefined {
  const match = /^::(?:ffff:)?(?:(\d+\.\d+\.\d+\.\d+)|([0-9a-f]{1,4}):([0-9a-f]{1,4}))$/i.exec(address);
  if (!match) return undefined;
  if (match[1]) return match[1];
  const high = Number.parseInt(match[2]!, 16);
  const low = Number.parseInt(match[3]!, 16);
  return `${high >> 8}.${high & 0xff}.${low >> 8}.${low & 0xff}`;
}

/** Whether `address` (an IP literal) is one a webhook may not reach: loopback, private, link-local, ... */
export function isNonPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return notPublic.check(address, 'ipv4');
  if (family === 6) {
    const ipv4 = embeddedIpv4(address);
    return ipv4 !== undefined ? notPublic.check(ipv4, 'ipv4') : notPublic.check(address, 'ipv6');
  }
  return false;
}

/** The URL's host as an IP literal or a lowercase name, without IPv6's brackets or a trailing dot. */
function hostOf(url: URL): string {
  return url.hostname.replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '').toLowerCase();
}

const REFUSED = 'is a loopback, private or link-local address; webhooks go to public receivers (AGENT_WEBHOOK_ALLOW_PRIVATE=true allows others, for development)';

/**
 * What is wrong with the URL's host as written, or undefined: an IP literal (in any of the forms
 * URL parsing normalizes, 2130706433 and 0x7f.1 included) or a name that is loopback by
 * definition ("localhost"). Names are resolved by `resolvedAddressProblem`.
 */
export function literalAddressProblem(url: URL): string | undefined {
  const host = hostOf(url);
  if (host === 'localhost' || host.endsWith('.localhost')) return `webhook.url: ${host} ${REFUSED}`;
  if (isIP(host) && isNonPublicAddress(host)) return `webhook.url: ${host} ${REFUSED}`;
  return undefined;
}

/**
 * What is wrong with the addresses the URL's host name resolves to (any of them non-public), or
 * undefined. A name that does not resolve is not a problem here: delivery resolves it again and
 * records why it failed.
 */
export async function resolvedAddressProblem(url: URL): Promise<string | undefined> {
  const literal = literalAddressProblem(url);
  if (literal) return literal;
  const host = hostOf(url);
  if (isIP(host)) return undefined;
  let addresses: { address: string }[];
  try {
    addresses = await lookup(host, { all: true, verbatim: true });
  } catch {
    return undefined;
  }
  const blocked = addresses.find(({ address }) => isNonPublicAddress(address));
  return blocked ? `webhook.url: ${host} resolves to ${blocked.address}, which ${REFUSED}` : undefined;
}

/** A connection refused because the receiver's name resolved to a non-public address. */
export class NonPublicAddressError extends Error {
  override readonly name = 'NonPublicAddressError';
}

/**
 * A socket `lookup` that resolves as Node does and fails when any address is non-public. The
 * address checked is the one connected to: a name that resolved to a public address at submit
 * and resolves to a private one now (DNS rebinding) is refused here.
 */
export const publicOnlyLookup: LookupFunction = (hostname, options, callback) => {
  lookupCallback(hostname, { ...(options as LookupOptions), all: true }, (error, addresses: LookupAddress[]) => {
    if (error) return callback(error, '', 0);
    const blocked = addresses.find(({ address }) => isNonPublicAddress(address));
    if (blocked) return callback(new NonPublicAddressError(`webhook.url: ${hostname} resolves to ${blocked.address}, which ${REFUSED}`), '', 0);
    if ((options as LookupOptions).all) return (callback as unknown as (error: null, addresses: LookupAddress[]) => void)(null, addresses);
    const [first] = addresses;
    if (!first) return callback(Object.assign(new Error(`${hostname}: no address`), { code: 'ENOTFOUND' }), '', 0);
    callback(null, first.address, first.family);
  });
};
