import { uniforms } from '../../../src/forecasting/random.js';
import type { Observation } from '../../../src/forecasting/series.js';

/** Deterministic standard normals (mulberry32 + Box–Muller). */
export function normals(seed: number): () => number {
  const uniform = uniforms(seed);
  return () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
}

export const T0 = Date.UTC(2024, 0, 1);

/** Rows at `stepSeconds` from T0 (2024-01-01 UTC). */
export function rowsOf(values: readonly number[], stepSeconds = 3600): Observation[] {
  return values.map((value, i) => ({ time: T0 + i * stepSeconds * 1000, value }));
}

/** A daily sine of `days` days at `stepSeconds`, level 100, amplitude 20. */
export function dailySine(days: number, stepSeconds = 3600): number[] {
  const perDay = 86_400 / stepSeconds;
  return Array.from({ length: days * perDay }, (_, t) => 100 + 20 * Math.sin((2 * Math.PI * t) / perDay));
}

/** CSV text of rows (timestamps ISO-8601 UTC). */
export function csvOf(rows: readonly Observation[]): string {
  return ['timestamp,value', ...rows.map((r) => `${new Date(r.time).toISOString()},${r.value}`)].join('\n');
}
