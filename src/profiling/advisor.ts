/**
 * The shard-key advisor: from a table's workload (the templates of a query log, with their calls) and
 * its key statistics, the candidate keys — single columns and pairs, from the predicates and joins the
 * workload has on the table — each with hash or range, described in the vocabulary of MongoDB's
 * analyzeShardKey and ranked with reasons:
 *
 * - reads and writes: % single-shard (the key pinned to one value), multi-shard (an IN list, or a
 *   range on a range key: only the shards that hold the values) and scatter-gather (every shard);
 *   writes without the shard key; % of updates that change the key (each moves a row between shards);
 * - the key's cardinality, its most common values' frequency, its monotonicity (|correlation| ≥ 0.7
 *   in PostgreSQL's pg_stats, or inserts that take it from the clock or a sequence);
 * - join co-location: the joins of the table that each shard can run alone under the key (the other
 *   table sharded on its side of the join: its catalog key, or the join column when it is not sharded).
 *
 * A key is pinned through joins too: `o.customer_id = c.id and c.id = $1` pins o.customer_id.
 * Pure: no database, no clock; the parser is loaded by profileQueryLog.
 */
import type { KeyStats } from '../backup/stats.js';
import type { LoggedQuery } from '../restore/query-log.js';
import { loadQueryParser, templateOf, updatesColumn, type ColumnAt, type QueryFeatures } from './templates.js';

export type KeyColumnType = 'integer' | 'text' | 'uuid' | 'time' | 'other';
export type KeyMethod = 'hash' | 'range';

export interface AdvisorColumn {
  name: string;
  type: KeyColumnType;
}

export interface ColumnStatistics {
  column: string;
  /** Distinct values (estimate); null when unknown. */
  distinct: number | null;
  nullFraction: number;
  /** The most common values, most first, with the share of rows each holds. */
  mostCommon: Array<{ value: string; frequency: number }>;
  /** Correlation of the value with the rows' physical order (pg_stats), −1 … 1; null when unknown. */
  correlation: number | null;
}

export interface WorkloadTemplate {
  fingerprint: string;
  shape: string;
  text: string;
  calls: number;
  /** Rows retrieved or affected over its calls, when the log said (pg_stat_statements' `rows`). */
  rows?: number;
  features: QueryFeatures;
}

export interface WorkloadProfile {
  table: string;
  /** Calls of the log's statements that touch the table. */
  calls: number;
  /** Calls of statements that could not be parsed (pg_stat_statements truncates long texts). */
  unparsed: number;
  templates: WorkloadTemplate[];
}

export interface Distribution {
  calls: number;
  singleShard: number;
  multiShard: number;
  scatterGather: number;
}

export interface CandidateReport {
  key: string[];
  method: KeyMethod;
  /** 0 … 100: the share of the workload the key serves well, less its risks (see `reasons`). */
  score: number;
  /** The catalog's key and method today. */
  current: boolean;
  /** Percentages of the calls (0 … 100). */
  reads: Distribution;
  writes: Distribution & { withoutShardKey: number };
  shardKeyUpdates: { updateCalls: number; changingKey: number; percent: number };
  cardinality: number | null;
  mostCommon: Array<{ value: string; frequency: number }>;
  monotonicity: { type: 'monotonic' | 'not monotonic' | 'unknown'; correlation: number | null; source: string | null };
  joins: { calls: number; colocated: number; percent: number; with: string[] };
  reasons: string[];
}

export interface Advice {
  table: string;
  shardCount: number;
  calls: number;
  unparsed: number;
  templates: number;
  candidates: CandidateReport[];
}

export interface AdviseOptions {
  /** Shards the key is judged for (IN lists longer than this reach every shard; cardinality and skew against it). */
  shardCount: number;
  /** Rows in the table, when known (bounds a pair's cardinality). */
  rows?: number | null;
  /** Shard keys of other tables (the catalog's): a join is co-located only when it is on theirs. */
  otherKeys?: Record<string, string>;
  /** The table's key and method today. */
  current?: { key: string; method: KeyMethod } | null;
  /**
   * Rows one call of a template returns or changes (projection.rowsPerCall: the log's rows, else the
   * cardinality model's estimate). With it, half the score's gain is by calls and half by work, each
   * call weighed by 1 + its rows, so a key that keeps the heavy queries on one shard ranks up.
   */
  rowsPerCall?: (t: WorkloadTemplate) => number;
}

