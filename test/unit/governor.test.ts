import { describe, expect, it } from 'vitest';
import { baselineOf, DEFAULT_GOVERNOR, DUTY, Governor, judge, nextDuty, pauseAfter, paceApply, percentile, resolveGovernor } from '../../src/movement/governor.js';
import { InvalidInputError } from '../../src/errors.js';

describe('copy governor decisions', () => {
  it('percentile is nearest-rank, NaN without samples', () => {
    expect(percentile([5, 1, 3, 2, 4], 50)).toBe(3);
    expect(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90)).toBe(9);
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([], 90)).toBeNaN();
  });

  it('the baseline is the p90 of the idle probes, never below the floor', () => {
    expect(baselineOf([1, 9, 2, 2, 2, 2, 2, 2, 2, 2], { minBaselineMs: 0.5 })).toBe(2);
    expect(baselineOf([1, 1, 1, 1, 1, 1, 1, 1, 3, 9], { minBaselineMs: 0.5 })).toBe(3);
    expect(baselineOf([0.1, 0.2, 0.1], { minBaselineMs: 0.5 })).toBe(0.5);
    expect(baselineOf([], { minBaselineMs: 0.5 })).toBe(0.5);
  });

  it('overloaded when the recent p90 exceeds ratio × baseline; one slow probe among ten is not enough', () => {
    const settings = { latencyRatio: 1.5, probeIntervalMs: 100 };
    expect(judge([1, 1, 1, 1, 1, 1, 1, 1, 1, 1.4], 1, settings).overloaded).toBe(false);
    expect(judge([1, 1, 1, 1, 1, 1, 1, 1, 1, 50], 1, settings).overloaded).toBe(false);
    expect(judge([1, 1, 1, 1, 1, 1, 1, 1, 2, 2], 1, settings)).toEqual({ overloaded: true, p90: 2, limitMs: 1.5 });
    expect(judge([], 1, settings).overloaded).toBe(false);
    // A probe stuck past the limit and one probe interval: overloaded at once, however fast the others were.
    expect(judge([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 1, settings, 150).overloaded).toBe(true);
    expect(judge([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 1, settings, 50).overloaded).toBe(false);
  });

  it('the duty cycle is cut when overloaded, at most once per probe window, and grows back steadily within the limit', () => {
    expect(DUTY.cut).toBeLessThan(1);
    // Overloaded, and the last cut a full window ago: cut.
    expect(nextDuty(0.8, true, 20, 500, 500)).toBeCloseTo(0.8 * DUTY.cut);
    // Cut 100 ms ago: the probes have not seen that cut yet, so no second one.
    expect(nextDuty(0.4, true, 20, 100, 500)).toBe(0.4);
    // Never below the floor, however long overloaded.
    let duty = 1;
    for (let i = 0; i < 50; i++) duty = nextDuty(duty, true, 20, 1000, 500);
    expect(duty).toBe(DUTY.min);
    // Within the limit: grows with the time, up to full speed.
    expect(nextDuty(0.2, false, 1000, 0, 500)).toBeCloseTo(0.2 + DUTY.growthPerSecond);
    expect(nextDuty(0.2, false, 100, 0, 500)).toBeCloseTo(0.2 + DUTY.growthPerSecond / 10);
    expect(nextDuty(0.9, false, 2000, 0, 500)).toBe(1);
  });

  it('the pause after a chunk makes copying take the duty share of the time, capped by maxPauseMs', () => {
    const s = { maxPauseMs: 500 };
    expect(pauseAfter(30, 0.5, s)).toBe(30);
    expect(pauseAfter(30, 0.25, s)).toBe(90);
    expect(pauseAfter(30, 1, s)).toBe(0);
    expect(pauseAfter(30, 0.02, s)).toBe(500);
  });

  it('apply is paced only while the foreground suffers and the lag is within its bound', () => {
    const s = { maxLagBytes: 1000 };
    expect(paceApply(true, 500, s)).toBe(true);
    expect(paceApply(true, 5000, s)).toBe(false);
    expect(paceApply(false, 500, s)).toBe(false);
    expect(paceApply(true, null, s)).toBe(false);
  });

  it('settings: per-movement values over the defaults; a bad value is refused with its name', () => {
    expect(resolveGovernor(undefined)).toEqual(DEFAULT_GOVERNOR);
    expect(resolveGovernor({ latencyRatio: 2, enabled: undefined })).toEqual({ ...DEFAULT_GOVERNOR, latencyRatio: 2 });
    expect(() => resolveGovernor({ latencyRatio: 0.5 })).toThrow(InvalidInputError);
    expect(() => resolveGovernor({ latencyRatio: 0.5 })).toThrow(/latencyRatio must be a number from 1 to 100/);
    expect(() => resolveGovernor({ chunkRows: 0 })).toThrow(/chunkRows/);
    expect(() => resolveGovernor({ enabled: 'yes' as unknown as boolean })).toThrow(/enabled must be true or false/);
  });

  it('paces within a chunk: after each piece, a pause that keeps the work to its share of the time', async () => {
    const g = new Governor(DEFAULT_GOVERNOR, []); // no node: never overloaded, the duty only grows from its start
    await g.piece(); // the first piece starts the clock
    const busyUntil = performance.now() + 40;
    while (performance.now() < busyUntil); // 40 ms of work
    await g.piece();
    // At a duty of about 0.5, the pause matches the work (a little less, as the duty grows within the limit).
    expect(g.stats.throttledMs).toBeGreaterThan(30);
    expect(g.stats.throttledMs).toBeLessThan(250);
    const off = new Governor({ ...DEFAULT_GOVERNOR, enabled: false }, []);
    await off.piece();
    await off.piece();
    expect(off.stats.throttledMs).toBe(0);
  });
});
