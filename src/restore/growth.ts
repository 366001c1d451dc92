/**
 * The data growth predictor and the load model behind a range layout's bounds. Pure: no database,
 * no clock (times come from the manifests).
 *
 * Growth: rows per month from the table's past manifests (a least-squares line through their row
 * counts over their export times, the current one included) when there are any, else from the
 * source cluster's collected row counts the manifest carries (`rowHistory`: the same line through
 * its hourly counts, when they span a day), else from the workload's stated `growth_per_month`,
 * else none. Where new rows land on the key: at its top
 * ("append") for a date/time key, or when the past manifests show the key's maximum rising with most
 * of the new rows above the old maximum (an ever-increasing id); elsewhere spread like the rows
 * already there ("spread").
 *
 * Load over the key: reads in proportion to the rows each key range will hold over the horizon (on
 * average), writes in proportion to where rows are added (inserts) plus the rows there (updates and
 * deletes), weighed by the query log's read/write mix (half and half without one). Range bounds are
 * then cut where the cumulative predicted load reaches 1/n, 2/n, …: the shards are even in
 * predicted load, not only in rows.
 */
import type { KeyStats } from '../backup/stats.js';
import type { ValueKind } from '../backup/values.js';

export interface TableSnapshot {
  /** When it was exported (the manifest's createdAt). */
  at: string;
  rows: number;
  /** The shard key's maximum then (canonical text), when its statistics were kept. */
  keyMax?: string | null;
}

export interface GrowthForecast {
  /** Rows added per month (0: no growth known). */
  rowsPerMonth: number;
  /** Where new rows land on the key. */
  pattern: 'append' | 'spread';
  /** What the rate comes from: past manifests, the source cluster's collected row counts, the workload file, nothing. */
  source: 'history' | 'metrics' | 'stated' | 'none';
  /** Rows at the end of the horizon. */
  rowsAtHorizon: number;
  horizonMonths: number;
  reasons: string[];
}

export interface RangeForecast {
  range: [string, string];
  /** Rows in the range now (estimated from the key's quantiles). */
  rowsNow: number;
  /** Rows at the end of the horizon. */
  rowsAtHorizon: number;
  /** Rows added per month. */
  rowsPerMonth: number;
  /** Share of the table's predicted load (0–1). */
  loadShare: number;
}

export const TIME_KINDS: readonly ValueKind[] = ['date', 'timestamp', 'timestamptz'];
const MONTH_MS = 30 * 86_400_000;

/** Milliseconds of a manifest or key time text ('2024-01-01', '2024-01-01 00:00:00+00', ISO). */
export function timeMs(s: string): number {
  return Date.parse(s.includes('T') ? s : s.length === 10 ? `${s}T00:00:00Z` : s.replace(' ', 'T').replace(/\+00$/, 'Z'));
}

/** A time in the text form of `like` (a date, a timestamp, or a timestamptz in UTC). */
export function timeText(ms: number, like: string): string {
  const iso = new Date(Math.round(ms)).toISOString().replace('T', ' ').replace(/\.\d+Z$/, '');
  return like.endsWith('+00') ? `${iso}+00` : like.length === 10 ? iso.slice(0, 10) : iso;
}

/** A key value as a number on a line (time kinds: ms; integers: their value, precise enough to cut ranges). */
function position(kind: ValueKind, v: string): number {
  return TIME_KINDS.includes(kind) ? timeMs(v) : Number(v);
}

/** The least-squares slope of y over x (0 when x does not vary). */
function slope(points: ReadonlyArray<{ x: number; y: number }>): number {
  const mx = points.reduce((a, p) => a + p.x, 0) / points.length;
  const my = points.reduce((a, p) => a + p.y, 0) / points.length;
  const sxx = points.reduce((a, p) => a + (p.x - mx) ** 2, 0);
  const sxy = points.reduce((a, p) => a + (p.x - mx) * (p.y - my), 0);
  return sxx > 0 ? sxy / sxx : 0;
}

