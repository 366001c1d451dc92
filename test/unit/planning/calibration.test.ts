import { describe, expect, it } from 'vitest';
import { InvalidInputError } from '../../../src/errors.js';
import { DEFAULT_MOVE_DURATION, calibrateCapacity, learnMoveDuration, moveSeconds } from '../../../src/planning/index.js';

/** A node whose CPU is 10% idle plus 0.06% per load unit, with a little deterministic noise. */
function samples(n: number, outliers = 0) {
  return Array.from({ length: n }, (_, i) => {
    const load = 100 + (i * 53) % 700;
    const noise = ((i * 7919) % 11) / 10 - 0.5;
    return { load, cpuPercent: i < outliers ? 99 : 10 + 0.06 * load + noise };
  });
}

describe('calibrateCapacity', () => {
  it('finds the load at which CPU reaches the target, robust to outliers', () => {
    // 70% CPU at (70 − 10) / 0.06 = 1000 load units: capacity 1000 / 0.7.
    for (const outliers of [0, 4]) {
      const est = calibrateCapacity(samples(40, outliers));
      expect(est.status).toBe('calibrated');
      if (est.status !== 'calibrated') return;
      expect(est.capacity * 0.7).toBeGreaterThan(980);
      expect(est.capacity * 0.7).toBeLessThan(1020);
      expect(est.idleCpuPercent).toBeCloseTo(10, 0);
      expect(est.extrapolated).toBe(false);
    }
  });

  it('lets the catalog override win', () => {
    expect(calibrateCapacity(samples(40), { override: 2500 })).toMatchObject({ status: 'override', capacity: 2500 });
    expect(() => calibrateCapacity(samples(40), { override: -1 })).toThrow(InvalidInputError);
  });

  it('refuses too few or degenerate samples, saying why', () => {
    expect(calibrateCapacity(samples(5))).toMatchObject({ status: 'insufficient', detail: '5 usable samples, at least 12 needed' });
    const flat = Array.from({ length: 20 }, (_, i) => ({ load: 500, cpuPercent: 40 + (i % 3) }));
    expect(calibrateCapacity(flat)).toMatchObject({ status: 'insufficient', detail: expect.stringMatching(/load barely varies/) });
    const falling = samples(20).map((s) => ({ load: s.load, cpuPercent: 80 - 0.05 * s.load }));
    expect(calibrateCapacity(falling)).toMatchObject({ status: 'insufficient', detail: 'CPU does not rise with load in the samples' });
  });

  it('flags a capacity far beyond the observed load', () => {
    const light = Array.from({ length: 20 }, (_, i) => ({ load: 10 + i, cpuPercent: 5 + 0.1 * (10 + i) }));
    const est = calibrateCapacity(light);
    expect(est).toMatchObject({ status: 'calibrated', extrapolated: true });
  });
});

describe('learnMoveDuration', () => {
  it('learns a throughput with a margin: every past movement would have been predicted to take at least as long', () => {
    const history = Array.from({ length: 12 }, (_, i) => {
      const bytes = (1 + i) * 500e6;
      const rate = 50e6 * (0.8 + ((i * 5) % 7) / 15);
      return { bytes, seconds: 20 + bytes / rate };
    });
    const model = learnMoveDuration(history);
    expect(model.basis).toMatch(/learned from 12 movements/);
    expect(model.bytesPerSecond).toBeLessThan(50e6);
    const covered = history.filter((m) => moveSeconds(model, m.bytes) >= m.seconds).length;
    expect(covered / history.length).toBeGreaterThanOrEqual(0.9);
    // Not absurdly slow either: within 2× of the slowest movement.
    for (const m of history) expect(moveSeconds(model, m.bytes)).toBeLessThan(2 * m.seconds);
  });

  it('falls back to the default without enough history', () => {
    const model = learnMoveDuration([{ bytes: 1e9, seconds: 30 }]);
    expect(model.bytesPerSecond).toBe(DEFAULT_MOVE_DURATION.bytesPerSecond);
    expect(model.basis).toMatch(/default .*1 usable movements, 3 needed/);
    expect(moveSeconds(model, 16 * 2 ** 20 * 10)).toBeCloseTo((30 + 10) * 1.5);
  });
});
