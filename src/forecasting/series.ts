/**
 * From a CSV of `timestamp,value` rows to the clean, evenly spaced series the models expect
 * (types.ts). The rules, applied in this order by `cleanSeries`:
 *
 * - Missing values (an empty cell, `NaN`, `null`) are dropped: they become gaps. Values are plain
 *   decimals: hex, exponents and infinities are refused when the file is read, with the line.
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
import { clockSeconds, dayMs, hourMs } from '../clock.js';
import { createReadStream } from 'node:fs';
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

/** Steps from 1 minute to 1 hour of the load clock (÷ clock.compression, src/clock.ts). */
const MIN_STEP_SECONDS = 60;
const MAX_STEP_SECONDS = 3600;
/** Gaps up to an hour of the load clock are interpolated linearly; longer ones are filled seasonally. */
const shortGapSeconds = (): number => hourMs() / 1000;
/** The grid is refused beyond this many points (a stray timestamp years away, say). */
export const MAX_POINTS = 2_000_000;

const ISO_8601 = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$/i;

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

/** A value cell that marks a missing observation (a gap), not a number. */
const MISSING = new Set(['', 'nan', 'null']);
/** Plain decimal notation only: no hex (0x10), exponent (1e3), separators or words (Infinity). */
const DECIMAL = /^[+-]?(\d+(\.\d*)?|\.\d+)$/;

/**
 * RFC 4180 records, fed in chunks (a file is streamed, never read whole): fields separated by commas,
 * a field in double quotes may hold commas, line breaks and doubled quotes (""). Spaces around a
 * field, and around its quotes, are dropped. Each record comes with the line it starts on.
 */
class CsvRecords {
  private field = '';
  private fields: string[] = [];
  private state: 'start' | 'plain' | 'quoted' | 'quote' | 'after' = 'start';
  private line = 1;
  private recordLine = 1;
  private pendingCr = false;
  private atStart = true;
  constructor(private readonly onRecord: (fields: string[], line: number) => void) {}

  feed(chunk: string): void {
    if (this.atStart && chunk.length > 0) {
      this.atStart = false;
      if (chunk.startsWith('\uFEFF')) chunk = chunk.slice(1); // a byte order mark
    }
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk[i]!;
      if (this.pendingCr) {
        this.pendingCr = false;
        if (c === '\n') continue; // CRLF: the CR already ended the record
      }
      if (this.state === 'quoted') {
        if (c === '"') this.state = 'quote';
        else {
          this.field += c;
          if (c === '\n' || (c === '\r' && chunk[i + 1] !== '\n')) this.line++;
        }
        continue;
      }
      if (this.state === 'quote') {
        if (c === '"') {
          this.field += '"';
          this.state = 'quoted';
          continue;
        }
        this.state = 'after';
      }
      if (c === ',') {
        this.endField();
      } else if (c === '\n' || c === '\r') {
        this.endRecord();
        this.pendingCr = c === '\r';
        this.line++;
        this.recordLine = this.line;
      } else if (c === '"' && this.state === 'start') {
        this.state = 'quoted';
      } else if (this.state === 'after') {
        if (c !== ' ' && c !== '\t') throw new InvalidInputError(`line ${this.line}: text after the closing quote of a field`);
      } else if (c === '"') {
        throw new InvalidInputError(`line ${this.line}: a quote inside an unquoted field (quote the whole field, doubling its quotes)`);
      } else if (this.state === 'start' && (c === ' ' || c === '\t')) {
        // leading space
      } else {
        this.state = 'plain';
        this.field += c;
      }
    }
  }

  end(): void {
    if (this.state === 'quoted') throw new InvalidInputError(`line ${this.recordLine}: a quoted field is not closed`);
    if (this.fields.length > 0 || this.field !== '' || this.state !== 'start') this.endRecord();
  }

  private endField(): void {
    this.fields.push(this.state === 'plain' ? this.field.trimEnd() : this.field);
    this.field = '';
    this.state = 'start';
  }

  private endRecord(): void {
    const blank = this.fields.length === 0 && this.field === '' && this.state === 'start';
    this.endField();
    const fields = this.fields;
    this.fields = [];
    if (!blank) this.onRecord(fields, this.recordLine);
  }
}

