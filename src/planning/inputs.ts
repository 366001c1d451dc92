/**
 * The planner's input, read from the catalog and the nodes (DESIGN §5). The planner itself is pure
 * (planner.ts); this is where its numbers come from:
 *
 * - Nodes: state, region, zone, reachability (the collector's last round, node_health) and capacity:
 *   the catalog's override, else calibrated from the node's own history (capacity.ts: its load series
 *   against its host CPU series, 5-minute buckets over `calibrationDays`). A node that cannot be
 *   calibrated takes the median of the calibrated ones, and the plan says so; with none known there is
 *   nothing to plan against (CapacityUnknownError).
 * - Placements: every shard of an active table, its colocation group, its position in the group and its size
 *   (its schema's relations on its node, read live).
 * - Forecasts: each shard's latest `shard:<id>:load` forecast (twelve 5-minute steps, 80/95% bounds).
 *   It is trusted when its model is a trained ensemble whose back-test beats seasonal naive, and it
 *   was issued within `maxForecastAgeSeconds`; otherwise the shard is planned on its observed load
 *   (the mean of the last 15 minutes), reactively, with room kept on its node for its highest load of
 *   the last day when it was seen for most of it; the plan names the series and why.
 * - Region shares: each shard's accesses per client region over the last day, as routers created with
 *   a `region` recorded them (profiling/region-accesses.ts): the locality term of the target cost.
 * - Daily profiles (the last 24 hours, hourly), recent moves (hysteresis), the predicted peaks of the
 *   last plans (scale-in), and the move-duration model learned from finished movements.
 */
import { clockSeconds, dayMs, hourMs, stepMs, stepStart } from '../clock.js';
import type pg from 'pg';
import type { NodePools } from '../catalog/node-pools.js';
import { listNodes, type NodeRecord, type Queryable } from '../catalog/nodes.js';
import { ShardcastError, sqlState, UNDEFINED_TABLE_SQLSTATE } from '../errors.js';
import { latestForecast, listSeriesWithModels, type SeriesListing } from '../forecasting/store.js';
import { nodeHealth } from '../profiling/collector.js';
import { regionShares } from '../profiling/region-accesses.js';
import { loadSeries } from '../profiling/series.js';
import { calibrateCapacity, type CapacityEstimate } from './capacity.js';
import { learnMoveDuration } from './duration.js';
import { provisionedSlot, type ProvisionerConfig } from './provisioner.js';
import { onLoadClock, resolveSettings } from './settings.js';
import type { DailyProfile, PlanInput, PlanNode, Placement, RecentMove, ShardForecast, StepForecast, UtilisationHistory } from './types.js';

/**
 * A series' highest 5-minute load over the last day, when at least 80% of the day's steps were seen
 * (a shard split off a few hours ago has not shown its day yet): the room kept on its node for a shard
 * with no trustworthy forecast.
 */
async function peakOfLastDay(catalog: Queryable, series: string, asOf: Date): Promise<number | undefined> {
  const day = await loadSeries(catalog, series, new Date(asOf.getTime() - dayMs()), asOf, stepMs());
  const seen = day.map((p) => p.value).filter((v): v is number => v !== null);
  return seen.length >= 0.8 * (dayMs() / stepMs()) ? Math.max(...seen) : undefined;
}

/** No node's capacity is known (none set, none calibrated): there is nothing to plan against. */
export class CapacityUnknownError extends ShardcastError {
  constructor(detail: string) {
    super('CAPACITY_UNKNOWN', `no node's capacity is known (${detail}): set one with \`shardcast nodes set-capacity NODE UNITS\`, or let the collector gather a few hours of load and CPU`);
  }
}

export interface GatherOptions {
  /**
   * The horizon's start; default: now, at the start of its 5-minute step. The horizon slides with
   * it over the latest forecast (two hours issued hourly), so a plan made late in the hour still
   * sees `horizonSteps` ahead.
   */
  asOf?: Date;
  now?: Date;
  settings?: PlanInput['settings'];
  /** Days of history capacity is calibrated on (default 7). */
  calibrationDays?: number;
  /** A forecast older than this is not trusted (default 2 hours). */
  maxForecastAgeSeconds?: number;
  /** planning.provisioner: with a command or webhook and no standby node, the plan may activate one it would make. */
  provisioner?: ProvisionerConfig;
}

export interface NodeCapacity {
  node: string;
  capacity: number | null;
  estimate: CapacityEstimate;
  /** Where the number the planner uses came from. */
  basis: 'override' | 'calibrated' | 'fleet median' | 'unknown';
}

export interface GatheredInput {
  input: PlanInput;
  capacities: NodeCapacity[];
  /** What the planner's notes should also say about the inputs (fallbacks, unreachable nodes). */
  notes: string[];
}

