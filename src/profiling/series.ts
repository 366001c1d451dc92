import type { Queryable } from '../catalog/nodes.js';
import { InvalidInputError } from '../errors.js';
import { stepMs } from '../clock.js';
import { combineStreams, counterRates, type CounterSample, type RateInterval } from './rates.js';

/**
 * The series forecasting works on, derived from the samples and resampled to 5-minute buckets:
 *
 *   table:<table>:inserts|updates|deletes|reads   rows per second, over all the table's shards
 *                                                 (reads = tuples read by sequential and index scans)
 *   index:<table>.<index>:scans                    index scans per second, over all shards
 *   shard:<id>:load                                the shard's load figure, per second:
 *                                                 inserts + updates + deletes + 0.1 × tuples read,
 *                                                 over the group's tables in the shard (a written row
 *                                                 costs WAL, index and heap work; a read tuple mostly a
 *                                                 buffer visit, hence the weight)
 *   node:<name>:load                               the load figure of the shards placed on the node, per second
 *   node:<name>:cpu                                host CPU busy, percent
 *   node:<name>:io                                 PostgreSQL I/O operations (pg_stat_io reads + writes) per second
 *
 * Movement traffic is left out of the table, index, shard and node-load series: samples are taken only
 * of placed shard schemas (a movement's new shards, written by its copy and apply, are not sampled
 * until their switch, and their first sample then only starts a counter stream), and the tuples a
 * movement's own sessions read from a placed shard (copy, verify; shardcast_stats.movement_reads) are
 * subtracted from the reads over the time they were read. A stream is one table's counters on one
 * node (by oid): a table dropped and created again starts a new one.
 */

export const READ_WEIGHT = 0.1;

/** Shards a split or merge retired (their ids are not used again). */
export const RETIRED_SHARDS = `array(select unnest(m.shard_id || m.other_shard_ids) from shardcast.movements m where m.operation in ('split', 'merge') and m.state = 'done')`;

/** The values a series can take: rates and counts are never negative; a percentage (node CPU) stays within 0–100. */
export function seriesDomain(id: string): { min: number; max: number } {
  return /^node:[^:]+:cpu$/.test(id) ? { min: 0, max: 100 } : { min: 0, max: Number.POSITIVE_INFINITY };
}

export interface SeriesPoint {
  ts: Date;
  value: number | null;
}

interface Row {
  node_id: string;
  key: string;
  relid?: string | null;
  t: number;
  value: number;
  epoch: number;
  total?: number;
}

const TABLE_METRICS: Record<string, string> = {
  inserts: 'n_tup_ins',
  updates: 'n_tup_upd',
  deletes: 'n_tup_del',
  reads: 'seq_tup_read + idx_tup_fetch',
};

const T = `extract(epoch from ts) * 1000`;
const E = `extract(epoch from stats_epoch) * 1000`;

/** A movement's own reads to subtract: which rows of shardcast_stats.movement_reads, at what weight. */
interface OwnReads {
  where: string;
  params: unknown[];
  weight: number;
}

