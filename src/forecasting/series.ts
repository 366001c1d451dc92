/**
 * From a CSV of `timestamp,value` rows to the clean, evenly spaced series the models expect
 * (types.ts). The rules, applied in this order by `cleanSeries`:
 *
 * - Non-finite values (`NaN`, `Infinity`, an empty cell) are dropped: they become gaps.
 * - Rows are sorted by time; of rows with the same timestamp the last one in the file wins (a later
 *   row is taken as a correction of an earlier one).
 * - The step is the median spacing of the remaining timestamps, rounded to whole seconds; it must
 *   lie between 1 minute and 1 hour.
 * - Each observation goes to the nearest point of the grid start + k·step; when two land on the
 *   same point the later one wins.
 * - Gaps of at most one hour (and always of one step) are filled by linear interpolation; longer
 *   ones by the seasonal naive value one day earlier, shifted so that the fill starts at the level
 *   of the last observation before the gap (linear interpolation when less than a day precedes).
 * - Negative values are kept as they are: some load series are deltas.
 *
 * Every rule that changed something leaves a line in `notes`.
 */
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { InvalidInputError, errorMessage } from '../errors.js';

/** One row of the CSV: time in milliseconds since the epoch (UTC). */
export interface Observation {
  time: number;
  value: number;
}

export interface CleanSeries {
  /** Usually the file name without its directory. */
  name: string;
  /** Time of values[0], in milliseconds since the epoch. */
  start: number;
  stepSeconds: number;
  /** Evenly spaced, finite. */
  values: number[];
  /** Whether values[i] was observed rather than filled. */
  observed: boolean[];
  /** One day in steps (rounded). */
  dailyPeriod: number;
  /** One week in steps, only when the series covers at least two weeks. */
  weeklyPeriod?: number;
  /** What cleaning changed, one line per rule, for reports. */
  notes: string[];
}

export const MIN_STEP_SECONDS = 60;
export const MAX_STEP_SECONDS = 3600;
/** Gaps up to this long are interpolated linearly; longer ones are filled seasonally. */
export const SHORT_GAP_SECONDS = 3600;
/** The grid is refused beyond this many points (a stray timestamp years away, say). */
export const MAX_POINTS = 2_000_000;

const ISO_8601 = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$/i;
const NON_FINITE = new Set(['', 'nan', 'inf', '+inf', '-inf', 'infinity', '+infinity', '-infinity', 'null']);

/** Milliseconds since the epoch of an ISO-8601 date-time (UTC when it has no offset), or undefined when it is not one or names no real date. */
export function parseTimestamp(text: string): number | undefined {
  const m = ISO_8601.exec(text);
  if (!m) return undefined;
  const [year, month, day, hour, minute, second] = [m[1], m[2], m[3], m[4], m[5], m[6] ?? '0'].map(Number) as [number, number, number, number, number, number];
  const millis = Math.round(Number(m[7] ?? 0) * 1000);
  const utc = Date.UTC(year, month - 1, day, hour, minute, second, millis);
  const d = new Date(utc);
  // Date.UTC rolls 30 February over into March: a real date comes back unchanged.
  if (d.getUTCFullYear() !== year || d.getUTCMonth() !== month - 1 || d.getUTCDate() !== day || hour > 23 || minute > 59 || second > 59) return undefined;
  const zone = m[8]?.toUpperCase();
  if (!zone || zone === 'Z') return utc;
  const sign = zone.startsWith('-') ? -1 : 1;
  const digits = zone.slice(1).replace(':', '');
  const offsetMinutes = Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2));
  return utc - sign * offsetMinutes * 60_000;
}

/** Strips one pair of surrounding double quotes. */
function unquote(cell: string): string {
  const t = cell.trim();
  return t.length >= 2 && t.startsWith('"') && t.endsWith('"') ? t.slice(1, -1).trim() : t;
}

