/**
 * The shard proposal engine: from a backup's table (its columns and key statistics), the query
 * analysis and the workload description, the layout to restore into — the shard key, hash or range
 * (with range bounds from the key's quantiles), the number of shards and the node of each shard —
 * each choice with its reason. Pure: no database, no clock.
 */
import type { KeyStats } from '../backup/stats.js';
import type { ManifestTable } from '../backup/manifest.js';
import type { ValueKind } from '../backup/values.js';
import type { QueryAnalysis } from './query-log.js';
import type { Workload } from './workload.js';
import { InvalidInputError } from '../errors.js';
import { loadEvenBounds, predictGrowth, rangeForecasts, TIME_KINDS, timeMs, timeText, type GrowthForecast, type RangeForecast, type TableSnapshot } from './growth.js';

export interface ProposalSettings {
  /** Peak queries per second one shard should serve. */
  shardQps: number;
  /** Bytes one shard should hold. */
  shardBytes: number;
}

export const DEFAULT_PROPOSAL_SETTINGS: ProposalSettings = { shardQps: 1000, shardBytes: 64 * 1024 ** 3 };

export interface ProposalNode {
  name: string;
  /** Relative capacity (the catalog's node capacity; 1 when unknown). */
  capacity: number;
}

export interface ShardProposal {
  index: number;
  node: string;
  /** Range method: [min, max) of the key, as text; null bounds for hash. */
  range: [string, string] | null;
}

export interface ProposalOverrides {
  keyColumn?: string;
  method?: 'hash' | 'range';
  shardCount?: number;
}

export interface Proposal {
  table: string;
  keyColumn: string;
  method: 'hash' | 'range';
  shardCount: number;
  /** Range method: b0 < b1 < … < bn. */
  rangeBounds: string[] | null;
  shards: ShardProposal[];
  /** The data growth predicted for the table over the horizon. */
  growth: GrowthForecast;
  /** Range method: per range, rows now and at the horizon and its share of the predicted load. */
  ranges: RangeForecast[] | null;
  reasons: string[];
}

const RANGE_KINDS: readonly ValueKind[] = ['int16', 'int32', 'int64', 'date', 'timestamp', 'timestamptz'];

interface Candidate {
  column: string;
  kind: ValueKind;
  stats: KeyStats | undefined;
  equality: number;
  range: number;
  join: number;
}

/** Months of growth a range needs room for past the backup's last key, as a time span of the data itself. */
function extendTime(max: string, min: string, factor: number): string {
  const hi = timeMs(max);
  const lo = timeMs(min);
  if (!Number.isFinite(hi) || !Number.isFinite(lo)) return max;
  return timeText(hi + Math.max(86_400_000, (hi - lo) * Math.max(factor - 1, 0.25)), max);
}

/** The exclusive upper bound above the key's maximum, with room for the horizon's growth. */
function upperBound(kind: ValueKind, stats: KeyStats, factor: number): string {
  if (TIME_KINDS.includes(kind)) return extendTime(stats.max!, stats.min!, factor);
  const hi = BigInt(stats.max!);
  const lo = BigInt(stats.min!);
  const room = ((hi - lo) * BigInt(Math.round(Math.max(factor - 1, 0.25) * 1000))) / 1000n;
  return (hi + (room > 0n ? room : 1n)).toString();
}

/** Shards to nodes: each to the node with the least shards per unit of capacity (ties: the order given). */
function place(count: number, nodes: readonly ProposalNode[]): string[] {
  const held = new Map(nodes.map((n) => [n.name, 0]));
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    let best = nodes[0]!;
    for (const n of nodes) if (held.get(n.name)! / n.capacity < held.get(best.name)! / best.capacity) best = n;
    held.set(best.name, held.get(best.name)! + 1);
    out.push(best.name);
  }
  return out;
}