/** |correlation| from this up is a monotonic key (analyzeShardKey's threshold). */
export const MONOTONIC_CORRELATION = 0.7;
const RANGE_TYPES: readonly KeyColumnType[] = ['integer', 'time', 'text'];
const KEY_TYPES: readonly KeyColumnType[] = ['integer', 'time', 'text', 'uuid'];
/** How much a multi-shard call is worth against a single-shard one. */
const MULTI_SHARD_WORTH = 0.6;

/** The log's statements on `table`, parsed into templates (the same shape: one template, calls summed). */
export async function profileQueryLog(queries: readonly LoggedQuery[], table: string, columns: readonly string[]): Promise<WorkloadProfile> {
  await loadQueryParser();
  const byPrint = new Map<string, WorkloadTemplate>();
  let unparsed = 0;
  let calls = 0;
  for (const q of queries) {
    let t;
    try {
      t = templateOf(q.query, { columnsOf: (name) => (name === table ? columns : undefined) });
    } catch {
      unparsed += q.calls;
      continue;
    }
    if (!t.features.tables.includes(table)) continue;
    calls += q.calls;
    const seen = byPrint.get(t.shape);
    if (seen) {
      seen.calls += q.calls;
      if (q.rows !== undefined) seen.rows = (seen.rows ?? 0) + q.rows;
    } else byPrint.set(t.shape, { fingerprint: t.fingerprint, shape: t.shape, text: t.text, calls: q.calls, ...(q.rows !== undefined ? { rows: q.rows } : {}), features: t.features });
  }
  return { table, calls, unparsed, templates: [...byPrint.values()].sort((a, b) => b.calls - a.calls) };
}

/** A backup's key statistics as the advisor's (no physical order there: correlation unknown). */
export function statisticsFromKeyStats(s: KeyStats): ColumnStatistics {
  return {
    column: s.column,
    distinct: s.distinctEstimate,
    nullFraction: s.nullFraction,
    mostCommon: s.heavyHitters.map((h) => ({ value: h.value, frequency: h.frequency })),
    correlation: null,
  };
}

/** One shard's pg_stats row of a column, with the shard's row count (pg_class.reltuples). */
export interface PgStatsRow {
  column: string;
  rows: number;
  nullFraction: number;
  /** pg_stats.n_distinct: > 0 a count, < 0 minus the share of rows (it grows with the table). */
  nDistinct: number;
  mostCommonValues: string[] | null;
  mostCommonFreqs: number[] | null;
  correlation: number | null;
}

/**
 * The shards' pg_stats rows of one column as the table's: fractions weighted by rows; the most common
 * values' frequencies summed over the shards that list them (a lower bound where a shard does not).
 * Distinct values: each shard's (n_distinct as PostgreSQL means it: > 0 a count, < 0 a share of the
 * shard's rows), then, for the table's shard key, their sum (a value lives on one shard); for any other
 * column, the D that explains them when a value's rows fall on shards independently of it — a shard of
 * S holds a given value of N/D rows with probability 1 − (1 − 1/S)^(N/D) — between the largest shard's
 * count and the sum.
 */
export function statisticsFromPgStats(column: string, shards: readonly PgStatsRow[], options: { shardKey?: boolean } = {}): ColumnStatistics {
  const rows = shards.reduce((a, s) => a + Math.max(0, s.rows), 0);
  const weight = (s: PgStatsRow) => (rows > 0 ? Math.max(0, s.rows) / rows : 1 / shards.length);
  const perShard = shards.map((s) => (s.nDistinct < 0 ? -s.nDistinct * Math.max(0, s.rows) : s.nDistinct));
  const mcv = new Map<string, number>();
  let correlation = 0;
  let correlated = 0;
  for (const s of shards) {
    (s.mostCommonValues ?? []).forEach((v, i) => mcv.set(v, (mcv.get(v) ?? 0) + (s.mostCommonFreqs?.[i] ?? 0) * weight(s)));
    if (s.correlation !== null) {
      correlation += s.correlation * weight(s);
      correlated += weight(s);
    }
  }
  return {
    column,
    distinct: shards.length === 0 ? null : Math.round(options.shardKey ? perShard.reduce((a, b) => a + b, 0) : spreadDistinct(perShard, rows)),
    nullFraction: shards.reduce((a, s) => a + s.nullFraction * weight(s), 0),
    mostCommon: [...mcv].map(([value, frequency]) => ({ value, frequency })).sort((a, b) => b.frequency - a.frequency).slice(0, 10),
    correlation: correlated > 0 ? correlation / correlated : null,
  };
}

