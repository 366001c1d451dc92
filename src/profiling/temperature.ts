/**
 * Hot, warm and cold shards: per shard of a distributed table (and so per key range), features of
 * its access frequency from the routers' workload profile (shardcast_stats.shard_accesses, accesses
 * per minute) over a window, and the peak of its latest load forecast; the shards clustered by
 * k-means (k = 3, k-means++ with a fixed seed, on log1p-scaled, standardised features), the
 * clusters named hot, warm and cold by their members' mean rate. No threshold is fixed: a shard is
 * hot because it is far busier than its table's other shards. The key map lists each class's key
 * ranges; computations are stored in shardcast_stats.temperature (migration 0020), one per table
 * after each hourly forecast run and on `shardcast temperature --store`.
 */
import type { Queryable } from '../catalog/nodes.js';
import { compareKeys, normalizeKey, type KeyType } from '../catalog/keys.js';
import { UnknownTableError } from '../errors.js';
import { distinctPoints, kmeans } from './kmeans.js';

export type TemperatureClass = 'hot' | 'warm' | 'cold';
export const TEMPERATURE_CLASSES: readonly TemperatureClass[] = ['hot', 'warm', 'cold'];

/** The default window: the last 24 hours. */
export const TEMPERATURE_WINDOW_MS = 24 * 3_600_000;
/** The recent rate's window. */
const RECENT_MS = 3_600_000;
const MINUTE_MS = 60_000;
/** k-means' seed: the same accesses give the same classes. */
const SEED = 20_261_202;

export interface TemperatureFeatures {
  /** Accesses per second over the last hour (or the time observed, when shorter). */
  recentRate: number;
  /** Accesses per second over the window, from the table's first recorded access in it when later. */
  meanRate: number;
  /** Accesses per second in the busiest minute. */
  peakRate: number;
  /** Least-squares slope of the per-minute rate, in accesses per second per hour. */
  trend: number;
  /** The highest value of the latest forecast of `shard:<id>:load` (load per second); null without one. */
  forecastPeak: number | null;
}

export interface ShardTemperature {
  shardId: number;
  node: string;
  /** As `shardcast shards list` prints it: `hash [min, max]` or `[min, max)`. */
  range: string;
  class: TemperatureClass;
  /** Accesses recorded in the window. */
  accesses: number;
  features: TemperatureFeatures;
}

export interface KeyRange {
  shardId: number;
  range: string;
}

export interface TemperatureReport {
  table: string;
  method: 'hash' | 'range';
  /** ISO: the end of the window, the computation's time. */
  computedAt: string;
  /** ISO: the start of the window. */
  since: string;
  /** Accesses of the table's shards recorded in the window. */
  accesses: number;
  /** Clusters found: 3, or fewer when the shards do not differ enough (0 for a table without shards). */
  clusters: number;
  forecast: { used: boolean; note: string };
  /** In key order. */
  shards: ShardTemperature[];
  /** Each class's key ranges, in key order. */
  keyMap: Record<TemperatureClass, KeyRange[]>;
}

/** One shard's accesses per minute: minute start (ms) → accesses. */
export type MinuteCounts = ReadonlyMap<number, number>;

/** What the features are made of: a shard's sums over its per-minute counts (computed by the catalog for a table). */
export interface AccessSums {
  total: number;
  /** Of the minutes from `recentFrom`. */
  recent: number;
  /** The busiest minute's count. */
  peak: number;
  /** Σ minute index (from the start) × accesses per second: the cross term of the trend's slope. */
  sxy: number;
}

/** Where the recent rate's hour begins: an hour before `asOfMs`, on a minute boundary, not before the start. */
export function recentFrom(startMs: number, asOfMs: number): number {
  return Math.max(startMs, Math.floor((asOfMs - RECENT_MS) / MINUTE_MS) * MINUTE_MS);
}

