import { describe, expect, it } from 'vitest';
import { svgChart, terminalChart, type ChartData } from '../../../cli/chart.js';
import { batchSummary, batches, describeSummary, runBounded, runInBatches, summarise } from '../../../src/forecasting/runs.js';

describe('forecasting runs', () => {
  it('batches, runs at most `parallel` at once, and counts outcomes', async () => {
    expect(batches([1, 2, 3, 4, 5], 2)).toEqual([[1, 2], [3, 4], [5]]);
    let running = 0;
    let most = 0;
    const results = await runBounded(batches([1, 2, 3, 4, 5, 6, 7], 2), 2, async (b) => {
      most = Math.max(most, ++running);
      await new Promise((r) => setTimeout(r, 5));
      running--;
      return b;
    }, () => undefined);
    expect(results.sort()).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(most).toBe(2);
    const s = summarise('retrain', '2030-01-01T00:00:00.000Z', 3, [
      { series: 'a', status: 'trained' },
      { series: 'b', status: 'fallback' },
      { series: 'c', status: 'failed', error: 'boom' },
    ]);
    expect(s).toMatchObject({ trained: 1, fallback: 1, failed: 1, failures: [{ series: 'c', error: 'boom' }] });
    expect(describeSummary(s)).toBe('3 of 3 series done: 1 trained, 1 fell back, 1 failed');
  });

  it('runs a whole run in batches, reporting progress after each and the summary last', async () => {
    const lines: string[] = [];
    const seen: string[][] = [];
    const summary = await runInBatches('forecast', '2030-01-01T00:00:00.000Z', ['a', 'b', 'c'], { batchSize: 2, parallelBatches: 1 }, async (batch) => {
      seen.push(batch);
      return batch.map((series) => (series === 'c' ? { series, status: 'failed' as const, error: 'no model' } : { series, status: 'forecast' as const }));
    }, (line) => lines.push(line));
    expect(seen).toEqual([['a', 'b'], ['c']]);
    expect(summary).toMatchObject({ kind: 'forecast', series: 3, forecast: 2, failed: 1, failures: [{ series: 'c', error: 'no model' }] });
    expect(lines).toEqual(['2 of 3 series done: 2 forecast, 0 failed', '3 of 3 series done: 2 forecast, 1 failed', '3 of 3 series done: 2 forecast, 1 failed']);
    expect(batchSummary('train', ['x', 'y'])).toBe('train 2 series: x …');
    expect(batchSummary('train', ['x'])).toBe('train 1 series: x');
  });
});

describe('forecast chart', () => {
  const t0 = Date.UTC(2030, 0, 1, 12);
  const data: ChartData = {
    title: 'table:orders:inserts',
    history: Array.from({ length: 24 }, (_, i) => ({ ts: new Date(t0 + i * 300_000), value: i === 5 ? null : 100 + i })),
    forecast: Array.from({ length: 12 }, (_, i) => ({ ts: new Date(t0 + (24 + i) * 300_000), yhat: 124 + i, lo80: 120 + i, hi80: 128 + i, lo95: 115 + i, hi95: 133 + i })),
  };

  it('draws history, forecast and both intervals in the terminal', () => {
    const text = terminalChart(data, 72, 12);
    expect(text.split('\n')[0]).toBe('table:orders:inserts');
    expect(text).toContain('*');
    expect(text).toContain('o');
    expect(text).toContain('|');
    expect(text).toContain(':');
    expect(text).toMatch(/12:00 +14:55 UTC/);
  });

  it('writes an SVG with the history (split at gaps), the forecast and the two bands', () => {
    const svg = svgChart(data);
    expect(svg).toMatch(/^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    expect(svg.match(/<polygon /g)).toHaveLength(2);
    expect(svg.match(/<polyline /g)).toHaveLength(3); // two history runs around the gap, one forecast
    expect(svg.trim().endsWith('</svg>')).toBe(true);
  });
});