/**
 * Rows of a `timestamp,value` CSV, in file order. The header is required; blank lines are skipped;
 * non-finite values (NaN, Infinity, empty) come back as NaN. A bad row fails with its line number.
 */
export function parseCsv(text: string): Observation[] {
  const lines = text.split(/\r?\n/);
  const header = lines[0]?.replace(/^\uFEFF/, '').split(',').map((c) => unquote(c).toLowerCase());
  if (!header || header.length !== 2 || header[0] !== 'timestamp' || header[1] !== 'value') {
    throw new InvalidInputError(`line 1: expected the header "timestamp,value", got ${JSON.stringify(lines[0] ?? '')}`);
  }
  const rows: Observation[] = [];
  lines.slice(1).forEach((line, i) => {
    if (line.trim() === '') return;
    const where = `line ${i + 2}`;
    const cells = line.split(',').map(unquote);
    if (cells.length !== 2) throw new InvalidInputError(`${where}: expected 2 columns (timestamp,value), got ${cells.length}`);
    const [stamp, raw] = cells as [string, string];
    const time = parseTimestamp(stamp);
    if (time === undefined) throw new InvalidInputError(`${where}: timestamp ${JSON.stringify(stamp)} is not ISO-8601`);
    const value = NON_FINITE.has(raw.toLowerCase()) ? NaN : Number(raw);
    if (Number.isNaN(value) && !NON_FINITE.has(raw.toLowerCase())) throw new InvalidInputError(`${where}: value ${JSON.stringify(raw)} is not a number`);
    rows.push({ time, value: Number.isFinite(value) ? value : NaN });
  });
  return rows;
}

/** Reads and parses a CSV file; errors name the file. */
export async function readSeriesCsv(file: string): Promise<{ name: string; rows: Observation[] }> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new InvalidInputError(`cannot read ${file}: ${errorMessage(err)}`, { cause: err });
  }
  try {
    return { name: basename(file), rows: parseCsv(text) };
  } catch (err) {
    throw new InvalidInputError(`${file}: ${errorMessage(err)}`, { cause: err });
  }
}

/** Sorted by time, one row per timestamp (the last in file order wins), finite values only. */
export function sortAndDedupe(rows: readonly Observation[]): { rows: Observation[]; outOfOrder: number; duplicates: number; nonFinite: number } {
  const finite = rows.filter((r) => Number.isFinite(r.value));
  let outOfOrder = 0;
  for (let i = 1; i < finite.length; i++) if (finite[i]!.time < finite[i - 1]!.time) outOfOrder++;
  // Stable sort keeps file order among equal times, so the last of them is the last in the file.
  const sorted = finite.map((r, i) => ({ ...r, i })).sort((a, b) => a.time - b.time || a.i - b.i);
  const out: Observation[] = [];
  for (const r of sorted) {
    if (out.length > 0 && out[out.length - 1]!.time === r.time) out[out.length - 1] = { time: r.time, value: r.value };
    else out.push({ time: r.time, value: r.value });
  }
  return { rows: out, outOfOrder, duplicates: sorted.length - out.length, nonFinite: rows.length - finite.length };
}

/** Median spacing of sorted, distinct times, in whole seconds; refused outside 1 minute – 1 hour. */
export function inferStepSeconds(times: readonly number[]): number {
  if (times.length < 2) throw new InvalidInputError(`need at least 2 timestamps to infer the step, got ${times.length}`);
  const gaps = times.slice(1).map((t, i) => t - times[i]!).sort((a, b) => a - b);
  const mid = gaps.length >> 1;
  const median = gaps.length % 2 === 1 ? gaps[mid]! : (gaps[mid - 1]! + gaps[mid]!) / 2;
  const step = Math.round(median / 1000);
  if (step < MIN_STEP_SECONDS || step > MAX_STEP_SECONDS) {
    throw new InvalidInputError(`the median spacing of the timestamps is ${median / 1000} s; supported steps are ${MIN_STEP_SECONDS} s to ${MAX_STEP_SECONDS} s`);
  }
  return step;
}

