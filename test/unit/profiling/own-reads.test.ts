import { describe, expect, it } from 'vitest';
import { placeOwnReads, type SampleRow } from '../../../src/profiling/series.js';

/**
 * A movement's reads are subtracted in the sample interval whose counter took them in, not merely the
 * first one after the record's time: the record is made just before its transaction's counts reach
 * the statistics, and a sample can fall in between.
 */
const stream = (points: Array<[number, number]>, epoch = 0): SampleRow[] => points.map(([t, value]) => ({ node_id: '1', key: 's.t', relid: '7', t, value, epoch }));
const read = (e: number, amount: number) => ({ node_id: '1', key: 's.t', e, amount });

describe('placeOwnReads', () => {
  it('subtracts in the interval the counter grew by the reads, one after the record when they arrived late', () => {
    const samples = stream([[0, 0], [1000, 10], [2000, 120_020], [3000, 120_030]]);
    // Recorded at 900 ms, counted between 1000 and 2000 ms.
    const [iv] = placeOwnReads([read(900, 120_000)], new Map([['1/s.t/7', samples]]));
    expect(iv).toEqual({ start: 1000, end: 2000, rate: 120_000 });
  });

  it('does not subtract reads the stream never counted (it ended before they were flushed)', () => {
    // The split's verify read 120 000 tuples, recorded at 1900 ms; the source was retired after the 2000 ms sample.
    const samples = stream([[0, 0], [1000, 10], [2000, 20]]);
    expect(placeOwnReads([read(1900, 120_000)], new Map([['1/s.t/7', samples]]))).toEqual([]);
  });

  it('places two records counted in one jump in the same interval, and a third in the next that grew enough', () => {
    const samples = stream([[0, 0], [1000, 260_010], [2000, 260_020], [3000, 380_030]]);
    const out = placeOwnReads([read(500, 139_820), read(600, 120_189), read(1500, 120_000)], new Map([['1/s.t/7', samples]]));
    expect(out.map((iv) => [iv.start, iv.end])).toEqual([[0, 1000], [0, 1000], [2000, 3000]]);
  });

  it('skips an interval across a statistics reset, and a stream of another table', () => {
    const reset = stream([[0, 500], [1000, 100_000]]).map((r, i) => ({ ...r, epoch: i === 0 ? 0 : 900 }));
    expect(placeOwnReads([read(500, 50_000)], new Map([['1/s.t/7', reset]]))).toEqual([]);
    const other = stream([[0, 0], [1000, 100_000]]).map((r) => ({ ...r, key: 's.u' }));
    expect(placeOwnReads([read(500, 50_000)], new Map([['1/s.u/8', other]]))).toEqual([]);
  });
});