/** One series, bucketed over [from, to) (5-minute buckets unless `bucketMs` says otherwise). */
export async function loadSeries(catalog: Queryable, id: string, from: Date, to: Date, bucketMs = stepMs()): Promise<SeriesPoint[]> {
  const range = [from.toISOString(), to.toISOString()];
  const [kind, subject, metric, ...rest] = id.split(':');
  if (!kind || !subject || !metric || rest.length > 0) throw new InvalidInputError(`series ${JSON.stringify(id)} is not kind:subject:metric (e.g. table:orders:inserts)`);
  let rows: Row[];
  let ratio = false;
  let own: OwnReads | undefined;
  switch (kind) {
    case 'table': {
      const expr = TABLE_METRICS[metric];
      if (!expr) throw new InvalidInputError(`table series metric must be one of ${Object.keys(TABLE_METRICS).join(', ')}, got ${JSON.stringify(metric)}`);
      rows = await query(
        catalog,
        `select node_id::text, schema_name || '.' || table_name as key, relid::text, ${T} as t, (${expr})::float8 as value, ${E} as epoch from shardcast_stats.table_samples where table_name = $3`,
        [...range, subject],
      );
      if (metric === 'reads') own = { where: 'table_name = $3', params: [subject], weight: 1 };
      break;
    }
    case 'index': {
      if (metric !== 'scans') throw new InvalidInputError(`index series metric must be scans, got ${JSON.stringify(metric)}`);
      const [table, index] = subject.split('.');
      if (!table || !index) throw new InvalidInputError(`index series subject must be table.index, got ${JSON.stringify(subject)}`);
      rows = await query(
        catalog,
        `select node_id::text, schema_name as key, relid::text, ${T} as t, idx_scan::float8 as value, ${E} as epoch from shardcast_stats.index_samples where table_name = $3 and index_name = $4`,
        [...range, table, index],
      );
      break;
    }
    case 'shard': {
      if (metric !== 'load') throw new InvalidInputError(`shard series metric must be load, got ${JSON.stringify(metric)}`);
      if (!/^\d+$/.test(subject)) throw new InvalidInputError(`shard series subject must be a shard id, got ${JSON.stringify(subject)}`);
      rows = await query(
        catalog,
        `select node_id::text, schema_name || '.' || table_name as key, relid::text, ${T} as t, ${LOAD} as value, ${E} as epoch
           from shardcast_stats.table_samples where schema_name = $3`,
        [...range, `sc_s${subject}`],
      );
      own = { where: 'schema_name = $3', params: [`sc_s${subject}`], weight: READ_WEIGHT };
      break;
    }
    case 'node': {
      const node = `node_id = (select id from shardcast.nodes where name = $3)`;
      if (metric === 'load') {
        rows = await query(
          catalog,
          `select node_id::text, schema_name || '.' || table_name as key, relid::text, ${T} as t, ${LOAD} as value, ${E} as epoch
             from shardcast_stats.table_samples where ${node}`,
          [...range, subject],
        );
        own = { where: node, params: [subject], weight: READ_WEIGHT };
      } else if (metric === 'cpu') {
        ratio = true;
        rows = await query(
          catalog,
          `select node_id::text, '' as key, ${T} as t, cpu_busy_jiffies::float8 as value, cpu_total_jiffies::float8 as total, ${E} as epoch
             from shardcast_stats.node_samples where ${node} and cpu_total_jiffies is not null`,
          [...range, subject],
        );
      } else if (metric === 'io') {
        rows = await query(
          catalog,
          `select node_id::text, '' as key, ${T} as t, (coalesce(io_reads, 0) + coalesce(io_writes, 0))::float8 as value, ${E} as epoch
             from shardcast_stats.node_samples where ${node}`,
          [...range, subject],
        );
      } else throw new InvalidInputError(`node series metric must be load, cpu or io, got ${JSON.stringify(metric)}`);
      break;
    }
    default:
      throw new InvalidInputError(`series kind must be table, index, shard or node, got ${JSON.stringify(kind)}`);
  }
  const start = Math.floor(from.getTime() / bucketMs) * bucketMs;
  const streams = new Map<string, Row[]>();
  for (const r of rows) {
    const k = `${r.node_id}/${r.key}/${r.relid ?? ''}`;
    if (!streams.has(k)) streams.set(k, []);
    streams.get(k)!.push(r);
  }
  const intervals = [...streams.values()].map((s) => (ratio ? cpuPercent(s) : counterRates(s as CounterSample[])));
  // A movement's reads are subtracted only where the series counted them, never below zero.
  const minus = own && intervals.length > 0 ? placeOwnReads(await ownReads(catalog, range, own), streams) : [];
  const summed = combineStreams(intervals, start, to.getTime(), bucketMs, minus);
  const n = Math.max(0, Math.ceil((to.getTime() - start) / bucketMs));
  return Array.from({ length: n }, (_, k) => ({ ts: new Date(start + k * bucketMs), value: summed[k] ?? null }));
}

/** The load figure of a table sample (see READ_WEIGHT). */
const LOAD = `(n_tup_ins + n_tup_upd + n_tup_del + ${READ_WEIGHT} * (seq_tup_read + idx_tup_fetch))::float8`;

/** A sample of one stream, as placeOwnReads reads it. */
export type SampleRow = Row;

export interface OwnReadRow {
  node_id: string;
  key: string;
  e: number;
  amount: number;
}