/** The distinct values D of N rows spread over the shards independently of the value, from each shard's distinct count (bisection). */
function spreadDistinct(perShard: readonly number[], rows: number): number {
  const S = perShard.length;
  const lo0 = Math.max(0, ...perShard);
  const hi0 = perShard.reduce((a, b) => a + b, 0);
  if (S <= 1 || rows <= 0 || hi0 <= lo0) return lo0;
  const target = hi0 / S;
  const seen = (d: number) => d * (1 - Math.pow(1 - 1 / S, rows / d));
  let lo = lo0;
  let hi = hi0;
  for (let i = 0; i < 60; i++) {
    const mid = (lo + hi) / 2;
    if (seen(mid) < target) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

export type Route = 'single' | 'multi' | 'scatter';

/** What a template's conjunctive predicates say of one column of the table (through join equalities). */
interface Restriction {
  pinned: boolean;
  /** IN: items, or null for `= any($1)`. */
  list: { items: number | null } | null;
  ranged: boolean;
}

/** Columns equal to each other through the template's conjunctive join conditions: `table.column` to its class. */
function equalities(f: QueryFeatures): Map<string, Set<string>> {
  const classes = new Map<string, Set<string>>();
  const id = (c: ColumnAt) => `${c.table ?? '?'}.${c.column}`;
  const classOf = (k: string) => {
    let s = classes.get(k);
    if (!s) classes.set(k, (s = new Set([k])));
    return s;
  };
  for (const j of f.joins) {
    if (!j.conjunctive) continue;
    const a = classOf(id(j.left));
    const b = classOf(id(j.right));
    if (a === b) continue;
    for (const k of b) {
      a.add(k);
      classes.set(k, a);
    }
  }
  return classes;
}

function restrictionOf(f: QueryFeatures, table: string, column: string, classes: Map<string, Set<string>>): Restriction {
  const r: Restriction = { pinned: false, list: null, ranged: false };
  const same = classes.get(`${table}.${column}`) ?? new Set([`${table}.${column}`]);
  for (const p of f.predicates) {
    if (!p.conjunctive) continue;
    const k = `${p.table ?? table}.${p.column}`;
    if (!same.has(k)) continue;
    if (p.op === 'equality') r.pinned = true;
    else if (p.op === 'in') r.list = { items: p.items };
    else r.ranged = true;
  }
  return r;
}

/** How a statement with these features would route under the key: one shard, some, or every one. */
export function routeOf(f: QueryFeatures, table: string, key: readonly string[], method: KeyMethod, shardCount: number): Route {
  if (f.kind === 'insert') {
    const cols = key.map((c) => f.inserted.find((i) => i.table === table && i.column === c));
    if (cols.some((c) => !c)) return 'scatter';
    if (f.insertedRows === 1) return 'single';
    // Several VALUES rows (or INSERT … SELECT): one shard only when every row has the same key.
    const one = f.insertedRows > 1 && cols.every((c) => c!.values.length === f.insertedRows && new Set(c!.values).size === 1);
    return one ? 'single' : 'multi';
  }
  const classes = equalities(f);
  const rs = key.map((c) => restrictionOf(f, table, c, classes));
  const few = (r: Restriction) => r.list !== null && (r.list.items === null || r.list.items < shardCount);
  if (rs.every((r) => r.pinned)) return 'single';
  if (method === 'hash') return rs.every((r) => r.pinned || few(r)) ? 'multi' : 'scatter';
  // Range: the shards holding the first column's values (or, the first pinned, the next one's).
  const [first, second] = rs;
  if (few(first!) || first!.ranged) return 'multi';
  if (first!.pinned && second && (second.ranged || few(second))) return 'multi';
  return 'scatter';
}

interface Tally {
  single: number;
  multi: number;
  scatter: number;
}

const percent = (part: number, whole: number) => (whole > 0 ? Math.round((1000 * part) / whole) / 10 : 0);

function distribution(t: Tally): Distribution {
  const calls = t.single + t.multi + t.scatter;
  return { calls, singleShard: percent(t.single, calls), multiShard: percent(t.multi, calls), scatterGather: percent(t.scatter, calls) };
}

/** The candidate keys: the table's key-type columns the workload filters or joins on, and pairs filtered together. */
function candidateKeys(profile: WorkloadProfile, columns: readonly AdvisorColumn[], current: AdviseOptions['current']): Array<{ key: string[]; method: KeyMethod }> {
  const typeOf = new Map(columns.map((c) => [c.name, c.type]));
  const keyable = (c: string) => KEY_TYPES.includes(typeOf.get(c) ?? 'other');
  const used = new Map<string, number>();
  const pairs = new Map<string, { key: string[]; method: KeyMethod; calls: number }>();
  const t = profile.table;
  for (const tpl of profile.templates) {
    const f = tpl.features;
    const mine = f.predicates.filter((p) => (p.table ?? t) === t && keyable(p.column));
    for (const p of mine) used.set(p.column, (used.get(p.column) ?? 0) + tpl.calls);
    for (const j of f.joins) for (const side of [j.left, j.right]) if (side.table === t && keyable(side.column)) used.set(side.column, (used.get(side.column) ?? 0) + tpl.calls);
    const pinned = [...new Set(mine.filter((p) => p.conjunctive && p.op === 'equality').map((p) => p.column))].sort();
    const ranged = [...new Set(mine.filter((p) => p.conjunctive && p.op === 'range').map((p) => p.column))];
    const add = (key: string[], method: KeyMethod) => {
      const k = `${method} ${key.join(',')}`;
      const e = pairs.get(k) ?? { key, method, calls: 0 };
      e.calls += tpl.calls;
      pairs.set(k, e);
    };
    for (let i = 0; i < pinned.length; i++) for (let j = i + 1; j < pinned.length; j++) add([pinned[i]!, pinned[j]!], 'hash');
    for (const a of pinned) for (const b of ranged) if (a !== b && RANGE_TYPES.includes(typeOf.get(a)!)) add([a, b], 'range');
  }
  const out: Array<{ key: string[]; method: KeyMethod }> = [];
  for (const c of used.keys()) {
    out.push({ key: [c], method: 'hash' });
    if (RANGE_TYPES.includes(typeOf.get(c)!)) out.push({ key: [c], method: 'range' });
  }
  // The ten pairs most used together.
  for (const p of [...pairs.values()].sort((a, b) => b.calls - a.calls).slice(0, 10)) out.push({ key: p.key, method: p.method });
  if (current && !out.some((o) => o.key.length === 1 && o.key[0] === current.key && o.method === current.method)) out.push({ key: [current.key], method: current.method });
  return out;
}

export function adviseShardKey(profile: WorkloadProfile, columns: readonly AdvisorColumn[], statistics: readonly ColumnStatistics[], options: AdviseOptions): Advice {
  const t = profile.table;
  const shards = Math.max(1, options.shardCount);
  const stats = new Map(statistics.map((s) => [s.column, s]));
  const otherKeys = options.otherKeys ?? {};
  // Columns an insert takes from the clock or a sequence: ever increasing.
  const increasing = new Map<string, number>();
  let insertCalls = 0;
  for (const tpl of profile.templates) {
    if (tpl.features.kind !== 'insert') continue;
    insertCalls += tpl.calls;
    for (const c of tpl.features.inserted) if (c.table === t && c.increasing) increasing.set(c.column, (increasing.get(c.column) ?? 0) + tpl.calls);
  }

  const reports = candidateKeys(profile, columns, options.current).map(({ key, method }): CandidateReport => {
    const reads: Tally = { single: 0, multi: 0, scatter: 0 };
    const writes: Tally = { single: 0, multi: 0, scatter: 0 };
    let withoutKey = 0;
    // The same tallies weighed by work (calls × (1 + rows per call)), with rowsPerCall.
    const work: Tally = { single: 0, multi: 0, scatter: 0 };
    let updateCalls = 0;
    let changing = 0;
    let joinCalls = 0;
    let colocated = 0;
    const joinedWith = new Set<string>();
    const scattered: WorkloadTemplate[] = [];
    for (const tpl of profile.templates) {
      const f = tpl.features;
      const route = routeOf(f, t, key, method, shards);
      if (route === 'scatter') scattered.push(tpl);
      const tally = f.kind === 'select' || f.kind === 'other' ? reads : writes;
      tally[route] += tpl.calls;
      if (options.rowsPerCall) work[route] += tpl.calls * (1 + options.rowsPerCall(tpl));
      if (tally === writes && route === 'scatter') withoutKey += tpl.calls;
      if (f.kind === 'update') {
        updateCalls += tpl.calls;
        if (key.some((c) => updatesColumn(f, t, c))) changing += tpl.calls;
      }
      const mine = f.joins.filter((j) => (j.left.table === t) !== (j.right.table === t));
      if (mine.length === 0) continue;
      joinCalls += tpl.calls;
      // Co-located when some join condition is on the key and on the other table's key (or join column).
      const onKey = mine.some((j) => {
        const [ours, theirs] = j.left.table === t ? [j.left, j.right] : [j.right, j.left];
        const ok = key.length === 1 && ours.column === key[0] && theirs.table !== null && (otherKeys[theirs.table] ?? theirs.column) === theirs.column;
        if (ok) joinedWith.add(`${theirs.table}.${theirs.column}`);
        return ok;
      });
      if (onKey) colocated += tpl.calls;
    }
    const r = distribution(reads);
    const w = { ...distribution(writes), withoutShardKey: percent(withoutKey, writes.single + writes.multi + writes.scatter) };
    const total = r.calls + w.calls;

    // Key statistics: a pair's cardinality is at most the product (and the rows); its most common
    // value at most the least of its columns' (no pair is more common than either of its values).
    const s = key.map((c) => stats.get(c));
    const known = s.every((x) => x?.distinct !== null && x?.distinct !== undefined);
    let cardinality = known ? s.reduce((a, x) => a * x!.distinct!, 1) : null;
    if (cardinality !== null && key.length > 1 && options.rows) cardinality = Math.min(cardinality, options.rows);
    const tops = s.map((x) => x?.mostCommon[0]?.frequency ?? null);
    const topFrequency = tops.every((x) => x !== null) ? Math.min(...(tops as number[])) : null;
    const mostCommon = key.length === 1 ? (s[0]?.mostCommon.slice(0, 5) ?? []) : [];
    const correlation = s[0]?.correlation ?? null;
    const incr = increasing.get(key[0]!) ?? 0;
    const monotonicity: CandidateReport['monotonicity'] =
      correlation !== null && Math.abs(correlation) >= MONOTONIC_CORRELATION
        ? { type: 'monotonic', correlation, source: 'pg_stats correlation' }
        : incr > 0
          ? { type: 'monotonic', correlation, source: 'inserts take it from the clock or a sequence' }
          : correlation !== null
            ? { type: 'not monotonic', correlation, source: 'pg_stats correlation' }
            : { type: 'unknown', correlation: null, source: null };

    // The score: what the workload gains, less the risks, each a reason.
    const reasons: string[] = [];
    const byCalls = total > 0 ? (reads.single + writes.single + MULTI_SHARD_WORTH * (reads.multi + writes.multi)) / total : 0;
    const workTotal = work.single + work.multi + work.scatter;
    const byWork = workTotal > 0 ? (work.single + MULTI_SHARD_WORTH * work.multi) / workTotal : null;
    let score = byWork === null ? byCalls : (byCalls + byWork) / 2;
    reasons.push(
      `reads ${r.singleShard}% single-shard, ${r.multiShard}% multi-shard, ${r.scatterGather}% scatter-gather; writes ${w.singleShard}% / ${w.multiShard}% / ${w.scatterGather}% (of ${total} calls)`,
    );
    if (byWork !== null) reasons.push(`by rows (each call weighed by the rows it returns or changes, the log's or the cardinality model's estimate): ${percent(work.single, workTotal)}% single-shard, ${percent(work.scatter, workTotal)}% scatter-gather`);
    // The templates (most called first) that would ask every shard: what the key leaves behind.
    for (const tpl of scattered.slice(0, 2)) reasons.push(`scatter-gather: ${tpl.text.length > 100 ? `${tpl.text.slice(0, 99)}…` : tpl.text} (${tpl.calls} calls)`);
    if (joinCalls > 0) {
      const lost = (joinCalls - colocated) / Math.max(total, 1);
      score -= 0.5 * lost;
      reasons.push(
        colocated === joinCalls
          ? `joins co-located: all ${joinCalls} join calls run on one shard's data (with ${[...joinedWith].join(', ')})`
          : `joins: ${percent(colocated, joinCalls)}% of ${joinCalls} join calls co-located; the rest need rows from other shards`,
      );
    }
    if (changing > 0) {
      score -= changing / Math.max(total, 1);
      reasons.push(`${percent(changing, updateCalls)}% of updates change the key: each moves its row to another shard`);
    }
    if (cardinality !== null) {
      if (cardinality < shards) {
        score -= 0.5;
        reasons.push(`only ~${cardinality} distinct values for ${shards} shards: some shards stay empty`);
      } else if (cardinality < 10 * shards) {
        score -= 0.2;
        reasons.push(`low cardinality: ~${cardinality} distinct values, under 10 per shard, so load moves in coarse steps`);
      } else reasons.push(`cardinality ~${cardinality} distinct values`);
    }
    if (topFrequency !== null && topFrequency > 1 / shards) {
      score -= Math.min(0.4, 2 * (topFrequency - 1 / shards));
      reasons.push(`skew: one value holds ${percent(topFrequency, 1)}% of the rows, more than a shard's share (${percent(1, shards)}%)`);
    }
    if (monotonicity.type === 'monotonic' && method === 'range' && insertCalls > 0) {
      score -= (0.5 * insertCalls) / Math.max(total, 1);
      reasons.push(`monotonic (${monotonicity.source}): every insert lands in the last range, one hot shard`);
    } else if (monotonicity.type === 'monotonic' && method === 'hash') {
      reasons.push(`monotonic (${monotonicity.source}): hashing spreads the inserts`);
    }
    if (key.length > 1) {
      score -= 0.02;
      reasons.push(`composite key: the catalog shards on one column today`);
    }
    return {
      key,
      method,
      score: Math.round(1000 * Math.max(0, score)) / 10,
      current: options.current !== null && options.current !== undefined && key.length === 1 && key[0] === options.current.key && method === options.current.method,
      reads: r,
      writes: w,
      shardKeyUpdates: { updateCalls, changingKey: changing, percent: percent(changing, updateCalls) },
      cardinality,
      mostCommon,
      monotonicity,
      joins: { calls: joinCalls, colocated, percent: percent(colocated, joinCalls), with: [...joinedWith].sort() },
      reasons,
    };
  });

  // Range where it routes no better than hash: hash (it spreads evenly, whatever the values' order).
  for (const rep of reports) {
    if (rep.method !== 'range') continue;
    const hash = reports.find((h) => h.method === 'hash' && h.key.join() === rep.key.join());
    if (hash && hash.reads.scatterGather <= rep.reads.scatterGather && hash.writes.scatterGather <= rep.writes.scatterGather && hash.reads.singleShard >= rep.reads.singleShard) {
      rep.score = Math.max(0, Math.round(10 * (rep.score - 1)) / 10);
      rep.reasons.push('range routes no query better than hash here, and hash spreads the values evenly');
    } else if (hash) rep.reasons.push(`range: the range predicates on ${rep.key[0]} reach only the shards that hold their values (hash would ask every shard)`);
  }
  reports.sort((a, b) => b.score - a.score || a.key.length - b.key.length || (a.method === b.method ? 0 : a.method === 'hash' ? -1 : 1) || a.key.join().localeCompare(b.key.join()));
  return { table: t, shardCount: shards, calls: profile.calls, unparsed: profile.unparsed, templates: profile.templates.length, candidates: reports };
}
