import { describe, expect, it } from 'vitest';
import { InvalidInputError } from '../../../src/errors.js';
import { minimize, type Param, type Point } from '../../../src/forecasting/tpe.js';

const SPACE: Param[] = [
  { kind: 'float', name: 'rate', low: 1e-4, high: 1, log: true },
  { kind: 'int', name: 'units', low: 4, high: 128, log: true },
  { kind: 'float', name: 'mix', low: -5, high: 5 },
  { kind: 'choice', name: 'cell', values: ['lstm', 'gru', 'rnn'] },
];

/** Minimum 0 at rate 10^-2.5, units 40, mix 1.5, cell gru. */
function bowl(p: Point): number {
  return (Math.log10(p.rate as number) + 2.5) ** 2 + Math.log2((p.units as number) / 40) ** 2 + ((p.mix as number) - 1.5) ** 2 / 4 + (p.cell === 'gru' ? 0 : 0.5);
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

describe('TPE', () => {
  it('finds better points than random search with the same number of trials', async () => {
    const seeds = Array.from({ length: 12 }, (_, i) => i + 1);
    const tpe = await Promise.all(seeds.map(async (seed) => (await minimize(bowl, SPACE, { seed, maxTrials: 50 })).best.value));
    const random = await Promise.all(seeds.map(async (seed) => (await minimize(bowl, SPACE, { seed, maxTrials: 50, startup: 50 })).best.value));
    expect(mean(tpe)).toBeLessThan(0.6 * mean(random));
    expect(mean(tpe)).toBeLessThan(0.5);
  });

  it('keeps every value within its bounds, integers whole, choices from the list', async () => {
    const { trials } = await minimize(bowl, SPACE, { seed: 3, maxTrials: 40 });
    for (const { point } of trials) {
      expect(point.rate).toBeGreaterThanOrEqual(1e-4);
      expect(point.rate).toBeLessThanOrEqual(1);
      expect(Number.isInteger(point.units)).toBe(true);
      expect(point.units).toBeGreaterThanOrEqual(4);
      expect(point.units).toBeLessThanOrEqual(128);
      expect(['lstm', 'gru', 'rnn']).toContain(point.cell);
    }
  });

  it('is deterministic for a seed, and different for another', async () => {
    const a = await minimize(bowl, SPACE, { seed: 7, maxTrials: 20 });
    const b = await minimize(bowl, SPACE, { seed: 7, maxTrials: 20 });
    const c = await minimize(bowl, SPACE, { seed: 8, maxTrials: 20 });
    expect(b.trials.map((t) => t.point)).toEqual(a.trials.map((t) => t.point));
    expect(c.trials.map((t) => t.point)).not.toEqual(a.trials.map((t) => t.point));
  });

  it('evaluates the initial points first, in order', async () => {
    const initial = [
      { rate: 0.01, units: 32, mix: 0, cell: 'lstm' },
      { rate: 0.001, units: 64, mix: 1, cell: 'gru' },
    ];
    const { trials } = await minimize(bowl, SPACE, { initial, maxTrials: 5 });
    expect(trials.slice(0, 2).map((t) => t.point)).toEqual(initial);
    expect(trials).toHaveLength(5);
  });

  it('records a throwing or non-finite objective as a failed trial and goes on', async () => {
    let calls = 0;
    const result = await minimize(
      (p) => {
        calls++;
        if (p.cell === 'rnn') throw new Error('rnn is broken');
        if (p.cell === 'lstm') return NaN;
        return bowl(p);
      },
      SPACE,
      { seed: 2, maxTrials: 30 },
    );
    expect(calls).toBe(30);
    expect(result.trials.some((t) => t.error === 'rnn is broken' && t.value === Infinity)).toBe(true);
    expect(result.trials.some((t) => t.point.cell === 'lstm' && t.value === Infinity && t.error === undefined)).toBe(true);
    expect(result.best.point.cell).toBe('gru');
    expect(Number.isFinite(result.best.value)).toBe(true);
    // Failures are "bad": most trials after the random start choose the cell that works.
    expect(result.trials.slice(10).filter((t) => t.point.cell === 'gru').length).toBeGreaterThan(10);
  });

  it('starts no trial past the deadline, but always runs one', async () => {
    const slow = async (p: Point) => {
      await new Promise((r) => setTimeout(r, 20));
      return bowl(p);
    };
    expect((await minimize(slow, SPACE, { deadline: performance.now() - 1 })).trials).toHaveLength(1);
    const t0 = performance.now();
    const { trials } = await minimize(slow, SPACE, { deadline: t0 + 200 });
    expect(trials.length).toBeGreaterThan(2);
    expect(trials.length).toBeLessThanOrEqual(11);
    expect(performance.now() - t0).toBeLessThan(200 + 80);
  });

  it('refuses a bad space or initial point before evaluating anything', async () => {
    let calls = 0;
    const f = () => ++calls;
    const bad: [Param[], RegExp][] = [
      [[], /empty/],
      [[SPACE[0]!, SPACE[0]!], /rate appears twice/],
      [[{ kind: 'float', name: 'x', low: 0, high: 1, log: true }], /x is searched in log space and needs low > 0/],
      [[{ kind: 'float', name: 'x', low: 2, high: 1 }], /x needs finite low <= high/],
      [[{ kind: 'int', name: 'n', low: 1.5, high: 3 }], /integer parameter n needs integer bounds/],
      [[{ kind: 'choice', name: 'c', values: [] }], /c has no values/],
    ];
    for (const [space, message] of bad) await expect(minimize(f, space)).rejects.toThrow(message);
    await expect(minimize(f, SPACE, { initial: [{ rate: 2, units: 8, mix: 0, cell: 'gru' }] })).rejects.toThrow(InvalidInputError);
    await expect(minimize(f, SPACE, { initial: [{ rate: 0.1, units: 8.5, mix: 0, cell: 'gru' }] })).rejects.toThrow(/8.5 is not a valid value of units/);
    expect(calls).toBe(0);
  });
});