export async function gatherPlanInput(catalog: pg.Pool, pools: NodePools, options: GatherOptions = {}): Promise<GatheredInput> {
  const now = options.now ?? new Date();
  const given = onLoadClock(options.settings);
  const settings = resolveSettings(given);
  const notes: string[] = [];
  const allNodes = (await listNodes(catalog)).filter((n) => n.state !== 'retired');
  const health = new Map((await nodeHealth(catalog)).map((h) => [h.node, h]));

  const shardRows = await placementsOf(catalog);
  const shardIds = shardRows.map((r) => r.shardId);
  const listings = new Map((await listSeriesWithModels(catalog, [])).map((l) => [l.series, l]));
  const issued = await Promise.all(shardIds.map((id) => latestForecast(catalog, `shard:${id}:load`)));
  const maxAge = clockSeconds(options.maxForecastAgeSeconds ?? 7200) * 1000;
  const asOf = options.asOf ?? new Date(stepStart(now.getTime()));

  const capacities = await capacitiesOf(catalog, allNodes, asOf, options.calibrationDays ?? 7, settings.targetUtilisation);
  const known = capacities.filter((c) => c.capacity !== null).map((c) => c.capacity!);
  if (known.length === 0) throw new CapacityUnknownError(capacities.map((c) => `${c.node}: ${c.estimate.detail}`).join('; ') || 'no nodes');
  const median = [...known].sort((a, b) => a - b)[Math.floor((known.length - 1) / 2)]!;
  for (const c of capacities) {
    if (c.capacity !== null) continue;
    c.capacity = median;
    c.basis = 'fleet median';
    notes.push(`${c.node}: capacity not calibrated (${c.estimate.detail}); planned at the fleet median ${median.toPrecision(4)}`);
  }
  const capacityOf = new Map(capacities.map((c) => [c.node, c.capacity!]));

  const nodes: PlanNode[] = allNodes.map((n) => {
    const h = health.get(n.name);
    const reachable = h?.reachable !== false;
    if (!reachable) notes.push(`${n.name} is unreachable (${h?.error ?? 'no answer'}): no shard is moved to it or copied from it`);
    return { id: n.id, name: n.name, capacity: capacityOf.get(n.name)!, state: n.state, region: n.region, zone: n.zone, reachable };
  });

  const slot = provisionedSlot(nodes, options.provisioner);
  if (slot) nodes.push(slot);

  const bytes = await shardBytes(pools, allNodes, shardRows, health, notes);
  const placements: Placement[] = shardRows.map((r) => ({ ...r, bytes: bytes.get(r.shardId) ?? 0 }));
  const inFlight = await movementsInFlight(catalog, placements, allNodes, asOf, notes);

  const horizon = settings.horizonSteps;
  const shardForecasts: ShardForecast[] = [];
  const dailyProfiles: DailyProfile[] = [];
  for (const [i, id] of shardIds.entries()) {
    const series = `shard:${id}:load`;
    const recent = await loadSeries(catalog, series, new Date(asOf.getTime() - 3 * stepMs()), asOf, stepMs());
    const seen = recent.map((p) => p.value).filter((v): v is number => v !== null);
    const observedLoad = seen.length ? seen.reduce((a, b) => a + b, 0) / seen.length : 0;
    // The forecast's steps from the one in progress at asOf on (each row's ts is the start of its step).
    const rows = issued[i]!.filter((r) => r.ts.getTime() + stepMs() > asOf.getTime());
    const why = untrusted(listings.get(series), issued[i]!.length, rows, asOf, maxAge, horizon);
    const steps: StepForecast[] = why
      ? Array.from({ length: horizon }, () => ({ point: observedLoad, lo80: observedLoad, hi80: observedLoad, lo95: observedLoad, hi95: observedLoad }))
      : rows.slice(0, horizon).map((r) => ({ point: r.yhat, lo80: r.lo80, hi80: r.hi80, lo95: r.lo95, hi95: r.hi95 }));
    const observedPeak = why ? await peakOfLastDay(catalog, series, asOf) : undefined;
    shardForecasts.push({ shardId: id, series, steps, trustworthy: !why, observedLoad, ...(observedPeak !== undefined ? { observedPeak } : {}), ...(why ? { untrustedBecause: why } : {}) });
    const day = await loadSeries(catalog, series, new Date(asOf.getTime() - dayMs()), asOf, hourMs());
    const values = day.map((p) => p.value);
    const present = values.filter((v): v is number => v !== null);
    if (present.length >= 12) {
      const mean = present.reduce((a, b) => a + b, 0) / present.length;
      dailyProfiles.push({ shardId: id, values: values.map((v) => v ?? mean) });
    }
  }

  return {
    input: {
      asOf: asOf.toISOString(),
      nodes,
      placements,
      shardForecasts,
      dailyProfiles,
      // Only of shards placed now: a shard split or merged away keeps its counts for a day.
      regionShares: (
        await regionShares(catalog, asOf).catch((err: unknown) => {
          if (sqlState(err) === UNDEFINED_TABLE_SQLSTATE) return []; // a catalog before migration 0014
          throw err;
        })
      ).filter((r) => placements.some((p) => p.shardId === r.shardId)),
      recentMoves: [...(await recentMoves(catalog, asOf, settings.hysteresisSeconds)), ...inFlight],
      utilisationHistory: (await utilisationHistory(catalog, settings.scaleIn.sustainedRounds, settings.scaleIn.lookaheadSteps)).filter((h) => nodes.some((n) => n.id === h.nodeId)),
      moveDuration: learnMoveDuration(await pastMovements(catalog)),
      ...(given ? { settings: given } : {}),
    },
    capacities,
    notes,
  };
}