/** Exact order of two key values (integers compared as bigints, not as their rounded positions). */
function compareKeys(kind: ValueKind, a: string, b: string): number {
  if (TIME_KINDS.includes(kind)) return Math.sign(timeMs(a) - timeMs(b));
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/** The key value at a position, in the key's own text form (`like` gives the format of a time value). */
function valueAt(kind: ValueKind, x: number, like: string): string {
  return TIME_KINDS.includes(kind) ? timeText(x, like) : BigInt(Math.round(x)).toString();
}

/**
 * Growth of a table over the horizon. `history` are its earlier manifests (any order; those not
 * before `current.at` are ignored), `statedPerMonth` the workload's growth_per_month.
 */
export function predictGrowth(
  current: TableSnapshot,
  key: { kind: ValueKind; stats?: KeyStats },
  history: readonly TableSnapshot[],
  options: { statedPerMonth?: number | null; horizonMonths: number; metrics?: ReadonlyArray<{ at: string; rows: number }> },
): GrowthForecast {
  const reasons: string[] = [];
  const now = timeMs(current.at);
  const past = history.filter((h) => Number.isFinite(timeMs(h.at)) && timeMs(h.at) < now).sort((a, b) => timeMs(a.at) - timeMs(b.at));
  let rowsPerMonth = 0;
  let source: GrowthForecast['source'] = 'none';
  const collected = (options.metrics ?? []).filter((m) => Number.isFinite(timeMs(m.at)) && timeMs(m.at) <= now && Number.isFinite(m.rows)).sort((a, b) => timeMs(a.at) - timeMs(b.at));
  const collectedSpan = collected.length > 1 ? timeMs(collected.at(-1)!.at) - timeMs(collected[0]!.at) : 0;
  if (past.length > 0) {
    // Least squares through (months, rows), the current manifest included.
    rowsPerMonth = Math.max(0, slope([...past, current].map((s) => ({ x: (timeMs(s.at) - now) / MONTH_MS, y: s.rows }))));
    source = 'history';
    reasons.push(`growth: ${Math.round(rowsPerMonth)} rows/month from ${past.length + 1} manifests (${past[0]!.at.slice(0, 10)} to ${current.at.slice(0, 10)})`);
  } else if (collectedSpan >= 86_400_000) {
    // The source cluster's own hourly counts: the same line, through them.
    rowsPerMonth = Math.max(0, slope(collected.map((m) => ({ x: (timeMs(m.at) - now) / MONTH_MS, y: m.rows }))));
    source = 'metrics';
    reasons.push(
      `growth: ${Math.round(rowsPerMonth)} rows/month from the source cluster's collected row counts (${collected.length} hours, ${collected[0]!.at.slice(0, 10)} to ${collected.at(-1)!.at.slice(0, 10)})`,
    );
  } else if (options.statedPerMonth) {
    // Compounded over the horizon, as the shard count's growth factor is; the average rate over it.
    const h = Math.max(options.horizonMonths, 1e-9);
    rowsPerMonth = (current.rows * ((1 + options.statedPerMonth) ** options.horizonMonths - 1)) / h;
    source = 'stated';
    reasons.push(`growth: ${Math.round(options.statedPerMonth * 100)}%/month as stated, compounded over ${options.horizonMonths} months: ${Math.round(rowsPerMonth)} rows/month on average`);
  } else {
    reasons.push(`growth: none known (no past manifest${collected.length > 0 ? ', collected row counts span less than a day' : ', no collected row counts'}, no growth_per_month)`);
  }

  let pattern: GrowthForecast['pattern'] = 'spread';
  if (TIME_KINDS.includes(key.kind)) {
    pattern = 'append';
    if (rowsPerMonth > 0) reasons.push('new rows land at the top of the time key');
  } else if (key.stats && key.stats.quantiles.length > 1 && past.length > 0) {
    // An ever-increasing key: its maximum rose, and most rows added since the oldest manifest lie above that manifest's maximum.
    const oldest = past.find((p) => p.keyMax !== undefined && p.keyMax !== null);
    if (oldest && current.rows > oldest.rows) {
      const q = key.stats.quantiles;
      const oldMax = position(key.kind, oldest.keyMax!);
      const above = q.filter((v) => position(key.kind, v) > oldMax).length / q.length;
      const added = (current.rows - oldest.rows) / current.rows;
      if (above >= 0.8 * added) {
        pattern = 'append';
        reasons.push(`new rows land at the top of ${key.stats.column}: ${Math.round(above * 100)}% of the rows lie above its maximum of ${oldest.at.slice(0, 10)} (${oldest.keyMax})`);
      }
    }
  }
  if (pattern === 'spread' && rowsPerMonth > 0) reasons.push('new rows spread over the key like the rows there');
  return { rowsPerMonth, pattern, source, rowsAtHorizon: current.rows + rowsPerMonth * options.horizonMonths, horizonMonths: options.horizonMonths, reasons };
}

/** Stretches of the key line, each with its rows now and rows added per month (the last: the room above the maximum). */
interface Segment {
  lo: number;
  hi: number;
  rowsNow: number;
  addedPerMonth: number;
}

function segments(kind: ValueKind, stats: KeyStats, rows: number, growth: GrowthForecast, top: string): Segment[] {
  const q = stats.quantiles.map((v) => position(kind, v));
  q[0] = position(kind, stats.min!);
  const n = q.length - 1;
  const out: Segment[] = [];
  for (let i = 0; i < n; i++) {
    out.push({ lo: q[i]!, hi: q[i + 1]!, rowsNow: rows / n, addedPerMonth: growth.pattern === 'spread' ? growth.rowsPerMonth / n : 0 });
  }
  const end = position(kind, top);
  if (end > q[n]!) out.push({ lo: q[n]!, hi: end, rowsNow: 0, addedPerMonth: growth.pattern === 'append' ? growth.rowsPerMonth : 0 });
  else if (growth.pattern === 'append') out.at(-1)!.addedPerMonth += growth.rowsPerMonth;
  return out;
}

/**
 * Each segment's share of the predicted load (summing to 1): reads go to rows, in proportion to the
 * rows it holds on average over the horizon; writes half to where rows are added (inserts) and half
 * to the rows there (updates, deletes); `writeShare` weighs the two.
 */
function segmentLoads(segs: readonly Segment[], horizonMonths: number, writeShare: number): number[] {
  const held = segs.map((s) => s.rowsNow + (s.addedPerMonth * horizonMonths) / 2);
  const heldTotal = held.reduce((a, b) => a + b, 0) || 1;
  const addedTotal = segs.reduce((a, s) => a + s.addedPerMonth, 0);
  return segs.map((s, i) => {
    const rowsShare = held[i]! / heldTotal;
    const writes = addedTotal > 0 ? (s.addedPerMonth / addedTotal + rowsShare) / 2 : rowsShare;
    return (1 - writeShare) * rowsShare + writeShare * writes;
  });
}

/**
 * n range bounds b0 < … < bn even in predicted load: b0 the key's exact minimum, bn = `top` (the
 * exclusive upper bound with room for growth). Fewer when the key has too few distinct values.
 */
export function loadEvenBounds(kind: ValueKind, stats: KeyStats, rows: number, n: number, growth: GrowthForecast, top: string, writeShare: number): string[] {
  const segs = segments(kind, stats, rows, growth, top);
  const loads = segmentLoads(segs, growth.horizonMonths, writeShare);
  const total = loads.reduce((a, b) => a + b, 0);
  const bounds = [stats.min!];
  if (total > 0) {
    let i = 0;
    let before = 0;
    for (let k = 1; k < n; k++) {
      const goal = (total * k) / n;
      while (i < segs.length - 1 && before + loads[i]! < goal) before += loads[i++]!;
      const s = segs[i]!;
      const f = loads[i]! > 0 ? Math.min(1, Math.max(0, (goal - before) / loads[i]!)) : 0;
      const b = valueAt(kind, s.lo + (s.hi - s.lo) * f, stats.min!);
      if (compareKeys(kind, b, bounds.at(-1)!) > 0 && compareKeys(kind, b, top) < 0) bounds.push(b);
    }
  }
  bounds.push(top);
  return bounds;
}

/** Per range of a layout: rows now and at the horizon, growth, and share of the predicted load. */
export function rangeForecasts(kind: ValueKind, stats: KeyStats, rows: number, bounds: readonly string[], growth: GrowthForecast, writeShare: number): RangeForecast[] {
  const segs = segments(kind, stats, rows, growth, bounds.at(-1)!);
  const loads = segmentLoads(segs, growth.horizonMonths, writeShare);
  const total = loads.reduce((a, b) => a + b, 0) || 1;
  const out: RangeForecast[] = [];
  for (let r = 0; r + 1 < bounds.length; r++) {
    const lo = position(kind, bounds[r]!);
    const hi = position(kind, bounds[r + 1]!);
    let rowsNow = 0;
    let added = 0;
    let load = 0;
    segs.forEach((s, i) => {
      const width = s.hi - s.lo;
      // The share of the segment inside [lo, hi); a segment of no width (one value) belongs where its value does.
      const share = width > 0 ? Math.max(0, Math.min(hi, s.hi) - Math.max(lo, s.lo)) / width : s.lo >= lo && s.lo < hi ? 1 : 0;
      rowsNow += s.rowsNow * share;
      added += s.addedPerMonth * share;
      load += loads[i]! * share;
    });
    out.push({ range: [bounds[r]!, bounds[r + 1]!], rowsNow: Math.round(rowsNow), rowsAtHorizon: Math.round(rowsNow + added * growth.horizonMonths), rowsPerMonth: Math.round(added), loadShare: load / total });
  }
  return out;
}
