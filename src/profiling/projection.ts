/**
 * Performance projection of shard layouts (`shardcast advise --compare`): the recorded workload
 * replayed, in simulation, against a candidate configuration — key, method, shard count, placement —
 * over the forecast horizon: the predicted load of every node at every step, the fraction of calls that
 * need more than one shard, and the highest node utilisation.
 *
 * - **The current configuration** is projected on its own forecasts: each shard's `shard:<id>:load`
 *   at the planning bound, on the node that holds it.
 * - **A candidate** spreads the table's predicted load (the sum of its shards' forecasts, step by
 *   step) over its shards by how each template of the workload would route under it, weighed by its
 *   cost (a unit per call, plus one per row it returned or changed when the log gives pg_stat_statements'
 *   `rows`): a single-shard call loads the shard of its key value, in proportion to the rows
 *   each shard would hold; an insert likewise, except on a range key that inserts take from the clock or
 *   a sequence, where every insert lands in the last range; a multi-shard or scatter-gather call loads
 *   every shard evenly. The rows a shard would hold: an even share of the values, plus each most
 *   common value whole on the shard its hash falls in (a value is never split; its access frequency is
 *   taken to follow its row frequency). The shards are placed as the planner would place new ones:
 *   the largest first, each on the node with the lowest predicted utilisation at the peak step.
 * - **Other tables** keep their own predicted load on their nodes in every projection.
 *
 * Pure: no database, no clock. The inputs come from the planner's own inputs (gatherPlanInput).
 */
import { evenHashRanges } from '../catalog/keys.js';
import { InvalidInputError } from '../errors.js';
import { hashTextExtended } from '../hashing.js';
import { routeOf, type CandidateReport, type ColumnStatistics, type Distribution, type KeyMethod, type WorkloadProfile, type WorkloadTemplate } from './advisor.js';
import { CardinalityModel } from './cardinality.js';

export interface ProjectionNode {
  name: string;
  /** Load units; null when unknown (no utilisation is projected on it). */
  capacity: number | null;
  /** Predicted load per step of everything on the node that is not this table's. */
  otherLoad: number[];
  /** Whether a candidate's shards may be placed on it (active and reachable). */
  takesShards: boolean;
}

export interface ProjectionContext {
  /** Per shard of the table today: its node and its predicted load per step, at the planning bound. */
  currentShards: Array<{ shardId: number; node: string; load: number[] }>;
  /** The nodes that hold or could take shards (active and reachable). */
  nodes: ProjectionNode[];
  /** Start of the horizon (ISO) and the step's length. */
  startsAt: string;
  stepSeconds: number;
}

export interface LayoutProjection {
  key: string[];
  method: KeyMethod;
  shardCount: number;
  current: boolean;
  /** Calls that need more than one shard (multi-shard and scatter-gather), 0 … 100. */
  crossShardPercent: number;
  /** Share of the table's load on each shard (0 … 1), and the node each shard is placed on. */
  shards: Array<{ share: number; node: string }>;
  /** Predicted load per node per step. */
  nodeLoad: Record<string, number[]>;
  /** Highest predicted utilisation over nodes and steps (a fraction), null when no capacity is known. */
  maxUtilisation: number | null;
  /** Where and when it is: the busiest node at its busiest step (by utilisation when known, by load otherwise). */
  peak: { node: string; step: number; at: string; load: number };
  notes: string[];
}

const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);

/** The table's predicted load per step: its shards' forecasts summed. */
export function tableLoad(ctx: ProjectionContext): number[] {
  const steps = Math.max(0, ...ctx.currentShards.map((s) => s.load.length));
  return Array.from({ length: steps }, (_, t) => sum(ctx.currentShards.map((s) => s.load[t] ?? 0)));
}