/** Why a shard's forecast is not trusted, or undefined when it is. */
function untrusted(listing: SeriesListing | undefined, issuedSteps: number, rows: ReadonlyArray<{ issuedAt: Date }>, asOf: Date, maxAgeMs: number, horizon: number): string | undefined {
  if (!listing || listing.status === null) return 'no model trained yet';
  if (listing.status === 'failed') return `its last training failed${listing.error ? `: ${listing.error}` : ''}`;
  if (listing.status === 'fallback') return 'too little history for a trained model (seasonal naive only)';
  if (listing.mase === null || listing.baselineMase === null) return 'no back-test score';
  if (!(listing.mase < listing.baselineMase)) return `its back-test (MASE ${listing.mase.toFixed(3)}) is no better than seasonal naive (${listing.baselineMase.toFixed(3)})`;
  if (issuedSteps === 0) return 'no forecast issued yet';
  if (rows.length < horizon) return rows.length === 0 ? 'its latest forecast ends before the plan' : `its latest forecast has ${rows.length} of ${horizon} steps left`;
  const age = asOf.getTime() - rows[0]!.issuedAt.getTime();
  if (age > maxAgeMs) return `its latest forecast was issued ${Math.round(age / 60_000)} minutes before the plan`;
  return undefined;
}

type PlacementRow = Omit<Placement, 'bytes'> & { schema: string };

/** Every shard of active tables where it is placed, with its colocation group, lead table and position in the group. */
async function placementsOf(catalog: Queryable): Promise<PlacementRow[]> {
  const { rows } = await catalog.query<PlacementRow>(
    `select s.id::int as "shardId", s.schema_name as schema, g.name as "colocationGroup", p.node_id::int as "nodeId",
            (select t.name from shardcast.distributed_tables t where t.group_id = g.id order by t.id limit 1) as "table",
            (row_number() over (partition by s.group_id order by s.hash_min nulls last, s.id) - 1)::int as "rangeIndex"
       from shardcast.shards s
       join shardcast.colocation_groups g on g.id = s.group_id
       join shardcast.placements p on p.shard_id = s.id
      where not exists (select 1 from shardcast.distributed_tables t where t.group_id = g.id and t.state <> 'active')
      order by s.id`,
  );
  return rows;
}

/** Each shard's size on its node (its schema's tables, indexes and TOAST); 0 where the node does not answer. */
async function shardBytes(
  pools: NodePools,
  nodes: readonly NodeRecord[],
  shards: readonly PlacementRow[],
  health: Map<string, { reachable: boolean | null }>,
  notes: string[],
): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  for (const node of nodes) {
    const mine = shards.filter((s) => s.nodeId === node.id);
    if (mine.length === 0 || health.get(node.name)?.reachable === false) continue;
    try {
      const { rows } = await pools
        .get(node.dsn)
        .query<{ schema: string; bytes: string }>(
          'select schemaname as schema, sum(pg_total_relation_size(relid))::bigint::text as bytes from pg_stat_user_tables where schemaname = any($1::text[]) group by 1',
          [mine.map((s) => s.schema)],
        );
      const bySchema = new Map(rows.map((r) => [r.schema, Number(r.bytes)]));
      for (const s of mine) out.set(s.shardId, bySchema.get(s.schema) ?? 0);
    } catch (err) {
      notes.push(`${node.name}: shard sizes unknown (${(err as Error).message}); taken as 0`);
    }
  }
  return out;
}