/** The sums of one shard's per-minute counts (minute start in ms → accesses) observed from `startMs`. */
export function accessSums(counts: MinuteCounts, startMs: number, asOfMs: number): AccessSums {
  const from = recentFrom(startMs, asOfMs);
  const sums = { total: 0, recent: 0, peak: 0, sxy: 0 };
  for (const [at, n] of counts) {
    if (!(n > 0)) continue;
    sums.total += n;
    if (at >= from) sums.recent += n;
    sums.peak = Math.max(sums.peak, n);
    sums.sxy += ((at - startMs) / MINUTE_MS) * (n / 60);
  }
  return sums;
}

/**
 * The access features of one shard from its sums, observed from `startMs` (a minute boundary) to
 * `asOfMs`; `forecastPeak` is added by the caller.
 */
export function featuresFromSums(sums: AccessSums, startMs: number, asOfMs: number): Omit<TemperatureFeatures, 'forecastPeak'> {
  const spanS = Math.max(60, (asOfMs - startMs) / 1000);
  const recentS = Math.max(60, (asOfMs - recentFrom(startMs, asOfMs)) / 1000);
  // The minutes begun by asOf (a row's minute is when its flush interval began).
  const minutes = Math.max(1, Math.ceil((asOfMs - startMs) / MINUTE_MS));
  // Slope over every minute of the span, the minutes without a row counting as 0.
  let trend = 0;
  if (minutes >= 2) {
    const sx = (minutes * (minutes - 1)) / 2;
    const sxx = ((minutes - 1) * minutes * (2 * minutes - 1)) / 6;
    trend = ((minutes * sums.sxy - sx * (sums.total / 60)) / (minutes * sxx - sx * sx)) * 60;
  }
  return { recentRate: sums.recent / recentS, meanRate: sums.total / spanS, peakRate: sums.peak / 60, trend: finite(trend) };
}

/** The access features of one shard from its per-minute counts (minute start in ms → accesses). */
export function accessFeatures(counts: MinuteCounts, startMs: number, asOfMs: number): Omit<TemperatureFeatures, 'forecastPeak'> {
  return featuresFromSums(accessSums(counts, startMs, asOfMs), startMs, asOfMs);
}

const finite = (x: number): number => (Number.isFinite(x) ? x : 0);
/** log1p that keeps the sign (for the trend). */
const signedLog1p = (x: number): number => Math.sign(x) * Math.log1p(Math.abs(x));

/**
 * The vectors k-means sees: the features per hour (accesses an hour, so that log1p is a logarithm
 * for any shard accessed more than about once an hour, and rates compare by ratio whatever the
 * table's volume), log1p-scaled, each standardised over the shards (a constant one is 0).
 */
export function featureVectors(features: readonly TemperatureFeatures[], useForecast: boolean): number[][] {
  const scaled = (x: number | null): number => Math.log1p(Math.max(0, (x ?? 0) * 3600));
  const raw = features.map((f) => {
    const v = [scaled(f.recentRate), scaled(f.meanRate), scaled(f.peakRate), signedLog1p(f.trend * 3600)];
    if (useForecast) v.push(scaled(f.forecastPeak));
    return v.map(finite);
  });
  if (raw.length === 0) return [];
  const dims = raw[0]!.length;
  for (let d = 0; d < dims; d++) {
    const mean = raw.reduce((s, v) => s + v[d]!, 0) / raw.length;
    const sd = Math.sqrt(raw.reduce((s, v) => s + (v[d]! - mean) ** 2, 0) / raw.length);
    // Differences at rounding level are no difference: without this, ten equal shards would be split in three.
    const constant = !(sd > 1e-9 * Math.max(1, Math.abs(mean)));
    for (const v of raw) v[d] = constant ? 0 : (v[d]! - mean) / sd;
  }
  return raw;
}

/**
 * Classes of the shards: k-means on `featureVectors` with k = 3, or fewer when there are fewer
 * distinct vectors (two clusters are hot and cold; one, or none different, all warm). Clusters are
 * ranked by their members' mean rate (then recent and peak rate, then their centroid).
 */