/** A movement's own reads (weighted) that ended in the range, with the stream they were counted in. */
async function ownReads(catalog: Queryable, range: string[], own: OwnReads): Promise<OwnReadRow[]> {
  const { rows } = await catalog.query<{ node_id: string; key: string; e: number; tuples: string }>(
    `select node_id::text, schema_name || '.' || table_name as key, extract(epoch from ended_at) * 1000 as e, tuples::text
       from shardcast_stats.movement_reads where ended_at >= $1 and ended_at < $2 and ${own.where}`,
    [...range, ...own.params],
  );
  return rows.map((r) => ({ node_id: r.node_id, key: r.key, e: Number(r.e), amount: Number(r.tuples) * own.weight }));
}

/** How far before its record's time a movement's reads may have been counted (clocks of worker and node apart). */
const OWN_READ_EARLY_MS = 2_000;
/** How long after its record's time they may reach the counters (the session's statistics flush when its transaction ends). */
const OWN_READ_LATE_MS = 30_000;

/**
 * Each record of a movement's reads is subtracted over the sample interval of its table's stream in
 * which the counters took it in: the first interval, from about the record's time on, whose counter
 * grew by at least the record's amount (beyond what earlier records already took of it). The record
 * is made just before its transaction ends and its counts are flushed (src/movement/own-reads.ts), so
 * a sample can fall between the two: placing by time alone would subtract, in that interval, reads
 * it did not count — and when it is the stream's last (the source's schema retired by the split's
 * cutover), the reads are never counted at all and the series went to zero. Reads no interval
 * counted are not subtracted.
 */
export function placeOwnReads(reads: OwnReadRow[], streams: Map<string, Row[]>): RateInterval[] {
  const out: RateInterval[] = [];
  const taken = new Map<Row[], Float64Array>();
  for (const r of [...reads].sort((a, b) => a.e - b.e)) {
    for (const [k, samples] of streams) {
      if (!k.startsWith(`${r.node_id}/${r.key}/`)) continue;
      let used = taken.get(samples);
      if (!used) taken.set(samples, (used = new Float64Array(samples.length)));
      const i = countedIn(samples, used, r);
      if (i === undefined) continue;
      used[i]! += r.amount;
      const a = samples[i - 1]!;
      const b = samples[i]!;
      out.push({ start: a.t, end: b.t, rate: (r.amount * 1000) / (b.t - a.t) });
      break;
    }
  }
  return out;
}

/** The index of the sample ending the interval that counted `r` (see placeOwnReads), if any. */
function countedIn(samples: Row[], used: Float64Array, r: OwnReadRow): number | undefined {
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1]!;
    const b = samples[i]!;
    if (b.t < r.e - OWN_READ_EARLY_MS) continue;
    if (a.t > r.e + OWN_READ_LATE_MS) return undefined;
    if (!(b.t > a.t) || b.epoch !== a.epoch) continue;
    // A small tolerance: the amount is rounded to whole tuples before its weight.
    if (b.value - a.value - used[i]! >= r.amount - 1e-6 * Math.max(1, r.amount)) return i;
  }
  return undefined;
}

/**
 * Records tuples a movement's own session read from placed shard tables (see shardcast_stats.movement_reads).
 * `once`: only when the movement has recorded nothing for that table yet (a copy measured by polling).
 */
export async function recordMovementReads(
  catalog: Queryable,
  reads: ReadonlyArray<{ nodeId: number; schema: string; table: string; tuples: number; startedAt: Date; endedAt: Date }>,
  movementId: string | null = null,
  once = false,
): Promise<void> {
  const counted = reads.filter((r) => r.tuples > 0);
  if (counted.length === 0) return;
  const guard = once
    ? ` where not exists (select 1 from shardcast_stats.movement_reads m where m.movement_id = r.movement_id and m.node_id = r.node_id
                           and m.schema_name = r.schema_name and m.table_name = r.table_name)`
    : '';
  await catalog.query(
    `insert into shardcast_stats.movement_reads (node_id, schema_name, table_name, started_at, ended_at, tuples, movement_id)
     select * from unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::bigint[], $7::text[])
              as r (node_id, schema_name, table_name, started_at, ended_at, tuples, movement_id)${guard}`,
    [
      counted.map((r) => r.nodeId),
      counted.map((r) => r.schema),
      counted.map((r) => r.table),
      counted.map((r) => r.startedAt.toISOString()),
      counted.map((r) => new Date(Math.max(r.endedAt.getTime(), r.startedAt.getTime())).toISOString()),
      counted.map((r) => Math.round(r.tuples)),
      counted.map(() => movementId),
    ],
  );
}