/** Daily and weekly season lengths in steps; weekly only when n covers two weeks. */
export function seasonLengths(stepSeconds: number, n: number): { dailyPeriod: number; weeklyPeriod?: number } {
  const dailyPeriod = Math.round(86_400 / stepSeconds);
  const weekly = 7 * dailyPeriod;
  return n >= 2 * weekly ? { dailyPeriod, weeklyPeriod: weekly } : { dailyPeriod };
}

/** Fills NaN runs of `grid` in place (see the module comment); returns how many runs were long. */
function fillGaps(grid: Float64Array, stepSeconds: number, dailyPeriod: number): { short: number; long: number } {
  const shortLimit = Math.max(1, Math.floor(SHORT_GAP_SECONDS / stepSeconds));
  let short = 0;
  let long = 0;
  for (let t = 0; t < grid.length; t++) {
    if (!Number.isNaN(grid[t]!)) continue;
    let end = t;
    while (Number.isNaN(grid[end]!)) end++;
    // The grid starts and ends at observations, so t − 1 and end exist.
    const before = grid[t - 1]!;
    const after = grid[end]!;
    const length = end - t;
    const seasonal = length > shortLimit && t - 1 - dailyPeriod >= 0;
    if (seasonal) {
      long++;
      const shift = before - grid[t - 1 - dailyPeriod]!;
      for (let k = t; k < end; k++) grid[k] = grid[k - dailyPeriod]! + shift;
    } else {
      short++;
      for (let k = t; k < end; k++) grid[k] = before + ((after - before) * (k - t + 1)) / (length + 1);
    }
    t = end;
  }
  return { short, long };
}

/** The evenly spaced, gap-free series of these rows (any order, duplicates and non-finite values allowed). */
export function cleanSeries(rows: readonly Observation[], name = 'series'): CleanSeries {
  const { rows: sorted, outOfOrder, duplicates, nonFinite } = sortAndDedupe(rows);
  if (sorted.length < 2) throw new InvalidInputError(`${name}: need at least 2 rows with a finite value, got ${sorted.length}`);
  const notes: string[] = [];
  if (nonFinite > 0) notes.push(`${nonFinite} non-finite value(s) treated as missing`);
  if (outOfOrder > 0) notes.push(`${outOfOrder} row(s) out of order: sorted by time`);
  if (duplicates > 0) notes.push(`${duplicates} duplicate timestamp(s): the last row in the file wins`);
  const stepSeconds = inferStepSeconds(sorted.map((r) => r.time));
  const stepMs = stepSeconds * 1000;
  const start = sorted[0]!.time;
  const length = Math.round((sorted[sorted.length - 1]!.time - start) / stepMs) + 1;
  if (length > MAX_POINTS) throw new InvalidInputError(`${name}: the timestamps span ${length} steps of ${stepSeconds} s; at most ${MAX_POINTS} are supported`);
  const grid = new Float64Array(length).fill(NaN);
  let merged = 0;
  for (const r of sorted) {
    const k = Math.round((r.time - start) / stepMs);
    if (!Number.isNaN(grid[k]!)) merged++;
    grid[k] = r.value;
  }
  if (merged > 0) notes.push(`${merged} row(s) off the ${stepSeconds} s grid shared a point with another: the later one wins`);
  const observed = Array.from(grid, (v) => !Number.isNaN(v));
  const { dailyPeriod, weeklyPeriod } = seasonLengths(stepSeconds, length);
  const gaps = fillGaps(grid, stepSeconds, dailyPeriod);
  if (gaps.short > 0) notes.push(`${gaps.short} gap(s) of up to ${SHORT_GAP_SECONDS / 60} minutes filled by linear interpolation`);
  if (gaps.long > 0) notes.push(`${gaps.long} longer gap(s) filled with the values of the day before`);
  return { name, start, stepSeconds, values: Array.from(grid), observed, dailyPeriod, ...(weeklyPeriod ? { weeklyPeriod } : {}), notes };
}