export function classifyShards(features: readonly TemperatureFeatures[], options: { useForecast: boolean; seed?: number }): { classes: TemperatureClass[]; clusters: number } {
  if (features.length === 0) return { classes: [], clusters: 0 };
  const points = featureVectors(features, options.useForecast);
  const k = Math.min(3, distinctPoints(points));
  if (k <= 1) return { classes: features.map(() => 'warm'), clusters: 1 };
  const { assignment, centroids } = kmeans(points, k, { seed: options.seed ?? SEED });
  const meanOf = (j: number, f: (x: TemperatureFeatures) => number): number => {
    const members = features.filter((_, i) => assignment[i] === j);
    return members.reduce((s, x) => s + f(x), 0) / Math.max(1, members.length);
  };
  const rankKey = (j: number): number[] => [meanOf(j, (x) => x.meanRate), meanOf(j, (x) => x.recentRate), meanOf(j, (x) => x.peakRate), centroids[j]!.reduce((s, c) => s + c, 0)];
  const order = centroids.map((_, j) => j).sort((a, b) => {
    const [ka, kb] = [rankKey(a), rankKey(b)];
    for (let i = 0; i < ka.length; i++) if (ka[i] !== kb[i]) return ka[i]! - kb[i]!;
    return a - b;
  });
  const names: TemperatureClass[] = k === 2 ? ['cold', 'hot'] : ['cold', 'warm', 'hot'];
  const classOf = new Map(order.map((j, rank) => [j, names[rank]!]));
  return { classes: assignment.map((j) => classOf.get(j)!), clusters: k };
}

interface ShardRow {
  id: number;
  node: string;
  hash_min: string | null;
  hash_max: string | null;
  range_min: string | null;
  range_max: string | null;
}

async function tableShards(catalog: Queryable, table: string): Promise<{ method: 'hash' | 'range'; shards: Array<{ shardId: number; node: string; range: string }> }> {
  const { rows: t } = await catalog.query<{ method: 'hash' | 'range'; key_type: KeyType }>(
    `select g.method, g.key_type from shardcast.distributed_tables t join shardcast.colocation_groups g on g.id = t.group_id where t.name = $1`,
    [table],
  );
  if (t.length === 0) throw new UnknownTableError(table);
  const { method, key_type: keyType } = t[0]!;
  const { rows } = await catalog.query<ShardRow>(
    `select s.id::int as id, n.name as node, s.hash_min::text as hash_min, s.hash_max::text as hash_max, s.range_min, s.range_max
       from shardcast.distributed_tables t
       join shardcast.shards s on s.group_id = t.group_id
       join shardcast.placements p on p.shard_id = s.id
       join shardcast.nodes n on n.id = p.node_id
      where t.name = $1 order by s.id`,
    [table],
  );
  rows.sort((a, b) =>
    a.hash_min !== null && b.hash_min !== null
      ? Number(BigInt(a.hash_min) > BigInt(b.hash_min)) - Number(BigInt(a.hash_min) < BigInt(b.hash_min))
      : compareKeys(keyType, normalizeKey(keyType, a.range_min), normalizeKey(keyType, b.range_min)),
  );
  return {
    method,
    shards: rows.map((r) => ({ shardId: r.id, node: r.node, range: r.hash_min !== null ? `hash [${r.hash_min}, ${r.hash_max}]` : `[${r.range_min}, ${r.range_max})` })),
  };
}

