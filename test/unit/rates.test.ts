import { describe, expect, it } from 'vitest';
import { parseHost } from '../../src/profiling/collector.js';
import { addBuckets, combineStreams, counterRates, resample } from '../../src/profiling/rates.js';

const s = (t: number, value: number, epoch = 0) => ({ t: t * 1000, value, epoch: epoch * 1000 });

describe('counterRates', () => {
  it('turns counters into per-second rates', () => {
    expect(counterRates([s(0, 0), s(10, 100), s(20, 300)])).toEqual([
      { start: 0, end: 10_000, rate: 10 },
      { start: 10_000, end: 20_000, rate: 20 },
    ]);
  });

  it('a reset with a known time counts from the reset, not a spike nor a negative rate', () => {
    // pg_stat_reset at t=15: the counter restarts from 0 and reads 50 at t=20.
    expect(counterRates([s(0, 0), s(10, 1000), s(20, 50, 15)])).toEqual([
      { start: 0, end: 10_000, rate: 100 },
      { start: 15_000, end: 20_000, rate: 10 },
    ]);
  });

  it('a counter that goes down without a known reset time leaves that interval out', () => {
    expect(counterRates([s(0, 500), s(10, 600), s(20, 40), s(30, 140)]).map((r) => r.rate)).toEqual([10, 10]);
  });

  it('skips duplicate or out-of-order timestamps and non-finite values', () => {
    expect(counterRates([s(0, 0), s(0, 10), s(10, Number.NaN), s(20, 40)]).map((r) => r.rate)).toEqual([]);
  });
});

describe('resample', () => {
  it('time-weights rates into buckets and marks empty buckets missing', () => {
    const buckets = resample(
      [
        { start: 0, end: 100, rate: 10 },
        { start: 100, end: 200, rate: 30 },
        { start: 350, end: 400, rate: 5 },
      ],
      0,
      400,
      200,
    );
    expect(buckets).toEqual([20, 5]);
    expect(resample([{ start: 0, end: 100, rate: 1 }], 0, 600, 200)).toEqual([1, null, null]);
  });

  it('sums streams, missing only where every stream is', () => {
    expect(addBuckets([[1, null, null], [2, 3, null]])).toEqual([3, 3, null]);
  });
});

describe('combineStreams', () => {
  it('adds the rates of streams side by side (a table on several nodes)', () => {
    const a = [{ start: 0, end: 100, rate: 2 }];
    const b = [{ start: 0, end: 100, rate: 3 }];
    expect(combineStreams([a, b], 0, 100, 100)).toEqual([5]);
  });

  it('averages streams that follow one another (a shard moved mid-bucket), not the sum of their averages', () => {
    const source = [{ start: 0, end: 40, rate: 10 }];
    const target = [{ start: 50, end: 100, rate: 10 }]; // the 10 ms between the two are not covered
    expect(combineStreams([source, target], 0, 100, 100)).toEqual([10]);
    // The old way (each stream's bucket average, summed) said 20.
    expect(addBuckets([resample(source, 0, 100, 100), resample(target, 0, 100, 100)])).toEqual([20]);
  });

  it('subtracts a movement\'s reads within the covered time, never below zero; uncovered buckets stay null', () => {
    const stream = [{ start: 0, end: 200, rate: 10 }];
    expect(combineStreams([stream], 0, 300, 100, [{ start: 0, end: 100, rate: 4 }])).toEqual([6, 10, null]);
    expect(combineStreams([stream], 0, 300, 100, [{ start: 100, end: 200, rate: 50 }])).toEqual([10, 0, null]);
    expect(combineStreams([], 0, 100, 100, [{ start: 0, end: 100, rate: 4 }])).toEqual([null]);
  });
});

describe('parseHost', () => {
  it('reads CPU, memory and whole-disk sectors from /proc text', () => {
    const stat = 'cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n';
    const meminfo = 'MemTotal:       24000000 kB\nMemFree:  1000 kB\nMemAvailable:   12000000 kB\n';
    const diskstats = '   8       0 sda 10 0 2000 0 5 0 4000 0 0 0 0\n   8       1 sda1 10 0 1999 0 5 0 3999 0 0 0 0\n   7       0 loop0 1 0 8 0 0 0 0 0 0 0 0\n';
    expect(parseHost(stat, meminfo, diskstats)).toEqual({ cpuBusy: 150, cpuTotal: 1000, memTotalKb: 24000000, memAvailableKb: 12000000, diskReadSectors: 2000, diskWriteSectors: 4000 });
  });
});
