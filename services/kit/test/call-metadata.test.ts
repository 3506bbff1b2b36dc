import { describe, expect, it } from 'vitest';
import { Metadata } from 'nice-grpc-common';
import { CallMetadata } from '../src/rpc/call-metadata.js';

/** Every entry, as nice-grpc's iteration gives them. */
const entries = (metadata: Iterable<[string, Array<string | Uint8Array>]>) => [...metadata].map(([key, values]) => [key, [...values]]);

/** Runs `operations` on nice-grpc's Metadata and on CallMetadata: same entries, same errors. */
function sameAsNiceGrpc(operations: (metadata: Metadata) => void, init?: Parameters<typeof Metadata>[0]): void {
  const outcome = (metadata: Metadata) => {
    try {
      operations(metadata);
      return { entries: entries(metadata) };
    } catch (error) {
      return { error: (error as Error).message };
    }
  };
  expect(outcome(new CallMetadata(init))).toEqual(outcome(Metadata(init)));
}

describe('CallMetadata (nice-grpc Metadata as a class)', () => {
  it('behaves as nice-grpc Metadata for set, append, get, delete and iteration', () => {
    sameAsNiceGrpc((metadata) => {
      metadata.set('Authorization', 'Bearer x');
      metadata.append('x-list', 'a');
      metadata.append('x-list', 'b');
      metadata.set('x-many', ['c', 'd']);
      metadata.set('trace-bin', new Uint8Array([1, 2]));
      metadata.append('trace-bin', new Uint8Array([3]));
      metadata.set('gone', 'soon');
      metadata.delete('GONE');
      metadata.set('empty', []);
      expect(metadata.get('AUTHORIZATION')).toBe('Bearer x');
      expect(metadata.getAll('x-list')).toEqual(['a, b']);
      expect(metadata.has('gone')).toBe(false);
    });
    sameAsNiceGrpc((metadata) => metadata.set('x', 'y'), { authorization: 'Bearer k', 'x-many': ['1', '2'] });
    sameAsNiceGrpc((metadata) => metadata.set('x', 'y'), Metadata({ a: 'b' }));
  });

  it('refuses what nice-grpc refuses, with the same messages', () => {
    sameAsNiceGrpc((metadata) => metadata.set('bad key', 'v'));
    sameAsNiceGrpc((metadata) => metadata.set('text', 'caf\u00e9'));
    sameAsNiceGrpc((metadata) => metadata.set('x-bin', 'not binary' as never));
    sameAsNiceGrpc((metadata) => metadata.append('text', new Uint8Array([1]) as never));
  });
});
