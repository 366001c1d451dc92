import { describe, expect, it } from 'vitest';
import { recordText } from '../../src/backup/checksum.js';
import { formatDate, formatFloat4, formatFloat8, formatTimestamp, parseDate, parseTimestamp } from '../../src/backup/values.js';

// Expected texts are PostgreSQL 18's output (extra_float_digits = 1, DateStyle ISO, TimeZone UTC).
describe('canonical text of backup values', () => {
  it('prints floats as PostgreSQL does: shortest exact, its exponent form, no interval bound', () => {
    expect(formatFloat8(1e20)).toBe('1e+20');
    expect(formatFloat8(1.5e-7)).toBe('1.5e-07');
    expect(formatFloat8(123456789012345)).toBe('123456789012345');
    expect(formatFloat8(1234567890123456)).toBe('1.234567890123456e+15');
    expect(formatFloat8(0.0001)).toBe('0.0001');
    expect(formatFloat8(-0)).toBe('-0');
    expect(formatFloat8(Number.NaN)).toBe('NaN');
    expect(formatFloat8(-Infinity)).toBe('-Infinity');
    // JavaScript prints the shorter -1.855093873287188e+17, which lies exactly on the interval bound.
    expect(formatFloat8(-1.8550938732871878e17)).toBe('-1.8550938732871878e+17');
    expect(formatFloat4(Math.fround(1234567))).toBe('1.234567e+06');
    expect(formatFloat4(Math.fround(0.1))).toBe('0.1');
    // A tie in the last digit goes to the even one; a bound is never printed.
    expect(formatFloat4(3362005.25)).toBe('3.3620052e+06');
    expect(formatFloat4(-34085888)).toBe('-3.4085888e+07');
  });

  it('round-trips dates and timestamps, BC and infinite ones included', () => {
    for (const d of ['2024-02-29', '0001-01-01 BC', '0044-03-15 BC', '9999-12-31', '12345-01-01', 'infinity', '-infinity']) expect(formatDate(parseDate(d))).toBe(d);
    for (const t of ['2024-02-29 23:59:59.123456', '0044-03-15 12:00:00 BC', '1970-01-01 00:00:00', '1969-12-31 23:59:59.5', 'infinity']) expect(formatTimestamp(parseTimestamp(t, false), false)).toBe(t);
    expect(formatTimestamp(parseTimestamp('1900-06-30 12:34:56.5+00', true), true)).toBe('1900-06-30 12:34:56.5+00');
    // pg_dump's text carries the server's offset; the backup holds UTC.
    expect(formatTimestamp(parseTimestamp('2024-03-31 03:30:00+02', true), true)).toBe('2024-03-31 01:30:00+00');
    expect(formatTimestamp(parseTimestamp('2024-01-01 00:00:00-05:30', true), true)).toBe('2024-01-01 05:30:00+00');
    expect(() => parseTimestamp('2024-01-01', false)).toThrow(/not a timestamp/);
  });

  it('quotes record fields as record_out does', () => {
    expect(recordText(['1', null, '', 'a b', 'x"y\\z', '(,)', 'plain', 'ü\u00a0'])).toBe('(1,,"","a b","x""y\\\\z","(,)",plain,ü\u00a0)');
  });
});