/** The observations of a `timestamp,value` CSV's records: the header first, then one row per record. */
function observationReader(): { record: (fields: string[], line: number) => void; rows: Observation[] } {
  const rows: Observation[] = [];
  let header = true;
  const record = (cells: string[], line: number) => {
    if (header) {
      header = false;
      const names = cells.map((c, i) => (i === 0 ? c.replace(/^\uFEFF/, '') : c).trim().toLowerCase());
      if (names.length !== 2 || names[0] !== 'timestamp' || names[1] !== 'value') {
        throw new InvalidInputError(`line ${line}: expected the header "timestamp,value", got ${JSON.stringify(cells.join(','))}`);
      }
      return;
    }
    const where = `line ${line}`;
    if (cells.length !== 2) throw new InvalidInputError(`${where}: expected 2 columns (timestamp,value), got ${cells.length}`);
    const [stamp, raw] = cells.map((c) => c.trim()) as [string, string];
    const time = parseTimestamp(stamp);
    if (time === undefined) throw new InvalidInputError(`${where}: timestamp ${JSON.stringify(stamp)} is not ISO-8601`);
    if (MISSING.has(raw.toLowerCase())) {
      rows.push({ time, value: NaN });
      return;
    }
    if (!DECIMAL.test(raw)) throw new InvalidInputError(`${where}: value ${JSON.stringify(raw)} is not a decimal number (digits, an optional sign and point; empty or NaN for a missing value)`);
    const value = Number(raw);
    if (!Number.isFinite(value)) throw new InvalidInputError(`${where}: value ${JSON.stringify(raw)} is too large`);
    rows.push({ time, value });
  };
  return { record, rows };
}

/**
 * Rows of a `timestamp,value` CSV (RFC 4180: quoted fields allowed), in file order. The header is
 * required; blank lines are skipped; an empty, NaN or null value is a missing observation (NaN). A
 * value must be a plain decimal number: `0x10`, `1e3` and `Infinity` are refused. A bad row fails
 * with its line number.
 */
export function parseCsv(text: string): Observation[] {
  const reader = observationReader();
  const records = new CsvRecords(reader.record);
  records.feed(text);
  records.end();
  if (text.trim() === '') throw new InvalidInputError('line 1: expected the header "timestamp,value", got ""');
  return reader.rows;
}

/** Reads and parses a CSV file as a stream (never the whole text in memory at once); errors name the file. */
export async function readSeriesCsv(file: string): Promise<{ name: string; rows: Observation[] }> {
  const reader = observationReader();
  const records = new CsvRecords(reader.record);
  let seen = false;
  try {
    const stream = createReadStream(file, { encoding: 'utf8', highWaterMark: 64 * 1024 });
    try {
      for await (const chunk of stream as AsyncIterable<string>) {
        seen ||= chunk.trim() !== '';
        records.feed(chunk);
      }
      records.end();
    } finally {
      stream.destroy();
    }
    if (!seen) throw new InvalidInputError('line 1: expected the header "timestamp,value", got ""');
  } catch (err) {
    if (err instanceof InvalidInputError) throw new InvalidInputError(`${file}: ${err.message}`, { cause: err });
    throw new InvalidInputError(`cannot read ${file}: ${errorMessage(err)}`, { cause: err });
  }
  return { name: basename(file), rows: reader.rows };
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
  const [min, max] = [Math.max(1, clockSeconds(MIN_STEP_SECONDS)), clockSeconds(MAX_STEP_SECONDS)];
  if (step < min || step > max) {
    throw new InvalidInputError(`the median spacing of the timestamps is ${median / 1000} s; supported steps are ${min} s to ${max} s`);
  }
  return step;
}

/** Daily and weekly season lengths in steps; weekly only when n covers two weeks. */
export function seasonLengths(stepSeconds: number, n: number): { dailyPeriod: number; weeklyPeriod?: number } {
  const dailyPeriod = Math.round(dayMs() / 1000 / stepSeconds);
  const weekly = 7 * dailyPeriod;
  return n >= 2 * weekly ? { dailyPeriod, weeklyPeriod: weekly } : { dailyPeriod };
}

/** Fills NaN runs of `grid` in place (see the module comment); returns how many runs were long. */
function fillGaps(grid: Float64Array, stepSeconds: number, dailyPeriod: number): { short: number; long: number } {
  const shortLimit = Math.max(1, Math.floor(shortGapSeconds() / stepSeconds));
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
  if (gaps.short > 0) notes.push(`${gaps.short} gap(s) of up to ${shortGapSeconds() / 60} minutes filled by linear interpolation`);
  if (gaps.long > 0) notes.push(`${gaps.long} longer gap(s) filled with the values of the day before`);
  return { name, start, stepSeconds, values: Array.from(grid), observed, dailyPeriod, ...(weeklyPeriod ? { weeklyPeriod } : {}), notes };
}
