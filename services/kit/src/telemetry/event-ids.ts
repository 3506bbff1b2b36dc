import { randomBytes } from 'node:crypto';

/** Two hex digits for every byte value. */
const HEX_BYTES = Array.from({ length: 256 }, (_, value) => value.toString(16).padStart(2, '0'));

/**
 * Event ids as UUIDv7 (RFC 9562): 48 bits of Unix time in milliseconds, then 74 bits that start
 * random in each process and count up (the RFC's "monotonic random" method). Ids are unique,
 * sort by time, and cost no random bytes per event (`randomUUID()` refills its pool of random
 * bytes with a system call, a visible share of an event's cost in the chain's profile). The hex of the counter's upper 32 bits is kept between
 * ids, because turning numbers past 2^31 into hex is slow.
 */
export class EventIdGenerator {
  private lastMs = -1;
  private timeHex = '';
  /** `-7xxx-yxxx-` after the time: version, 12 random bits, variant, 14 random bits. */
  private readonly middle: string;
  /** The last 48 bits, as upper 32 and lower 16. */
  private high: number;
  private highHex: string;
  private low: number;

  constructor(random: Buffer = randomBytes(10)) {
    const randA = ((random[0]! << 8) | random[1]!) & 0x0fff;
    const randB = (((random[2]! << 8) | random[3]!) & 0x3fff) | 0x8000;
    this.middle = `-7${hex(randA, 3)}-${hex(randB, 4)}-`;
    this.high = random.readUInt32BE(4);
    this.highHex = hex(this.high, 8);
    this.low = random.readUInt16BE(8);
  }

  next(now = Date.now()): string {
    if (now !== this.lastMs) {
      this.lastMs = now;
      const time = hex(now % 2 ** 48, 12);
      this.timeHex = `${time.slice(0, 8)}-${time.slice(8)}`;
    }
    const id = this.timeHex + this.middle + this.highHex + HEX_BYTES[this.low >> 8]! + HEX_BYTES[this.low & 0xff]!;
    if (++this.low === 0x10000) {
      this.low = 0;
      this.high = (this.high + 1) % 2 ** 32;
      this.highHex = hex(this.high, 8);
    }
    return id;
  }
}

function hex(value: number, digits: number): string {
  return value.toString(16).padStart(digits, '0');
}
