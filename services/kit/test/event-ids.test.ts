import { describe, expect, it } from 'vitest';
import { EventIdGenerator } from '../src/telemetry/event-ids.js';

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('EventIdGenerator', () => {
  it('makes RFC 9562 version 7 UUIDs whose first 48 bits are the time in milliseconds', () => {
    const ids = new EventIdGenerator();
    const now = Date.UTC(2026, 10, 24, 1, 2, 3, 456);
    const id = ids.next(now);
    expect(id).toMatch(UUID_V7);
    expect(parseInt(id.slice(0, 8) + id.slice(9, 13), 16)).toBe(now);
  });

  it('never repeats an id, within one millisecond or across many', () => {
    const ids = new EventIdGenerator();
    const seen = new Set<string>();
    const now = Date.now();
    for (let i = 0; i < 50_000; i++) seen.add(ids.next(now));
    for (let i = 0; i < 50_000; i++) seen.add(ids.next(now + 1 + (i % 7)));
    expect(seen.size).toBe(100_000);
  });

  it('sorts ids by the time they were made', () => {
    const ids = new EventIdGenerator();
    const earlier = ids.next(1_000_000);
    const later = ids.next(1_000_001);
    expect([later, earlier].sort()).toEqual([earlier, later]);
  });

  it('gives two processes (different random starts) different ids in the same millisecond', () => {
    const a = new EventIdGenerator(Buffer.from('00112233445566778899', 'hex'));
    const b = new EventIdGenerator(Buffer.from('99887766554433221100', 'hex'));
    expect(a.next(5)).not.toBe(b.next(5));
  });

  it('keeps the format when its counter wraps past 48 bits', () => {
    const ids = new EventIdGenerator(Buffer.from('0000ffffffffffffffff', 'hex'));
    const first = ids.next(7);
    const second = ids.next(7);
    expect(first.endsWith('ffffffffffff')).toBe(true);
    expect(second.endsWith('000000000000')).toBe(true);
    expect(second).toMatch(UUID_V7);
  });
});

describe('EventIdGenerator across its 16-bit boundary', () => {
  it('carries into the upper bits without a repeat', () => {
    const ids = new EventIdGenerator(Buffer.from('00000000000000abfffe', 'hex'));
    expect([ids.next(1), ids.next(1), ids.next(1)].map((id) => id.slice(-12))).toEqual(['000000abfffe', '000000abffff', '000000ac0000']);
  });
});
