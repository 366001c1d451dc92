import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InvalidInputError } from '../../../src/errors.js';
import { cleanSeries, inferStepSeconds, parseCsv, parseTimestamp, readSeriesCsv, seasonLengths, sortAndDedupe } from '../../../src/forecasting/series.js';
import { T0, csvOf, rowsOf } from './synthetic.js';

describe('parseTimestamp', () => {
  it('reads ISO-8601 in UTC, with offsets, seconds and fractions optional', () => {
    expect(parseTimestamp('2024-01-01T00:00:00Z')).toBe(T0);
    expect(parseTimestamp('2024-01-01T00:00Z')).toBe(T0);
    expect(parseTimestamp('2024-01-01 00:00:00')).toBe(T0);
    expect(parseTimestamp('2024-01-01T02:00:00+02:00')).toBe(T0);
    expect(parseTimestamp('2023-12-31T19:00:00.000-0500')).toBe(T0);
    expect(parseTimestamp('2024-01-01T00:00:00.250Z')).toBe(T0 + 250);
  });

  it('refuses what is not a real date-time', () => {
    for (const bad of ['x', '2024-02-30T00:00:00Z', '2024-13-01T00:00:00Z', '2024-01-01T24:00:00Z', '1704067200', '2024-01-01']) {
      expect(parseTimestamp(bad), bad).toBeUndefined();
    }
  });
});