/** The highest value and issue time of each shard's latest load forecast issued in [from, until]. */
async function forecastPeaks(catalog: Queryable, shardIds: readonly number[], from: Date, until: Date): Promise<Map<number, { peak: number; issuedAt: Date }>> {
  const { rows } = await catalog.query<{ series: string; issued_at: Date; peak: number }>(
    `select f.series, f.issued_at, max(f.yhat) as peak
       from shardcast_forecast.forecasts f
       join (select series, max(issued_at) as issued_at from shardcast_forecast.forecasts
              where series = any($1::text[]) and issued_at between $2 and $3 group by series) l using (series, issued_at)
      group by f.series, f.issued_at`,
    [shardIds.map((id) => `shard:${id}:load`), from, until],
  );
  return new Map(rows.map((r) => [Number(r.series.split(':')[1]), { peak: Number(r.peak), issuedAt: r.issued_at }]));
}

/**
 * The temperature of each shard of `table` over the window of `sinceMs` (default 24 h) ending at
 * `asOf` (default the catalog's now). The forecast peak is a feature only when every shard has a
 * load forecast issued in the window; otherwise the report says which have none.
 */
export async function computeTemperature(catalog: Queryable, options: { table: string; sinceMs?: number; asOf?: Date }): Promise<TemperatureReport> {
  const { method, shards } = await tableShards(catalog, options.table);
  const asOf = options.asOf ?? (await catalog.query<{ now: Date }>('select now()')).rows[0]!.now;
  const windowStart = Math.floor((asOf.getTime() - (options.sinceMs ?? TEMPERATURE_WINDOW_MS)) / MINUTE_MS) * MINUTE_MS;
  const ids = shards.map((s) => s.shardId);
  // The table's first recorded minute in the window (of its current shards: a retired one's rows are left out).
  const { rows: firstRow } = await catalog.query<{ first: Date | null }>(
    'select min(bucket) as first from shardcast_stats.shard_accesses where table_name = $1 and shard_id = any($2::bigint[]) and bucket >= $3 and bucket <= $4',
    [options.table, ids, new Date(windowStart), asOf],
  );
  const start = firstRow[0]?.first ? firstRow[0].first.getTime() : windowStart;
  // Summed by the catalog: a day of minutes per shard stays there.
  const { rows } = await catalog.query<{ shard_id: number; total: number; recent: number; peak: number; sxy: number }>(
    `select shard_id::int as shard_id, sum(accesses)::float8 as total, coalesce(sum(accesses) filter (where bucket >= $5), 0)::float8 as recent,
            max(accesses)::float8 as peak, sum(extract(epoch from bucket - $3::timestamptz) / 60 * accesses / 60)::float8 as sxy
       from shardcast_stats.shard_accesses
      where table_name = $1 and shard_id = any($2::bigint[]) and bucket >= $3 and bucket <= $4 and accesses > 0
      group by shard_id`,
    [options.table, ids, new Date(start), asOf, new Date(recentFrom(start, asOf.getTime()))],
  );
  const sums = new Map<number, AccessSums>(rows.map((r) => [r.shard_id, { total: r.total, recent: r.recent, peak: r.peak, sxy: r.sxy }]));
  const none: AccessSums = { total: 0, recent: 0, peak: 0, sxy: 0 };
  const forecasts = await forecastPeaks(catalog, ids, new Date(windowStart), asOf);
  const missing = shards.filter((s) => !forecasts.has(s.shardId)).map((s) => s.shardId);
  const used = shards.length > 0 && missing.length === 0;
  const features = shards.map((s) => ({ ...featuresFromSums(sums.get(s.shardId) ?? none, start, asOf.getTime()), forecastPeak: forecasts.get(s.shardId)?.peak ?? null }));
  const { classes, clusters } = classifyShards(features, { useForecast: used });
  const out = shards.map((s, i) => ({
    ...s,
    class: classes[i]!,
    accesses: (sums.get(s.shardId) ?? none).total,
    features: features[i]!,
  }));
  const keyMap = Object.fromEntries(TEMPERATURE_CLASSES.map((c) => [c, out.filter((s) => s.class === c).map((s) => ({ shardId: s.shardId, range: s.range }))])) as Record<TemperatureClass, KeyRange[]>;
  return {
    table: options.table,
    method,
    computedAt: asOf.toISOString(),
    since: new Date(windowStart).toISOString(),
    accesses: out.reduce((a, s) => a + s.accesses, 0),
    clusters,
    forecast: { used, note: forecastNote(shards.length, missing, forecasts) },
    shards: out,
    keyMap,
  };
}

