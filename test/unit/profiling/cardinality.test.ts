import { describe, expect, it } from 'vitest';
import { CardinalityModel, numericValue, qError, type CardinalityStatistics } from '../../../src/profiling/cardinality.js';
import { loadQueryParser, templateOf } from '../../../src/profiling/templates.js';
import { percentile } from '../../../src/movement/governor.js';
import { rng } from '../../helpers/random.js';

/** A table of 1M rows: `a` uniform over 0 … 1000 (histogram), `k` with 100 distinct values and one heavy (10 %), `b` = a / 10 (correlated). */
const stats: CardinalityStatistics = {
  t: {
    rows: 1_000_000,
    columns: {
      a: { nullFraction: 0, distinct: 1000, mostCommon: [], histogram: Array.from({ length: 101 }, (_, i) => i * 10) },
      k: { nullFraction: 0, distinct: 100, mostCommon: [{ value: '7', frequency: 0.1 }], histogram: [] },
      b: { nullFraction: 0, distinct: 100, mostCommon: [], histogram: Array.from({ length: 101 }, (_, i) => i) },
    },
  },
};

describe('cardinality model', () => {
  it('q-error: max over min, both floored at 1, symmetric', () => {
    expect(qError(10, 100)).toBe(10);
    expect(qError(100, 10)).toBe(10);
    expect(qError(0, 0)).toBe(1);
    expect(qError(0.2, 5)).toBe(5);
    expect(qError(42, 42)).toBe(1);
  });

  it('constants as numbers: integers, decimals, dates and PostgreSQL timestamps (UTC without a zone)', () => {
    expect(numericValue('42')).toBe(42);
    expect(numericValue('-1.5e3')).toBe(-1500);
    expect(numericValue('2026-01-02')).toBe(Date.parse('2026-01-02T00:00:00Z'));
    expect(numericValue('2026-01-02 03:00:00+00')).toBe(Date.parse('2026-01-02T03:00:00Z'));
    expect(numericValue('2026-01-02 03:00:00')).toBe(Date.parse('2026-01-02T03:00:00Z'));
    expect(numericValue('active')).toBeNull();
  });

  it('before any observation: the independence estimate from the statistics', async () => {
    await loadQueryParser();
    const m = new CardinalityModel(stats);
    // A width of 10 % of a's histogram; the heavy value's frequency; the rest's share per distinct value.
    expect(m.predict(templateOf('select * from t where a >= 100 and a < 200'))).toBeCloseTo(100_000, -2);
    expect(m.predict(templateOf('select * from t where k = 7'))).toBeCloseTo(100_000, -2);
    expect(m.predict(templateOf('select * from t where k = 8'))).toBeCloseTo(900_000 / 99, -1);
    expect(m.predict(templateOf('select * from t where k in (7, 8)'))).toBeCloseTo(100_000 + 900_000 / 99, -2);
  });

  it('learns a known synthetic relation (a correlated pair, a one-sided range) and predicts held-out constants (q-error under 2 each, median under 1.2)', async () => {
    await loadQueryParser();
    const r = rng(3);
    // b = a / 10: `a between x and y and b between x/10 and y/10` returns the rows of a's range alone.
    const correlated = () => {
      const lo = Math.floor(r() * 900);
      const w = 5 + Math.floor(r() * 95);
      return { sql: `select * from t where a between ${lo} and ${lo + w} and b between ${lo / 10} and ${(lo + w) / 10}`, rows: (w / 1000) * 1e6 };
    };
    // `a > x`: the rows above x (the model must learn which side a one-sided range keeps).
    const above = () => {
      const x = Math.floor(r() * 1000);
      return { sql: `select * from t where a > ${x}`, rows: ((1000 - x) / 1000) * 1e6 };
    };
    const m = new CardinalityModel(stats);
    const independent = new CardinalityModel(stats);
    for (let i = 0; i < 200; i++) for (const make of [correlated, above]) {
      const s = make();
      m.observe(templateOf(s.sql), s.rows);
    }
    expect(m.observed).toBe(400);
    const qs: number[] = [];
    for (let i = 0; i < 50; i++) {
      for (const make of [correlated, above]) {
        const s = make();
        const tpl = templateOf(s.sql);
        qs.push(qError(m.predict(tpl), s.rows));
        expect(qs.at(-1), s.sql).toBeLessThan(2);
        if (make === correlated) expect(qError(independent.predict(tpl), s.rows)).toBeGreaterThan(5);
      }
    }
    expect(percentile(qs, 50)).toBeLessThan(1.2);
    expect(percentile(qs, 90)).toBeLessThan(1.5);
  });

  it('deterministic, and of fixed memory whatever it observes', async () => {
    await loadQueryParser();
    const train = (m: CardinalityModel) => {
      const r = rng(11);
      for (let i = 0; i < 300; i++) {
        const k = 1 + Math.floor(r() * 99);
        m.observe(templateOf(`select * from t where k = ${k}`), k * 100);
      }
    };
    const a = new CardinalityModel(stats);
    const b = new CardinalityModel(stats);
    const bytes = a.bytes();
    train(a);
    train(b);
    expect(a.bytes()).toBe(bytes);
    const q = templateOf('select * from t where k = 50');
    expect(a.predict(q)).toBe(b.predict(q));
    // The per-value tokens learn the heavy values seen: k = 50 returned 5000 rows, not the average 9091.
    expect(qError(a.predict(q), 5000)).toBeLessThan(1.5);
  });

  it('bad input is refused with a clear error', () => {
    expect(() => new CardinalityModel(stats, { dimensions: 3 })).toThrow(/dimensions: expected a whole number from 16 to 4096, got 3/);
    expect(() => new CardinalityModel(stats, { lambda: -1 })).toThrow(/lambda: expected a positive number/);
    const m = new CardinalityModel(stats);
    expect(() => m.observe({ features: { kind: 'select', tables: ['t'], predicates: [], joins: [], inserted: [], insertedRows: 0, setColumns: [] } }, Number.NaN)).toThrow(/rows observed must be a number ≥ 0/);
    expect(m.observed).toBe(0);
  });
});