/** CPU busy percent per interval: Δbusy / Δtotal (host jiffies; a host restart makes them go down: skipped). */
function cpuPercent(samples: Row[]): RateInterval[] {
  const out: RateInterval[] = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1]!;
    const b = samples[i]!;
    const dt = (b.total ?? 0) - (a.total ?? 0);
    const busy = b.value - a.value;
    if (!(b.t > a.t) || dt <= 0 || busy < 0) continue;
    out.push({ start: a.t, end: b.t, rate: (100 * busy) / dt });
  }
  return out;
}

async function query(catalog: Queryable, sql: string, params: unknown[]): Promise<Row[]> {
  const ranged = sql.replace(/ from shardcast_stats\.(\w+) where /, (_, table: string) => ` from shardcast_stats.${table} where ts >= $1 and ts < $2 and `);
  const { rows } = await catalog.query<Row>(`select * from (${ranged}) s order by node_id, key, t`, params);
  return rows.map((r) => ({ ...r, t: Number(r.t), value: Number(r.value), epoch: Number(r.epoch), ...(r.total !== undefined ? { total: Number(r.total) } : {}) }));
}

/** Every series there is data for since `since` (and, with `until`, before it). */
export async function listSeries(catalog: Queryable, since: Date, until = new Date('9999-12-31T00:00:00Z')): Promise<string[]> {
  const ids: string[] = [];
  const range = [since.toISOString(), until.toISOString()];
  const { rows: tables } = await catalog.query<{ name: string }>(
    `select distinct table_name as name from shardcast_stats.table_samples where ts >= $1 and ts < $2 order by 1`,
    range,
  );
  for (const t of tables) for (const m of Object.keys(TABLE_METRICS)) ids.push(`table:${t.name}:${m}`);
  const { rows: indexes } = await catalog.query<{ t: string; i: string }>(
    `select distinct table_name as t, index_name as i from shardcast_stats.index_samples where ts >= $1 and ts < $2 order by 1, 2`,
    range,
  );
  for (const r of indexes) ids.push(`index:${r.t}.${r.i}:scans`);
  // Shards that still exist: a split or merged shard's history stays for a while, but it is no series to forecast.
  const { rows: shards } = await catalog.query<{ id: string }>(
    `select distinct substr(t.schema_name, 5) as id from shardcast_stats.table_samples t
      where t.ts >= $1 and t.ts < $2 and not coalesce(substring(t.schema_name from '^sc_s([0-9]+)$')::bigint = any (${RETIRED_SHARDS}), false) order by 1`,
    range,
  );
  for (const s of shards) ids.push(`shard:${s.id}:load`);
  const { rows: nodes } = await catalog.query<{ name: string; cpu: boolean }>(
    `select n.name, bool_or(s.cpu_total_jiffies is not null) as cpu from shardcast_stats.node_samples s join shardcast.nodes n on n.id = s.node_id
      where s.ts >= $1 and s.ts < $2 and n.state <> 'retired' group by n.name order by 1`,
    range,
  );
  const { rows: loaded } = await catalog.query<{ name: string }>(
    `select distinct n.name from shardcast_stats.table_samples s join shardcast.nodes n on n.id = s.node_id where s.ts >= $1 and s.ts < $2`,
    range,
  );
  const withLoad = new Set(loaded.map((r) => r.name));
  for (const n of nodes) {
    if (withLoad.has(n.name)) ids.push(`node:${n.name}:load`);
    if (n.cpu) ids.push(`node:${n.name}:cpu`);
    ids.push(`node:${n.name}:io`);
  }
  return ids;
}

/** An unknown series is an error that says where the known ones are listed; a known one passes. */
export async function assertKnownSeries(catalog: Queryable, id: string, since: Date, withModel: (id: string) => Promise<boolean>): Promise<void> {
  const sampled = await listSeries(catalog, since);
  if (sampled.includes(id) || (await withModel(id))) return;
  throw new InvalidInputError(`no series ${JSON.stringify(id)}: it has no samples since ${since.toISOString()} and no model (\`shardcast forecast list\` names the series there are)`);
}