describe('parseCsv', () => {
  it('reads rows after the header, with CRLF, quotes, a BOM and blank lines', () => {
    const rows = parseCsv('\uFEFF"timestamp","value"\r\n2024-01-01T00:00:00Z,1.5\r\n\r\n"2024-01-01T01:00:00Z","-2"\r\n');
    expect(rows).toEqual([
      { time: T0, value: 1.5 },
      { time: T0 + 3_600_000, value: -2 },
    ]);
  });

  it('reads NaN, null and empty values as missing (NaN)', () => {
    const rows = parseCsv('timestamp,value\n2024-01-01T00:00:00Z,NaN\n2024-01-01T01:00:00Z,\n2024-01-01T02:00:00Z,null\n2024-01-01T03:00:00Z,""\n');
    expect(rows.map((r) => r.value)).toEqual([NaN, NaN, NaN, NaN]);
  });

  it('accepts plain decimals only: hex, exponents, infinities and separators are refused with the line', () => {
    const body = (value: string) => `timestamp,value\n2024-01-01T00:00:00Z,1\n2024-01-01T01:00:00Z,${value}\n`;
    expect(parseCsv(body('-0.5')).map((r) => r.value)).toEqual([1, -0.5]);
    expect(parseCsv(body('+.25')).map((r) => r.value)).toEqual([1, 0.25]);
    expect(parseCsv(body('7.')).map((r) => r.value)).toEqual([1, 7]);
    for (const bad of ['0x10', '1e3', '1E-2', 'Infinity', '-Infinity', 'inf', '1_000', '0b1', '0o7', '1.2.3', '- 1', '.']) {
      expect(() => parseCsv(body(bad)), bad).toThrow(`line 3: value ${JSON.stringify(bad)} is not a decimal number`);
    }
    expect(() => parseCsv(body('9'.repeat(400)))).toThrow(/^line 3: value "9+" is too large$/);
  });

  it('reads RFC 4180 quoted fields: commas, doubled quotes and line breaks inside quotes; lines counted right', () => {
    const text = 'timestamp,value\r\n"2024-01-01T00:00:00Z","1"\r\n"2024-01-01T01:00:00Z" , " 2 "\n';
    expect(parseCsv(text).map((r) => r.value)).toEqual([1, 2]);
    // A quoted value spanning lines: the error names the line the record starts on, and later lines stay right.
    expect(() => parseCsv('timestamp,value\n"2024-01-01T00:00:00Z","1\n2"\n')).toThrow('line 2: value "1\\n2" is not a decimal number');
    expect(() => parseCsv('timestamp,value\n"2024-01-01T00:00:00Z","1\r\n"\n2024-01-01T01:00:00Z,x\n')).toThrow('line 4: value "x" is not a decimal number');
    expect(() => parseCsv('timestamp,value\n"2024-01-01T00:00:00Z","a,b"\n')).toThrow('line 2: value "a,b" is not a decimal number');
    expect(() => parseCsv('timestamp,value\n2024-01-01T00:00:00Z,"1"\n\n2024-01-01T01:00:00Z,"say ""hi"""\n')).toThrow('line 4: value "say \\"hi\\"" is not a decimal number');
    expect(() => parseCsv('timestamp,value\n2024-01-01T00:00:00Z,"1\n')).toThrow('line 2: a quoted field is not closed');
    expect(() => parseCsv('timestamp,value\n2024-01-01T00:00:00Z,"1"x\n')).toThrow('line 2: text after the closing quote of a field');
    expect(() => parseCsv('timestamp,value\n2024-01-01T00:00:00Z,1"\n')).toThrow('line 2: a quote inside an unquoted field');
    expect(() => parseCsv('timestamp,value\n"2024-01-01T00:00:00Z",1,"a,b"\n')).toThrow('line 2: expected 2 columns (timestamp,value), got 3');
  });

  it('names the line of a bad row', () => {
    const body = (row: string) => `timestamp,value\n2024-01-01T00:00:00Z,1\n${row}\n`;
    expect(() => parseCsv(body('x,3'))).toThrow('line 3: timestamp "x" is not ISO-8601');
    expect(() => parseCsv(body('2024-01-01T01:00:00Z,abc'))).toThrow('line 3: value "abc" is not a decimal number');
    expect(() => parseCsv(body('2024-01-01T01:00:00Z,1,2'))).toThrow('line 3: expected 2 columns (timestamp,value), got 3');
    expect(() => parseCsv(body('2024-02-30T01:00:00Z,1'))).toThrow(InvalidInputError);
  });

  it('requires the header', () => {
    expect(() => parseCsv('2024-01-01T00:00:00Z,1\n')).toThrow('line 1: expected the header "timestamp,value"');
    expect(() => parseCsv('')).toThrow('line 1');
    expect(() => parseCsv('time,value\n')).toThrow('line 1');
  });

  it('reads files, naming the file in errors', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shardcast-series-'));
    writeFileSync(join(dir, 'ok.csv'), csvOf(rowsOf([1, 2, 3])));
    writeFileSync(join(dir, 'bad.csv'), 'timestamp,value\nyesterday,1\n');
    await expect(readSeriesCsv(join(dir, 'ok.csv'))).resolves.toMatchObject({ name: 'ok.csv', rows: rowsOf([1, 2, 3]) });
    await expect(readSeriesCsv(join(dir, 'bad.csv'))).rejects.toThrow(/bad\.csv: line 2: timestamp "yesterday" is not ISO-8601/);
    await expect(readSeriesCsv(join(dir, 'missing.csv'))).rejects.toThrow(/cannot read .*missing\.csv/);
  });

  it('streams a large file in chunks: records split across chunk edges, the line of a bad value deep in it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shardcast-series-'));
    const n = 60_000; // ~2.5 MB: dozens of 64 KiB chunks, with quoted fields and CRLF split at their edges
    const lines = ['timestamp,value'];
    for (let i = 0; i < n; i++) lines.push(`"${new Date(T0 + i * 60_000).toISOString()}",${i % 7 === 0 ? `"${i}.5"` : i}`);
    writeFileSync(join(dir, 'big.csv'), lines.join('\r\n') + '\r\n');
    const { rows } = await readSeriesCsv(join(dir, 'big.csv'));
    expect(rows).toHaveLength(n);
    expect(rows[n - 1]).toEqual({ time: T0 + (n - 1) * 60_000, value: n - 1 });
    expect(rows[7]!.value).toBe(7.5);
    lines[50_001] = `${new Date(T0).toISOString()},1e3`;
    writeFileSync(join(dir, 'big-bad.csv'), lines.join('\n'));
    await expect(readSeriesCsv(join(dir, 'big-bad.csv'))).rejects.toThrow(/big-bad\.csv: line 50002: value "1e3" is not a decimal number/);
  });
});

describe('sortAndDedupe', () => {
  it('sorts by time and keeps the last row in the file of a duplicated timestamp', () => {
    const out = sortAndDedupe([
      { time: 3, value: 30 },
      { time: 1, value: 10 },
      { time: 3, value: 31 },
      { time: 2, value: NaN },
      { time: 1, value: 11 },
    ]);
    expect(out.rows).toEqual([
      { time: 1, value: 11 },
      { time: 3, value: 31 },
    ]);
    expect(out).toMatchObject({ duplicates: 2, nonFinite: 1 });
    expect(out.outOfOrder).toBeGreaterThan(0);
  });
});