function forecastNote(shards: number, missing: number[], forecasts: Map<number, { issuedAt: Date }>): string {
  if (shards === 0) return 'not used: the table has no shards';
  if (missing.length === shards) return 'not used: no shard has a load forecast issued in the window';
  if (missing.length > 0) return `not used: no load forecast issued in the window for shard${missing.length > 1 ? 's' : ''} ${missing.join(', ')}`;
  const issued = [...forecasts.values()].map((f) => f.issuedAt.getTime());
  return `used: peak of each shard's latest load forecast (issued ${new Date(Math.min(...issued)).toISOString()}${Math.max(...issued) > Math.min(...issued) ? ` to ${new Date(Math.max(...issued)).toISOString()}` : ''})`;
}

/** Stores a computation (one statement: all its shards or none); the same table and time again is a no-op. Returns the rows written. */
export async function storeTemperature(catalog: Queryable, report: TemperatureReport): Promise<number> {
  const { rowCount } = await catalog.query(
    `insert into shardcast_stats.temperature (table_name, computed_at, shard_id, class, key_range, node, features)
     select $1, $2, s.shard_id, s.class, s.key_range, s.node, s.features
       from unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::jsonb[]) as s(shard_id, class, key_range, node, features)
     on conflict do nothing`,
    [
      report.table,
      report.computedAt,
      report.shards.map((s) => s.shardId),
      report.shards.map((s) => s.class),
      report.shards.map((s) => s.range),
      report.shards.map((s) => s.node),
      report.shards.map((s) => JSON.stringify({ ...s.features, accesses: s.accesses })),
    ],
  );
  return rowCount ?? 0;
}

export interface StoredTemperature {
  table: string;
  computedAt: string;
  shards: Array<{ shardId: number; class: TemperatureClass; range: string; node: string }>;
}

/** The newest stored computation of the table (its key map as last refreshed), or undefined. */
export async function latestTemperature(catalog: Queryable, table: string): Promise<StoredTemperature | undefined> {
  const { rows } = await catalog.query<{ computed_at: Date; shard_id: number; class: TemperatureClass; key_range: string; node: string }>(
    `select computed_at, shard_id::int as shard_id, class, key_range, node from shardcast_stats.temperature
      where table_name = $1 and computed_at = (select max(computed_at) from shardcast_stats.temperature where table_name = $1)
      order by shard_id`,
    [table],
  );
  if (rows.length === 0) return undefined;
  return { table, computedAt: rows[0]!.computed_at.toISOString(), shards: rows.map((r) => ({ shardId: r.shard_id, class: r.class, range: r.key_range, node: r.node })) };
}

/**
 * After each hourly forecast: the temperature of every active table with accesses in the window,
 * stored as of `asOf` (the run's time, so a retried activity writes the same computation once).
 */
export async function refreshTemperatures(catalog: Queryable, options: { asOf: Date; sinceMs?: number }): Promise<Array<{ table: string; hot: number; warm: number; cold: number }>> {
  const { rows } = await catalog.query<{ name: string }>("select name from shardcast.distributed_tables where state = 'active' order by name");
  const out = [];
  for (const { name } of rows) {
    let report: TemperatureReport;
    try {
      report = await computeTemperature(catalog, { table: name, sinceMs: options.sinceMs, asOf: options.asOf });
    } catch (err) {
      if (err instanceof UnknownTableError) continue; // dropped since it was listed
      throw err;
    }
    if (report.accesses === 0) continue;
    await storeTemperature(catalog, report);
    out.push({ table: name, hot: report.keyMap.hot.length, warm: report.keyMap.warm.length, cold: report.keyMap.cold.length });
  }
  return out;
}