export function proposeLayout(
  table: ManifestTable,
  inputs: {
    analysis?: QueryAnalysis | null;
    workload?: Workload | null;
    nodes: readonly ProposalNode[];
    settings?: ProposalSettings;
    bytes?: number;
    /** The operator's choices (`--key`, `--method`, `--shards`), kept over the proposal's own; the rest still follows from them. */
    overrides?: ProposalOverrides;
    /** When the backup was made (its manifest's createdAt): needed to use `history`. */
    exportedAt?: string;
    /** The table's earlier manifests (`--history`): its growth is measured from them. */
    history?: ReadonlyArray<{ at: string; rows: number; keyStats: readonly KeyStats[] }>;
  },
): Proposal {
  const settings = inputs.settings ?? DEFAULT_PROPOSAL_SETTINGS;
  const { analysis, workload, nodes } = inputs;
  if (nodes.length === 0) throw new Error('no node to place shards on');
  const reasons: string[] = [];
  const stats = new Map(table.keyStats.map((s) => [s.column, s]));

  // The key: the candidate column the workload filters on most; equality favours hash, range a range key.
  const candidates: Candidate[] = table.columns
    .filter((c) => stats.has(c.name))
    .map((c) => ({ column: c.name, kind: c.arrow, stats: stats.get(c.name), equality: analysis?.columns[c.name]?.equality ?? 0, range: analysis?.columns[c.name]?.range ?? 0, join: analysis?.columns[c.name]?.join ?? 0 }));
  const score = (c: Candidate) => c.equality + (RANGE_KINDS.includes(c.kind) ? c.range : 0) + c.join / 2;
  const overrides = inputs.overrides ?? {};
  let key = [...candidates].sort((a, b) => score(b) - score(a))[0];
  if (overrides.keyColumn !== undefined) {
    const chosen = candidates.find((c) => c.column === overrides.keyColumn);
    if (!chosen) {
      throw new InvalidInputError(
        `--key ${overrides.keyColumn}: ${table.columns.some((c) => c.name === overrides.keyColumn) ? 'its type cannot be a shard key' : `not a column of ${table.name}`} (candidates: ${candidates.map((c) => c.column).join(', ') || 'none'})`,
      );
    }
    key = chosen;
    reasons.push(`key ${key.column}: chosen by the operator (--key)`);
  } else if (!key || score(key) === 0) {
    const pk = candidates.find((c) => c.column === table.primaryKey[0]) ?? candidates[0];
    if (!pk) throw new Error(`table ${table.name} has no column that can be a shard key`);
    key = pk;
    reasons.push(`key ${key.column}: ${analysis ? 'no query filters on a key candidate' : 'no query log'}, so the ${table.primaryKey[0] === key.column ? 'primary key' : 'first candidate column'}`);
  } else {
    const share = analysis!.calls ? Math.round((score(key) / analysis!.calls) * 100) : 0;
    reasons.push(`key ${key.column}: filtered in ${share}% of the ${analysis!.calls} calls on ${table.name} (equality ${key.equality}, range ${key.range}, join ${key.join})`);
  }
  const rangeable = RANGE_KINDS.includes(key.kind) && key.stats !== undefined && key.stats.quantiles.length > 1;
  if (overrides.method === 'range' && !rangeable) throw new InvalidInputError(`--method range: ${key.column} is ${key.kind}; range sharding takes an integer, date or timestamp key with statistics`);
  const method: 'hash' | 'range' = overrides.method ?? (rangeable && key.range > key.equality ? 'range' : 'hash');
  reasons.push(
    overrides.method !== undefined
      ? `${method}: chosen by the operator (--method)`
      : method === 'range'
      ? `range: range predicates on ${key.column} (${key.range} calls) outnumber equality (${key.equality}): a range query then reads the few shards that hold its range`
      : `hash: ${key.equality >= key.range ? `equality lookups on ${key.column} (${key.equality} calls) go to one shard each` : `${key.column} cannot be range-sharded`}, and hashing spreads the keys evenly`,
  );
  const top = key.stats?.heavyHitters[0];
  if (method === 'hash' && top && top.frequency > 0.2) reasons.push(`note: ${key.column} = ${top.value} holds ${Math.round(top.frequency * 100)}% of the rows; its shard will be that much larger`);

  // Growth of the data: measured from past manifests or the source cluster's row counts, else as stated; where on the key it lands.
  const horizonMonths = workload?.horizonMonths ?? 12;
  const growth = predictGrowth(
    { at: inputs.exportedAt ?? '', rows: table.rows, keyMax: key.stats?.max ?? null },
    { kind: key.kind, stats: key.stats },
    inputs.exportedAt ? (inputs.history ?? []).map((h): TableSnapshot => ({ at: h.at, rows: h.rows, keyMax: h.keyStats.find((k) => k.column === key.column)?.max ?? null })) : [],
    { statedPerMonth: workload?.growthPerMonth ?? null, horizonMonths, ...(table.rowHistory ? { metrics: table.rowHistory } : {}) },
  );
  reasons.push(...growth.reasons);

  // How many shards: the peak load and the data at the end of the horizon, each shard within its share.
  // Load grows as stated; the data as measured from past manifests when there are any, else as stated.
  const loadFactor = workload ? (1 + workload.growthPerMonth) ** workload.horizonMonths : 1;
  const factor = growth.source === 'history' || growth.source === 'metrics' ? growth.rowsAtHorizon / Math.max(1, table.rows) : loadFactor;
  const volume = Math.max(workload?.predictedDataVolume ?? 0, inputs.bytes ?? 0);
  const byQps = workload ? Math.ceil((workload.predictedPeakQps * loadFactor) / settings.shardQps) : 1;
  const byBytes = Math.ceil((volume * factor) / settings.shardBytes);
  let count = overrides.shardCount ?? Math.max(1, byQps, byBytes, nodes.length);
  if (workload) reasons.push(`load: ${workload.predictedPeakQps} qps at peak × ${loadFactor.toFixed(2)} growth over ${workload.horizonMonths} months = ${Math.round(workload.predictedPeakQps * loadFactor)} qps, ${settings.shardQps} per shard → ${byQps} shard(s)`);
  reasons.push(`data: ${(volume / 1e9).toFixed(1)} GB × ${factor.toFixed(2)} = ${((volume * factor) / 1e9).toFixed(1)} GB, ${(settings.shardBytes / 1024 ** 3).toFixed(0)} GiB per shard → ${byBytes} shard(s)`);
  if (overrides.shardCount !== undefined) reasons.push(`shards: ${overrides.shardCount}, chosen by the operator (--shards)`);
  else if (method === 'hash' && count % nodes.length !== 0) count += nodes.length - (count % nodes.length);
  if (key.stats && key.stats.distinctEstimate > 0 && count > key.stats.distinctEstimate) {
    reasons.push(`note: ${key.column} has about ${key.stats.distinctEstimate} distinct values, fewer than ${count} shards: some shards stay empty`);
  }
  let bounds: string[] | null = null;
  let ranges: RangeForecast[] | null = null;
  if (method === 'range') {
    const writeShare = analysis && analysis.calls > 0 ? analysis.writes / analysis.calls : 0.5;
    bounds = loadEvenBounds(key.kind, key.stats!, table.rows, count, growth, upperBound(key.kind, key.stats!, factor), writeShare);
    if (bounds.length - 1 < count) reasons.push(`range bounds: the key's quantiles give only ${bounds.length - 1} distinct ranges`);
    count = bounds.length - 1;
    ranges = rangeForecasts(key.kind, key.stats!, table.rows, bounds, growth, writeShare);
    const rowsNow = ranges.map((r) => r.rowsNow);
    const shares = ranges.map((r) => r.loadShare * 100);
    reasons.push(
      `range bounds from ${key.column}'s quantiles, even in predicted load (${Math.round(writeShare * 100)}% writes${analysis ? '' : ', assumed'}; ` +
        `${growth.pattern === 'append' && growth.rowsPerMonth > 0 ? 'inserts at the top of the key' : 'inserts spread over the key'}): ` +
        `${Math.min(...shares).toFixed(1)}–${Math.max(...shares).toFixed(1)}% of the load per range, ${Math.min(...rowsNow)}–${Math.max(...rowsNow)} rows per range now; the last is open to ${bounds.at(-1)} for the growth`,
    );
  }
  if (overrides.shardCount === undefined) reasons.push(`shards: ${count}${method === 'hash' ? `, a multiple of the ${nodes.length} node(s)` : ''}`);
  const placement = place(count, nodes);
  return {
    table: table.name,
    keyColumn: key.column,
    method,
    shardCount: count,
    rangeBounds: bounds,
    shards: placement.map((node, i) => ({ index: i, node, range: bounds ? [bounds[i]!, bounds[i + 1]!] : null })),
    growth,
    ranges,
    reasons,
  };
}