describe('inferStepSeconds', () => {
  it('is the median spacing in whole seconds', () => {
    expect(inferStepSeconds([0, 300_000, 600_000, 1_500_000, 1_800_400])).toBe(300);
  });

  it('refuses steps outside 1 minute – 1 hour', () => {
    expect(() => inferStepSeconds([0, 30_000, 60_000])).toThrow('the median spacing of the timestamps is 30 s; supported steps are 60 s to 3600 s');
    expect(() => inferStepSeconds([0, 7_200_000])).toThrow(/7200 s/);
    expect(() => inferStepSeconds([0])).toThrow(/at least 2 timestamps/);
  });
});

describe('seasonLengths', () => {
  it('has a daily period always and a weekly one from two weeks on', () => {
    expect(seasonLengths(300, 4031)).toEqual({ dailyPeriod: 288 });
    expect(seasonLengths(300, 4032)).toEqual({ dailyPeriod: 288, weeklyPeriod: 2016 });
    expect(seasonLengths(1800, 700)).toEqual({ dailyPeriod: 48, weeklyPeriod: 336 });
    expect(seasonLengths(420, 10)).toEqual({ dailyPeriod: 206 });
  });
});

describe('cleanSeries', () => {
  it('puts a regular series through unchanged', () => {
    const s = cleanSeries(rowsOf([1, 2, 3, 4]), 'x');
    expect(s).toMatchObject({ name: 'x', start: T0, stepSeconds: 3600, values: [1, 2, 3, 4], dailyPeriod: 24, notes: [] });
    expect(s.weeklyPeriod).toBeUndefined();
  });

  it('fills a short gap linearly and says so', () => {
    const rows = rowsOf([0, 10, 20, 30, 40, 50], 300).filter((_, i) => i !== 2 && i !== 3);
    const s = cleanSeries(rows);
    expect(s.values).toEqual([0, 10, 20, 30, 40, 50]);
    expect(s.observed).toEqual([true, true, false, false, true, true]);
    expect(s.notes.join()).toMatch(/1 gap\(s\) of up to 60 minutes filled by linear interpolation/);
  });

  it('fills a long gap with the day before, shifted to the level before the gap', () => {
    // Two days at 30 minutes: the second day is the first plus 5; hours 30–34 are missing.
    const day = Array.from({ length: 48 }, (_, t) => (t % 12) * 1.0);
    const values = [...day, ...day.map((v) => v + 5)];
    const rows = rowsOf(values, 1800).filter((_, i) => i < 60 || i > 68);
    const s = cleanSeries(rows);
    expect(s.values).toHaveLength(96);
    for (let i = 60; i <= 68; i++) expect(s.values[i]).toBeCloseTo(values[i]!, 9);
    expect(s.notes.join()).toMatch(/1 longer gap\(s\) filled with the values of the day before/);
  });

  it('interpolates a long gap linearly when less than a day precedes it', () => {
    const line = Array.from({ length: 20 }, (_, t) => t);
    const rows = rowsOf(line, 1800).filter((_, i) => i < 3 || i > 10);
    expect(cleanSeries(rows).values).toEqual(line);
  });

  it('handles hostile rows: NaN, out of order, duplicates, negative values, jitter', () => {
    const rows = [
      { time: T0 + 2 * 60_000 + 1_000, value: -3 },
      { time: T0, value: 1 },
      { time: T0 + 60_000, value: NaN },
      { time: T0 + 3 * 60_000, value: 7 },
      { time: T0 + 3 * 60_000, value: 8 },
      { time: T0 + 60_000 - 500, value: 2 },
    ];
    const s = cleanSeries(rows);
    expect(s.stepSeconds).toBe(60);
    expect(s.values).toEqual([1, 2, -3, 8]);
    expect(s.notes.join('\n')).toMatch(/1 non-finite value\(s\) treated as missing\n.*out of order: sorted by time\n1 duplicate timestamp\(s\): the last row in the file wins/);
  });

  it('refuses too few rows and absurd spans', () => {
    expect(() => cleanSeries([{ time: T0, value: 1 }])).toThrow(/at least 2 rows with a finite value, got 1/);
    expect(() => cleanSeries(rowsOf([NaN, NaN, 1]))).toThrow(/got 1/);
    const stray = [...rowsOf([1, 2, 3, 4, 5], 60), { time: T0 + 10 * 365 * 86_400_000, value: 1 }];
    expect(() => cleanSeries(stray)).toThrow(/span \d+ steps of 60 s; at most 2000000/);
  });
});