/** The current configuration on its own forecasts. */
export function projectCurrent(report: CandidateReport, ctx: ProjectionContext): LayoutProjection {
  const total = tableLoad(ctx);
  const peakStep = argmax(total);
  const nodeLoad = baseLoad(ctx);
  for (const s of ctx.currentShards) {
    const into = (nodeLoad[s.node] ??= new Array<number>(total.length).fill(0));
    for (let t = 0; t < total.length; t++) into[t]! += s.load[t] ?? 0;
  }
  const shards = ctx.currentShards.map((s) => ({ share: total[peakStep]! > 0 ? (s.load[peakStep] ?? 0) / total[peakStep]! : 1 / ctx.currentShards.length, node: s.node }));
  return finish(report, ctx.currentShards.length, shards, nodeLoad, ctx, ['on its shards\' own forecasts']);
}

/** A candidate configuration with `shardCount` shards, placed by predicted load. */
export function projectCandidate(
  report: CandidateReport,
  profile: WorkloadProfile,
  statistics: readonly ColumnStatistics[],
  shardCount: number,
  ctx: ProjectionContext,
  /** Rows one call of a template returns or changes (e.g. rowsPerCall below); without it, the log's rows when it has them. */
  rowsPerCall?: (t: WorkloadTemplate) => number,
): LayoutProjection {
  const S = Math.max(1, shardCount);
  const notes: string[] = [];
  // Rows per shard: even, plus each most common value whole on its hash's shard.
  const rows = new Array<number>(S).fill(0);
  const common = report.key.length === 1 ? (statistics.find((s) => s.column === report.key[0])?.mostCommon ?? []) : [];
  const ranges = evenHashRanges(S);
  let placed = 0;
  for (const v of common) {
    const h = hashTextExtended(v.value);
    const i = Math.max(0, ranges.findIndex((r) => h >= r.min && h <= r.max));
    rows[i]! += v.frequency;
    placed += v.frequency;
  }
  for (let i = 0; i < S; i++) rows[i]! += Math.max(0, 1 - placed) / S;
  if (common.length && report.method === 'range') notes.push('most common values placed as hashed (their position among the range bounds is not known)');

  // The workload by how each template would route, weighed by its cost: one unit per call, plus one per row it
  // returned or changed when the log says (pg_stat_statements' rows). Inserts apart: they land where their key does.
  const withRows = profile.templates.some((t) => t.rows !== undefined);
  let single = 0;
  let inserts = 0;
  let spread = 0;
  for (const t of profile.templates) {
    const weight = t.calls * (1 + (rowsPerCall ? rowsPerCall(t) : t.calls > 0 ? (t.rows ?? 0) / t.calls : 0));
    const route = routeOf(t.features, profile.table, report.key, report.method, S);
    if (route !== 'single') spread += weight;
    else if (t.features.kind === 'insert') inserts += weight;
    else single += weight;
  }
  if (rowsPerCall) notes.push(`calls weighed by the rows they return or change (${withRows ? 'the log\'s rows; ' : ''}the cardinality model's estimate where the log has none)`);
  else if (withRows) notes.push('calls weighed by the rows they return or change (the log\'s rows)');
  const all = single + inserts + spread;
  const lastRange = report.method === 'range' && report.monotonicity.type === 'monotonic';
  if (lastRange && inserts > 0) notes.push('every insert lands in the last range (a monotonic key)');
  const shares = rows.map((r, i) => {
    if (all <= 0) return 1 / S;
    const insertShare = lastRange ? (i === S - 1 ? 1 : 0) : r;
    return (single * r + inserts * insertShare + spread / S) / all;
  });

  // Placement: the largest share first, each on the node with the lowest utilisation at the peak step.
  const total = tableLoad(ctx);
  const peakStep = argmax(total);
  const nodeLoad = baseLoad(ctx);
  const candidates = ctx.nodes.filter((n) => n.takesShards);
  if (candidates.length === 0) throw new InvalidInputError('projection: no active, reachable node to place shards on');
  const placement = new Array<string>(S);
  const order = shares.map((s, i) => [s, i] as const).sort((a, b) => b[0] - a[0]);
  for (const [share, i] of order) {
    let best = candidates[0]!;
    let bestU = Infinity;
    for (const n of candidates) {
      const u = ((nodeLoad[n.name]![peakStep] ?? 0) + share * (total[peakStep] ?? 0)) / (n.capacity ?? 1);
      if (u < bestU - 1e-12) [best, bestU] = [n, u];
    }
    placement[i] = best.name;
    const into = nodeLoad[best.name]!;
    for (let t = 0; t < total.length; t++) into[t]! += share * total[t]!;
  }
  const shards = shares.map((share, i) => ({ share, node: placement[i]! }));
  return finish(report, S, shards, nodeLoad, ctx, notes);
}