/** Capacity per node: the override, or calibrated from 5-minute buckets of its load and CPU series. */
async function capacitiesOf(catalog: pg.Pool, nodes: readonly NodeRecord[], asOf: Date, days: number, target: number): Promise<NodeCapacity[]> {
  const from = new Date(asOf.getTime() - days * dayMs());
  const out: NodeCapacity[] = [];
  for (const n of nodes) {
    if (n.capacity !== null) {
      out.push({ node: n.name, capacity: n.capacity, estimate: calibrateCapacity([], { override: n.capacity, targetUtilisation: target }), basis: 'override' });
      continue;
    }
    const [load, cpu] = await Promise.all([loadSeries(catalog, `node:${n.name}:load`, from, asOf, stepMs()), loadSeries(catalog, `node:${n.name}:cpu`, from, asOf, stepMs())]);
    const samples = load.flatMap((p, i) => (p.value !== null && cpu[i]?.value != null ? [{ load: p.value, cpuPercent: cpu[i]!.value! }] : []));
    const estimate = calibrateCapacity(samples, { targetUtilisation: target });
    out.push({ node: n.name, capacity: estimate.status === 'insufficient' ? null : estimate.capacity, estimate, basis: estimate.status === 'insufficient' ? 'unknown' : 'calibrated' });
  }
  return out;
}

/**
 * Movements running now (e.g. one a replanning round left waiting for approval): a moving shard is
 * planned on its target, where its load is going, and every shard under a movement is left alone
 * (a recent move as of now: hysteresis keeps relief off it, and off its source). Placements are
 * changed in place.
 */
async function movementsInFlight(catalog: Queryable, placements: Placement[], nodes: readonly NodeRecord[], asOf: Date, notes: string[]): Promise<RecentMove[]> {
  const { rows } = await catalog.query<{ id: string; operation: string; shards: number[]; source: number; target: number }>(
    `select id, operation, (shard_id || other_shard_ids)::int[] as shards, source_node_id::int as source, target_node_ids[1]::int as target
       from shardcast.movements where state = 'running' order by started_at`,
  );
  const name = (id: number) => nodes.find((n) => n.id === id)?.name ?? `node ${id}`;
  const out: RecentMove[] = [];
  for (const m of rows) {
    const moving = m.operation === 'move' && nodes.some((n) => n.id === m.target && n.state !== 'retired');
    for (const p of placements.filter((x) => m.shards.includes(x.shardId))) {
      const from = p.nodeId;
      if (moving) p.nodeId = m.target;
      out.push({ shardId: p.shardId, fromNodeId: from, toNodeId: p.nodeId, finishedAt: asOf.toISOString() });
    }
    notes.push(
      moving
        ? `shard ${m.shards[0]} is being moved to ${name(m.target)} (movement ${m.id}): planned there, and left alone`
        : `shard${m.shards.length > 1 ? 's' : ''} ${m.shards.join(', ')} ${m.shards.length > 1 ? 'are' : 'is'} being ${m.operation === 'split' ? 'split' : 'merged'} (movement ${m.id}): left alone`,
    );
  }
  return out;
}

async function recentMoves(catalog: Queryable, asOf: Date, windowSeconds: number): Promise<RecentMove[]> {
  const { rows } = await catalog.query<{ shard_id: number; source: number; target: number; finished_at: Date }>(
    `select shard_id::int, source_node_id::int as source, target_node_ids[1]::int as target, finished_at from shardcast.movements
      where operation = 'move' and state = 'done' and finished_at >= $1`,
    [new Date(asOf.getTime() - windowSeconds * 1000)],
  );
  return rows.map((r) => ({ shardId: r.shard_id, fromNodeId: r.source, toNodeId: r.target, finishedAt: r.finished_at.toISOString() }));
}

/** Each node's predicted peak utilisation with the plan, over the last `rounds` stored plans, oldest first. */
/** Each node's predicted peak over the first `lookahead` steps of each of the last plans (what scale-in asks of them). */
async function utilisationHistory(catalog: Queryable, rounds: number, lookahead: number): Promise<UtilisationHistory[]> {
  const { rows } = await catalog.query<{ nodes: Array<{ nodeId: number; with: number[] }> }>(
    `select plan -> 'nodes' as nodes from (select plan, created_at from shardcast.plans where trigger <> 'drain' order by created_at desc limit $1) p order by created_at`,
    [rounds],
  );
  const out = new Map<number, number[]>();
  for (const r of rows) for (const n of r.nodes ?? []) out.set(n.nodeId, [...(out.get(n.nodeId) ?? []), Math.max(0, ...n.with.slice(0, lookahead))]);
  return [...out].map(([nodeId, values]) => ({ nodeId, values }));
}

async function pastMovements(catalog: Queryable): Promise<Array<{ bytes: number; seconds: number }>> {
  const { rows } = await catalog.query<{ bytes: string; seconds: number }>(
    `select bytes::text, extract(epoch from finished_at - started_at)::float8 as seconds from shardcast.movements
      where state = 'done' and bytes is not null and finished_at is not null order by finished_at desc limit 200`,
  );
  return rows.map((r) => ({ bytes: Number(r.bytes), seconds: r.seconds }));
}
