import type { Queryable } from '../catalog/nodes.js';
import { InvalidInputError } from '../errors.js';
import { addBuckets, BUCKET_MS, counterRates, resample, type CounterSample, type RateInterval } from './rates.js';

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
 *   node:<name>:cpu                                host CPU busy, percent
 *   node:<name>:io                                 PostgreSQL I/O operations (pg_stat_io reads + writes) per second
 */

export const READ_WEIGHT = 0.1;

export interface SeriesPoint {
  ts: Date;
  value: number | null;
}

interface Row {
  node_id: string;
  key: string;
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

/** One series, bucketed over [from, to). */
export async function loadSeries(catalog: Queryable, id: string, from: Date, to: Date): Promise<SeriesPoint[]> {
  const range = [from.toISOString(), to.toISOString()];
  const [kind, subject, metric, ...rest] = id.split(':');
  if (!kind || !subject || !metric || rest.length > 0) throw new InvalidInputError(`series ${JSON.stringify(id)} is not kind:subject:metric (e.g. table:orders:inserts)`);
  let rows: Row[];
  let ratio = false;
  switch (kind) {
    case 'table': {
      const expr = TABLE_METRICS[metric];
      if (!expr) throw new InvalidInputError(`table series metric must be one of ${Object.keys(TABLE_METRICS).join(', ')}, got ${JSON.stringify(metric)}`);
      rows = await query(catalog, `select node_id::text, schema_name as key, ${T} as t, (${expr})::float8 as value, ${E} as epoch from shardcast_stats.table_samples where table_name = $3`, [...range, subject]);
      break;
    }
    case 'index': {
      if (metric !== 'scans') throw new InvalidInputError(`index series metric must be scans, got ${JSON.stringify(metric)}`);
      const [table, index] = subject.split('.');
      if (!table || !index) throw new InvalidInputError(`index series subject must be table.index, got ${JSON.stringify(subject)}`);
      rows = await query(
        catalog,
        `select node_id::text, schema_name as key, ${T} as t, idx_scan::float8 as value, ${E} as epoch from shardcast_stats.index_samples where table_name = $3 and index_name = $4`,
        [...range, table, index],
      );
      break;
    }
    case 'shard': {
      if (metric !== 'load') throw new InvalidInputError(`shard series metric must be load, got ${JSON.stringify(metric)}`);
      if (!/^\d+$/.test(subject)) throw new InvalidInputError(`shard series subject must be a shard id, got ${JSON.stringify(subject)}`);
      rows = await query(
        catalog,
        `select node_id::text, schema_name || '.' || table_name as key, ${T} as t,
                (n_tup_ins + n_tup_upd + n_tup_del + ${READ_WEIGHT} * (seq_tup_read + idx_tup_fetch))::float8 as value, ${E} as epoch
           from shardcast_stats.table_samples where schema_name = $3`,
        [...range, `sc_s${subject}`],
      );
      break;
    }
    case 'node': {
      const node = `node_id = (select id from shardcast.nodes where name = $3)`;
      if (metric === 'cpu') {
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
      } else throw new InvalidInputError(`node series metric must be cpu or io, got ${JSON.stringify(metric)}`);
      break;
    }
    default:
      throw new InvalidInputError(`series kind must be table, index, shard or node, got ${JSON.stringify(kind)}`);
  }
  const start = Math.floor(from.getTime() / BUCKET_MS) * BUCKET_MS;
  const streams = new Map<string, Row[]>();
  for (const r of rows) {
    const k = `${r.node_id}/${r.key}`;
    if (!streams.has(k)) streams.set(k, []);
    streams.get(k)!.push(r);
  }
  const bucketed = [...streams.values()].map((s) => resample(ratio ? cpuPercent(s) : counterRates(s as CounterSample[]), start, to.getTime()));
  const summed = addBuckets(bucketed);
  const n = Math.max(0, Math.ceil((to.getTime() - start) / BUCKET_MS));
  return Array.from({ length: n }, (_, k) => ({ ts: new Date(start + k * BUCKET_MS), value: summed[k] ?? null }));
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
  const { rows: shards } = await catalog.query<{ id: string }>(
    `select distinct substr(schema_name, 5) as id from shardcast_stats.table_samples where ts >= $1 and ts < $2 order by 1`,
    range,
  );
  for (const s of shards) ids.push(`shard:${s.id}:load`);
  const { rows: nodes } = await catalog.query<{ name: string; cpu: boolean }>(
    `select n.name, bool_or(s.cpu_total_jiffies is not null) as cpu from shardcast_stats.node_samples s join shardcast.nodes n on n.id = s.node_id
      where s.ts >= $1 and s.ts < $2 group by n.name order by 1`,
    range,
  );
  for (const n of nodes) {
    if (n.cpu) ids.push(`node:${n.name}:cpu`);
    ids.push(`node:${n.name}:io`);
  }
  return ids;
}