/** The calls of a distribution that need more than one shard. */
function crossShardCalls(d: Distribution): number {
  return (d.calls * (d.multiShard + d.scatterGather)) / 100;
}

function baseLoad(ctx: ProjectionContext): Record<string, number[]> {
  const steps = tableLoad(ctx).length;
  return Object.fromEntries(ctx.nodes.map((n) => [n.name, Array.from({ length: steps }, (_, t) => n.otherLoad[t] ?? 0)]));
}

function argmax(xs: readonly number[]): number {
  let best = 0;
  for (let i = 1; i < xs.length; i++) if (xs[i]! > xs[best]!) best = i;
  return best;
}

function finish(report: CandidateReport, shardCount: number, shards: LayoutProjection['shards'], nodeLoad: Record<string, number[]>, ctx: ProjectionContext, notes: string[]): LayoutProjection {
  const capacity = new Map(ctx.nodes.map((n) => [n.name, n.capacity]));
  let maxUtilisation: number | null = null;
  let peak = { node: '', step: 0, at: ctx.startsAt, load: -Infinity };
  let peakScore = -Infinity;
  const anyCapacity = ctx.nodes.some((n) => n.capacity !== null && n.capacity > 0);
  for (const [node, loads] of Object.entries(nodeLoad)) {
    const cap = capacity.get(node) ?? null;
    for (const [t, load] of loads.entries()) {
      const u = cap !== null && cap > 0 ? load / cap : null;
      if (u !== null) maxUtilisation = Math.max(maxUtilisation ?? 0, u);
      const score = anyCapacity ? (u ?? -Infinity) : load;
      if (score > peakScore) {
        peakScore = score;
        peak = { node, step: t + 1, at: new Date(Date.parse(ctx.startsAt) + t * ctx.stepSeconds * 1000).toISOString(), load };
      }
    }
  }
  const cross = crossShardCalls(report.reads) + crossShardCalls(report.writes);
  return {
    key: report.key,
    method: report.method,
    shardCount,
    current: report.current,
    crossShardPercent: Math.round((1000 * cross) / Math.max(1, report.reads.calls + report.writes.calls)) / 10,
    shards,
    nodeLoad,
    maxUtilisation,
    peak,
    notes,
  };
}

/**
 * Rows per call of each template, for weighing it: the log's own (pg_stat_statements' rows ÷ calls)
 * where it has them; elsewhere the cardinality model's prediction (src/profiling/cardinality.ts) from
 * the table's key statistics, trained on the templates that have them. An insert changes the rows it
 * lists (its VALUES rows, at least one).
 */
export function rowsPerCall(profile: WorkloadProfile, statistics: readonly ColumnStatistics[], tableRows: number | null): (t: WorkloadTemplate) => number {
  const columns = Object.fromEntries(statistics.map((s) => [s.column, { nullFraction: s.nullFraction, distinct: s.distinct, mostCommon: s.mostCommon, histogram: [] }]));
  // Unknown rows: the table is left out, and the model takes PostgreSQL's default (1,000 rows).
  const model = new CardinalityModel(tableRows !== null && tableRows > 0 ? { [profile.table]: { rows: tableRows, columns } } : {});
  for (const t of profile.templates) if (t.rows !== undefined && t.calls > 0) model.observe({ features: t.features, fingerprint: t.fingerprint }, t.rows / t.calls);
  // Each template's figure once: the advisor and the projections ask for it per candidate key.
  const known = new Map<WorkloadTemplate, number>();
  return (t) => {
    let rows = known.get(t);
    if (rows === undefined) {
      if (t.rows !== undefined && t.calls > 0) rows = t.rows / t.calls;
      else if (t.features.kind === 'insert') rows = Math.max(1, t.features.insertedRows);
      else rows = Math.max(0, model.predict({ features: t.features, fingerprint: t.fingerprint }));
      known.set(t, rows);
    }
    return rows;
  };
}
