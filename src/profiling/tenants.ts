/**
 * Tenant isolation (issue 13): a single shard-key value (a tenant) that takes most of its shard's
 * accesses is split off into a shard of its own, by the movement workflow's splits, and placed on
 * another node, so that the rest of its old shard no longer shares a node with it and the planner
 * can place it on its own.
 *
 * Detection reads the routers' workload profile (src/profiling/workload.ts): a key's accesses are
 * its heavy-hitter lower bound (never an overestimate) over the window, its shard's the shard
 * accesses over the same window. A key is a hot tenant when it takes at least `minShare` of its
 * shard's accesses, with at least `minAccesses` of them, and the shard holds more than that key.
 *
 * Isolation is one or two splits (isolationSteps): for a hash-sharded table the key's hash h is cut
 * out of its shard's range [min, max] as [h, h] (split at h − 1, then at h); for an integer range
 * key k, [k, k + 1). The first split leaves both halves on the shard's node (a local copy); the
 * second puts the key's piece on the target node. Keys hashing to the same value as the tenant's
 * share its piece (rare: 64-bit hashes).
 */
import type { Queryable } from '../catalog/nodes.js';
import { compareKeys, hashKey, keyToText, normalizeKey, type KeyType } from '../catalog/keys.js';
import { InvalidInputError, NotFoundError } from '../errors.js';
import { localityCost, peakStacking, targetCost, type CostTerms } from '../planning/cost.js';
import { DEFAULT_SETTINGS } from '../planning/settings.js';
import type { Plan, PlannerWeights } from '../planning/types.js';
import { dayMs, hourMs } from '../clock.js';
import { loadSeries } from './series.js';

export interface TenantShard {
  shardId: number;
  node: string;
  hashMin: string | null;
  hashMax: string | null;
  rangeMin: string | null;
  rangeMax: string | null;
}

export interface TenantTable {
  table: string;
  method: 'hash' | 'range';
  keyType: KeyType;
  shards: TenantShard[];
}

/** One split of an isolation: the shard it splits (a placeholder for the previous split's upper half), where, and onto which nodes. */
export interface IsolationStep {
  /** The shard to split: a number, or 'upper' for the upper half the previous step made. */
  shard: number | 'upper';
  at: string;
  /** Nodes of the lower and the upper half. */
  targets: [string, string];
}

export interface IsolationPlan {
  table: string;
  key: string;
  shardId: number;
  sourceNode: string;
  targetNode: string;
  /** What the key's piece covers: [h, h] (hash) or [k, k + 1) (range). */
  piece: string;
  steps: IsolationStep[];
  /** Which half of the last step holds the key (0: lower, 1: upper). */
  keyHalf: 0 | 1;
  /** Why the target, when Shardcast chose it (chooseIsolationTarget). */
  reason?: string;
}

/** The table's sharding and shards with their nodes; a clear error for a table that is not an active distributed table. */
export async function tenantTable(catalog: Queryable, table: string): Promise<TenantTable> {
  const { rows } = await catalog.query<{ method: 'hash' | 'range'; key_type: KeyType; state: string; id: string | null; node: string | null; hash_min: string | null; hash_max: string | null; range_min: string | null; range_max: string | null }>(
    `select g.method, g.key_type, t.state, s.id::text, n.name as node, s.hash_min::text, s.hash_max::text, s.range_min, s.range_max
       from shardcast.distributed_tables t
       join shardcast.colocation_groups g on g.id = t.group_id
       left join shardcast.shards s on s.group_id = g.id
       left join shardcast.placements p on p.shard_id = s.id
       left join shardcast.nodes n on n.id = p.node_id
      where t.name = $1 order by s.id`,
    [table],
  );
  if (rows.length === 0) throw new NotFoundError(`there is no distributed table "${table}"`);
  if (rows[0]!.state !== 'active') throw new InvalidInputError(`table "${table}" is ${rows[0]!.state}, not active`);
  return {
    table,
    method: rows[0]!.method,
    keyType: rows[0]!.key_type,
    shards: rows.filter((r) => r.id !== null).map((r) => ({ shardId: Number(r.id), node: r.node ?? '', hashMin: r.hash_min, hashMax: r.hash_max, rangeMin: r.range_min, rangeMax: r.range_max })),
  };
}

/** The shard holding `key`, the key normalised (a clear error for a key the column's type cannot take). */
export function shardOfKey(t: TenantTable, key: string): { shard: TenantShard; normalized: string; hash?: bigint } {
  let normalized: string;
  try {
    normalized = keyToText(normalizeKey(t.keyType, key));
  } catch (err) {
    throw new InvalidInputError(`key ${JSON.stringify(key)} of table "${t.table}": ${(err as Error).message}`);
  }
  if (t.method === 'hash') {
    const hash = hashKey(t.keyType, normalizeKey(t.keyType, key));
    const shard = t.shards.find((s) => BigInt(s.hashMin!) <= hash && hash <= BigInt(s.hashMax!));
    if (!shard) throw new InvalidInputError(`key ${normalized} of table "${t.table}" is in no shard`);
    return { shard, normalized, hash };
  }
  const shard = t.shards.find((s) => compareKeys(t.keyType, s.rangeMin!, normalized) <= 0 && compareKeys(t.keyType, normalized, s.rangeMax!) < 0);
  if (!shard) throw new InvalidInputError(`key ${normalized} of table "${t.table}" is in no shard's range`);
  return { shard, normalized };
}

/**
 * Where `key`'s piece is cut out of its shard (`lo`, `hi`: the split points, each absent at an end of
 * the shard), or why it cannot be: the key already has the shard to itself, or its range type has
 * no successor to end a piece at. One rule for `isolate` and for the list of hot tenants.
 */
function cutOf(t: TenantTable, placed: ReturnType<typeof shardOfKey>): { lo?: string; hi?: string; piece: string } | { cannot: string } {
  const { shard, normalized, hash } = placed;
  if (t.method === 'hash') {
    const min = BigInt(shard.hashMin!);
    const max = BigInt(shard.hashMax!);
    const h = hash!;
    if (min === max) return { cannot: `key ${normalized} of table "${t.table}" already has shard ${shard.shardId} to itself (hash ${h})` };
    return { ...(min < h ? { lo: (h - 1n).toString() } : {}), ...(h < max ? { hi: h.toString() } : {}), piece: `hash [${h}, ${h}]` };
  }
  if (t.keyType !== 'smallint' && t.keyType !== 'integer' && t.keyType !== 'bigint') {
    return { cannot: `table "${t.table}" is range-sharded by a ${t.keyType} key: a single key's range has no end to split at (only integer keys)` };
  }
  const next = (BigInt(normalized) + 1n).toString();
  const inside = (v: string) => compareKeys(t.keyType, shard.rangeMin!, v) < 0 && compareKeys(t.keyType, v, shard.rangeMax!) < 0;
  if (!inside(normalized) && !inside(next)) return { cannot: `key ${normalized} of table "${t.table}" already has shard ${shard.shardId} to itself` };
  return { ...(inside(normalized) ? { lo: normalized } : {}), ...(inside(next) ? { hi: next } : {}), piece: `range [${normalized}, ${next})` };
}

/**
 * The splits that cut `key` out of its shard into a piece of its own on `targetNode` (see the
 * module comment); the rest of the shard stays on its node. Throws when the key already has a
 * shard of its own, or when its type has no successor to end a range piece at.
 */
export function isolationSteps(t: TenantTable, key: string, targetNode: string): IsolationPlan {
  const placed = shardOfKey(t, key);
  const { shard, normalized } = placed;
  const cut = cutOf(t, placed);
  if ('cannot' in cut) throw new InvalidInputError(cut.cannot);
  const { lo, hi, piece } = cut;
  const source = shard.node;
  const steps: IsolationStep[] = [];
  let keyHalf: 0 | 1 = 0;
  if (lo !== undefined && hi !== undefined) {
    steps.push({ shard: shard.shardId, at: lo, targets: [source, source] });
    steps.push({ shard: 'upper', at: hi, targets: [targetNode, source] });
  } else if (lo !== undefined) {
    steps.push({ shard: shard.shardId, at: lo, targets: [source, targetNode] });
    keyHalf = 1;
  } else {
    steps.push({ shard: shard.shardId, at: hi!, targets: [targetNode, source] });
  }
  return { table: t.table, key: normalized, shardId: shard.shardId, sourceNode: source, targetNode, piece, steps, keyHalf };
}

export interface HotTenant {
  table: string;
  key: string;
  shardId: number;
  node: string;
  /** The key's accesses in the window (its heavy-hitter lower bound). */
  accesses: number;
  /** Its shard's accesses in the window. */
  shardAccesses: number;
  share: number;
}

export interface HotTenantOptions {
  table?: string;
  sinceMs: number;
  /** Share of its shard's accesses from which a key is a hot tenant (default 0.5). */
  minShare?: number;
  /** Fewest accesses in the window (default 100): a handful of lookups is no tenant. */
  minAccesses?: number;
  now?: Date;
}

/** Keys that take at least `minShare` of their shard's accesses over the window, hottest first (see the module comment). */
export async function hotTenants(catalog: Queryable, options: HotTenantOptions): Promise<HotTenant[]> {
  const minShare = options.minShare ?? 0.5;
  const minAccesses = options.minAccesses ?? 100;
  if (!(minShare > 0 && minShare <= 1)) throw new InvalidInputError(`the smallest share must be above 0 and at most 1, got ${minShare}`);
  const since = new Date((options.now ?? new Date()).getTime() - options.sinceMs);
  const { rows: keys } = await catalog.query<{ table_name: string; key: string; accesses: string }>(
    `select table_name, key, sum(lower_bound)::text as accesses from shardcast_stats.hot_keys
      where bucket >= date_trunc('minute', $1::timestamptz) and ($2::text is null or table_name = $2)
      group by 1, 2 having sum(lower_bound) >= $3 order by 3 desc`,
    [since, options.table ?? null, minAccesses],
  );
  const { rows: shardRows } = await catalog.query<{ table_name: string; shard_id: string; accesses: string }>(
    `select table_name, shard_id::text, sum(accesses)::text as accesses from shardcast_stats.shard_accesses
      where bucket >= date_trunc('minute', $1::timestamptz) and ($2::text is null or table_name = $2) group by 1, 2`,
    [since, options.table ?? null],
  );
  const shardAccesses = new Map(shardRows.map((r) => [`${r.table_name}/${r.shard_id}`, Number(r.accesses)]));
  const tables = new Map<string, TenantTable | null>();
  const out: HotTenant[] = [];
  for (const k of keys) {
    if (!tables.has(k.table_name)) tables.set(k.table_name, await tenantTable(catalog, k.table_name).catch(() => null));
    const t = tables.get(k.table_name);
    if (!t) continue; // dropped since
    let placed;
    try {
      placed = shardOfKey(t, k.key);
    } catch {
      continue;
    }
    const { shard } = placed;
    const total = shardAccesses.get(`${t.table}/${shard.shardId}`) ?? 0;
    const accesses = Number(k.accesses);
    // A key already alone, or one isolation cannot cut out (a text or uuid range key), is no candidate.
    if ('cannot' in cutOf(t, placed) || total === 0) continue;
    const share = Math.min(1, accesses / total);
    if (share < minShare) continue;
    out.push({ table: t.table, key: placed.normalized, shardId: shard.shardId, node: shard.node, accesses, shardAccesses: total, share });
  }
  return out.sort((a, b) => b.accesses - a.accesses);
}

/** What the routers' profile says of one entity (a shard-key value): where and when it is accessed. */
export interface EntityProfile {
  /** Share of its accesses per client region over the last day (routers with a `region`); empty: unknown. */
  regionShares: Record<string, number>;
  /** Its accesses per hour of the day over the last week (24 values; UTC hours, or the load clock's under compression); all zero: unknown. */
  hourly: number[];
}

export interface TargetCandidate {
  name: string;
  region: string | null;
  /** Observed load over capacity, over the last 15 minutes. */
  utilisation: number;
  /** The node's load per UTC hour of the day over the last week (24 values; all zero: unknown). */
  hourly: number[];
}

export interface TargetChoice {
  name: string;
  cost: number;
  terms: CostTerms;
  reason: string;
}

/**
 * The node an isolated entity goes to: the lowest target cost of the planner (planning/cost.ts, its
 * weights) with the entity's own profile — load: the node's observed utilisation over the target
 * utilisation; locality: the share of the entity's accesses from other regions than the node's;
 * alignment: how far the entity's daily peak stacks on the node's (peakStacking of the two hour-of-day
 * profiles), so that entities with opposite peaks share a node. Bytes are the same for every target
 * and left out. A node already over the target takes the entity only when every node is (load first).
 * Ties: the less utilised, then the name. Pure.
 */
export function chooseIsolationTarget(entity: EntityProfile, candidates: readonly TargetCandidate[], weights: PlannerWeights, targetUtilisation: number): TargetChoice {
  if (candidates.length === 0) throw new InvalidInputError('no candidate node');
  const under = candidates.filter((c) => c.utilisation <= targetUtilisation);
  const pool = under.length > 0 ? under : candidates;
  const scored = pool.map((c) => {
    const terms: CostTerms = {
      load: c.utilisation / targetUtilisation,
      bytes: 0,
      locality: localityCost(entity.regionShares, c.region),
      alignment: peakStacking(entity.hourly, c.hourly),
    };
    return { c, terms, cost: targetCost(terms, weights) };
  });
  scored.sort((a, b) => a.cost - b.cost || a.c.utilisation - b.c.utilisation || (a.c.name < b.c.name ? -1 : a.c.name > b.c.name ? 1 : 0));
  const best = scored[0]!;
  const pct = (x: number) => `${Math.round(x * 100)}%`;
  const regions = Object.entries(entity.regionShares).sort((a, b) => b[1] - a[1]);
  const parts = [`${pct(best.c.utilisation)} utilised`];
  if (regions.length > 0) parts.push(`${pct(1 - best.terms.locality)} of the key's accesses from ${best.c.region ?? 'no region'}${regions[0]![0] === best.c.region ? '' : ` (most from ${regions[0]![0]})`}`);
  if (entity.hourly.some((v) => v > 0) && best.c.hourly.some((v) => v > 0)) {
    const peak = (h: readonly number[]) => h.indexOf(Math.max(...h));
    parts.push(`its daily peak at ${peak(entity.hourly)}:00 UTC on the node's peaking at ${peak(best.c.hourly)}:00 stacks ${pct(best.terms.alignment)}`);
  }
  return { name: best.c.name, cost: best.cost, terms: best.terms, reason: `${best.c.name}: ${parts.join('; ')} (target cost ${best.cost.toFixed(2)}${scored.length > 1 ? `, next ${scored[1]!.c.name} ${scored[1]!.cost.toFixed(2)}` : ''})` };
}

/** The entity's profile from the routers' hot keys of its table's colocation group. */
export async function entityProfile(catalog: Queryable, tables: readonly string[], key: string, now: Date): Promise<EntityProfile> {
  const { rows: regions } = await catalog.query<{ region: string; n: string }>(
    `select region, sum(lower_bound)::text as n from shardcast_stats.hot_keys
      where table_name = any($1::text[]) and key = $2 and region <> '' and bucket >= $3::timestamptz - make_interval(secs => $4) group by region`,
    [tables, key, now, dayMs() / 1000],
  );
  const total = regions.reduce((a, r) => a + Number(r.n), 0);
  const { rows: buckets } = await catalog.query<{ ms: string; n: string }>(
    `select (extract(epoch from bucket) * 1000)::bigint::text as ms, sum(lower_bound)::text as n from shardcast_stats.hot_keys
      where table_name = any($1::text[]) and key = $2 and bucket >= $3::timestamptz - make_interval(secs => $4) group by 1`,
    [tables, key, now, (7 * dayMs()) / 1000],
  );
  const hourly = new Array<number>(24).fill(0);
  for (const b of buckets) hourly[hourOfDay(Number(b.ms))]! += Number(b.n);
  return { regionShares: total > 0 ? Object.fromEntries(regions.map((r) => [r.region, Number(r.n) / total])) : {}, hourly };
}

/** The hour of the load clock's day (src/clock.ts; the UTC hour without compression) of a time. */
const hourOfDay = (ms: number): number => Math.floor(ms / hourMs()) % 24;

/** A node's load per hour of the day over the week before `now` (its load series, hourly, on the load clock). */
async function nodeHourly(catalog: Queryable, node: string, now: Date): Promise<number[]> {
  const hourly = new Array<number>(24).fill(0);
  const points = await loadSeries(catalog, `node:${node}:load`, new Date(now.getTime() - 7 * dayMs()), now, hourMs());
  for (const p of points) if (p.value !== null) hourly[hourOfDay(p.ts.getTime())]! += p.value;
  return hourly;
}

/**
 * The isolation of `key` of `table` onto `targetNode`, or, without one, onto the active node other
 * than the key's own chosen by chooseIsolationTarget with the key's profile (its region shares and
 * daily profile from the routers' hot keys) and each node's (observed utilisation over the last 15
 * minutes, region, daily load profile). The rebalancer may move the piece later with its full target
 * cost, once the piece has a forecast of its own.
 */
export async function planIsolation(
  catalog: Queryable,
  request: { table: string; key: string; targetNode?: string },
  planner: { weights: PlannerWeights; targetUtilisation: number } = DEFAULT_SETTINGS,
  now = new Date(),
): Promise<IsolationPlan> {
  const t = await tenantTable(catalog, request.table);
  const { shard, normalized } = shardOfKey(t, request.key);
  const { rows: nodes } = await catalog.query<{ name: string; state: string; capacity: number | null; region: string | null }>('select name, state, capacity, region from shardcast.nodes order by name');
  let target = request.targetNode;
  let reason: string | undefined;
  if (target !== undefined) {
    const node = nodes.find((n) => n.name === target);
    if (!node) throw new NotFoundError(`there is no node "${target}"`);
    if (node.state !== 'active') throw new InvalidInputError(`node ${target} is ${node.state}, not active: it cannot take shards`);
  } else {
    const active = nodes.filter((n) => n.state === 'active' && n.name !== shard.node);
    if (active.length === 0) throw new InvalidInputError(`no active node other than ${shard.node} to isolate key ${request.key} of table "${t.table}" on: give --to`);
    const candidates: TargetCandidate[] = await Promise.all(
      active.map(async (n) => {
        const [p] = await loadSeries(catalog, `node:${n.name}:load`, new Date(now.getTime() - 15 * 60_000), now, now.getTime());
        return { name: n.name, region: n.region, utilisation: (p?.value ?? 0) / (n.capacity && n.capacity > 0 ? n.capacity : 1), hourly: await nodeHourly(catalog, n.name, now) };
      }),
    );
    const entity = await entityProfile(catalog, await groupTables(catalog, shard.shardId), normalized, now);
    const choice = chooseIsolationTarget(entity, candidates, planner.weights, planner.targetUtilisation);
    target = choice.name;
    reason = choice.reason;
  }
  return { ...isolationSteps(t, request.key, target), ...(reason ? { reason } : {}) };
}

/** A key's accesses over a window (its heavy-hitter lower bound). */
export interface KeyLoad {
  key: string;
  accesses: number;
}

/** Where a shard is cut into pieces of even load, and what each piece then carries. */
export interface LoadSplits {
  /** The split points in increasing order: piece i is (points[i − 1], points[i]] within [hashMin, hashMax]. */
  points: string[];
  /** Each piece's share of the shard's accesses. */
  shares: number[];
  /** The heavy keys' share of the shard's accesses (the rest is taken as spread evenly over its range). */
  heavyShare: number;
  /**
   * 'rows': a range shard, cut by its rows at logical boundaries (movement/range-splits.ts); points
   * are keys, shares are of rows, and `boundaries` says per point where it was moved to.
   */
  basis?: 'rows';
  boundaries?: Array<'day' | 'hour' | 'key'>;
}

/**
 * The `pieces − 1` points that cut a hash shard into pieces of even *load*, not even hash ranges: its
 * heavy keys (the routers' heavy hitters, each at its hash) plus the rest of its accesses taken as
 * spread evenly over its range. Each point is where the lower part comes nearest its share of the
 * accesses, so a heavy key that straddles it goes to whichever side leaves the two closer. Undefined
 * for a range table, a shard without accesses, one of a single hash value, when no heavy key is in the
 * shard (the middles, the split's default, are then as good), or when the pieces cannot all be non-empty.
 */
export function loadSplitPoints(t: TenantTable, shard: TenantShard, keys: readonly KeyLoad[], shardAccesses: number, pieces: number): LoadSplits | undefined {
  if (!(Number.isInteger(pieces) && pieces >= 2)) return undefined;
  const profile = loadProfile(t, shard, keys, shardAccesses);
  if (!profile) return undefined;
  const points: bigint[] = [];
  for (let j = 1; j < pieces; j++) {
    let at = profile.pointAt(j / pieces);
    if (points.length > 0 && at <= points.at(-1)!) at = points.at(-1)! + 1n;
    if (at >= profile.max) return undefined;
    points.push(at);
  }
  const cumulative = points.map((p) => profile.lowerLoad(p) / profile.total);
  const shares = [...cumulative, 1].map((c, i) => c - (i === 0 ? 0 : cumulative[i - 1]!));
  return { points: points.map(String), shares, heavyShare: profile.heavyShare };
}

/** A hash shard's accesses over its range: its heavy keys at their hashes, the rest spread evenly. */
function loadProfile(t: TenantTable, shard: TenantShard, keys: readonly KeyLoad[], shardAccesses: number) {
  if (t.method !== 'hash' || shard.hashMin === null || shard.hashMax === null || !(shardAccesses > 0)) return undefined;
  const min = BigInt(shard.hashMin);
  const max = BigInt(shard.hashMax);
  if (min >= max) return undefined;
  const heavy = new Map<bigint, number>();
  for (const k of keys) {
    let placed;
    try {
      placed = shardOfKey(t, k.key);
    } catch {
      continue;
    }
    if (placed.shard.shardId !== shard.shardId || !(k.accesses > 0)) continue;
    heavy.set(placed.hash!, (heavy.get(placed.hash!) ?? 0) + k.accesses);
  }
  if (heavy.size === 0) return undefined;
  const sorted = [...heavy].sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  const heavySum = sorted.reduce((a, [, v]) => a + v, 0);
  const total = Math.max(shardAccesses, heavySum);
  const rest = total - heavySum;
  const width = Number(max - min + 1n);
  /** Accesses of [min, x]. */
  const lowerLoad = (x: bigint): number => {
    let sum = (rest * Number(x - min + 1n)) / width;
    for (const [h, a] of sorted) if (h <= x) sum += a;
    return sum;
  };
  /** The point whose lower part [min, at] carries nearest `fraction` of the accesses (min ≤ at < max). */
  const pointAt = (fraction: number): bigint => {
    const goal = total * fraction;
    // Candidates: the even-spread point of each stretch between heavy keys, and each side of every heavy key.
    const candidates = new Set<bigint>();
    let cum = 0;
    let from = min;
    for (const [h, a] of sorted) {
      const stretch = (rest * Number(h - from)) / width;
      if (rest > 0 && cum < goal && cum + stretch >= goal) candidates.add(from + BigInt(Math.floor(((goal - cum) / rest) * width)) - 1n);
      cum += stretch + a;
      candidates.add(h - 1n);
      candidates.add(h);
      from = h + 1n;
    }
    if (rest > 0 && cum < goal) candidates.add(from + BigInt(Math.floor(((goal - cum) / rest) * width)) - 1n);
    let best: { at: bigint; gap: number } | undefined;
    for (const c of candidates) {
      const at = c < min ? min : c >= max ? max - 1n : c;
      const gap = Math.abs(lowerLoad(at) - goal);
      if (!best || gap < best.gap - 1e-9 || (Math.abs(gap - best.gap) <= 1e-9 && at < best.at)) best = { at, gap };
    }
    return best!.at;
  };
  return { min, max, total, heavyShare: heavySum / total, lowerLoad, pointAt };
}

/**
 * The `pieces − 1` load-even split points of a shard (loadSplitPoints) from the routers' profile over
 * the last `sinceMs`: the heavy hitters and shard accesses of every table of its colocation group (they
 * share its key and its hash ranges). Undefined (the middles) when the profile has no heavy key in it.
 */
export async function loadSplitsFor(catalog: Queryable, shardId: number, pieces: number, sinceMs: number, now = new Date()): Promise<LoadSplits | undefined> {
  const profile = await shardProfile(catalog, shardId, sinceMs, now);
  return profile && loadSplitPoints(profile.t, profile.shard, profile.keys, profile.accesses, pieces);
}

/** The active tables of a shard's colocation group, oldest first (they share its key and its ranges). */
async function groupTables(catalog: Queryable, shardId: number): Promise<string[]> {
  const { rows } = await catalog.query<{ name: string }>(
    `select t.name from shardcast.shards s join shardcast.distributed_tables t on t.group_id = s.group_id where s.id = $1 and t.state = 'active' order by t.id`,
    [shardId],
  );
  return rows.map((r) => r.name);
}

async function shardProfile(catalog: Queryable, shardId: number, sinceMs: number, now: Date): Promise<{ t: TenantTable; shard: TenantShard; keys: KeyLoad[]; accesses: number } | undefined> {
  const names = await groupTables(catalog, shardId);
  if (names.length === 0) return undefined;
  const since = new Date(now.getTime() - sinceMs);
  const t = await tenantTable(catalog, names[0]!);
  const shard = t.shards.find((x) => x.shardId === shardId);
  if (!shard) return undefined;
  const { rows: keys } = await catalog.query<{ key: string; accesses: string }>(
    `select key, sum(lower_bound)::text as accesses from shardcast_stats.hot_keys
      where bucket >= date_trunc('minute', $1::timestamptz) and table_name = any($2::text[]) group by key`,
    [since, names],
  );
  const { rows: total } = await catalog.query<{ accesses: string | null }>(
    `select sum(accesses)::text as accesses from shardcast_stats.shard_accesses
      where bucket >= date_trunc('minute', $1::timestamptz) and table_name = any($2::text[]) and shard_id = $3`,
    [since, names, shardId],
  );
  return { t, shard, keys: keys.map((k) => ({ key: k.key, accesses: Number(k.accesses) })), accesses: Number(total[0]?.accesses ?? 0) };
}

/** The window hot tenants are judged on by the rebalancer, and the fewest accesses in it. */
export const REBALANCE_TENANT_WINDOW_MS = 15 * 60_000;
export const REBALANCE_TENANT_MIN_ACCESSES = 1000;

/**
 * The rebalancer's tenant isolation (planning.isolateTenantShare): the hot tenants (at least
 * `minShare` of their shard's accesses over the last 15 minutes, 1,000 accesses at least) whose node
 * the plan predicts over target without it. Their shards are taken out of the plan (with the actions
 * that come after theirs): the isolation changes the shard's layout, and the next round plans the
 * pieces. One tenant per shard, the hottest. The plan's notes say what was done.
 */
export async function tenantsToIsolate(
  catalog: Queryable,
  plan: Plan,
  minShare: number,
  now = new Date(),
): Promise<Array<{ table: string; key: string; shardId: number; node: string; share: number }>> {
  const tenants = await hotTenants(catalog, { sinceMs: REBALANCE_TENANT_WINDOW_MS, minShare, minAccesses: REBALANCE_TENANT_MIN_ACCESSES, now });
  const over = new Set(plan.nodes.filter((n) => Math.max(0, ...n.without) > plan.targetUtilisation).map((n) => n.name));
  const chosen: HotTenant[] = [];
  for (const t of tenants) if (over.has(t.node) && !chosen.some((c) => c.shardId === t.shardId)) chosen.push(t);
  if (chosen.length === 0) return [];
  const shards = new Set(chosen.map((t) => t.shardId));
  const dropped = new Set(plan.actions.filter((a) => 'shardIds' in a && a.shardIds.some((id) => shards.has(id))).map((a) => a.id));
  for (let grew = true; grew; ) {
    grew = false;
    for (const a of plan.actions) {
      if (!dropped.has(a.id) && a.after.some((d) => dropped.has(d))) {
        dropped.add(a.id);
        grew = true;
      }
    }
  }
  if (dropped.size > 0) plan.actions = plan.actions.filter((a) => !dropped.has(a.id));
  for (const t of chosen) {
    plan.notes.push(
      `key ${t.key} of ${t.table} takes ${Math.round(t.share * 100)}% of shard ${t.shardId}'s accesses on ${t.node}, predicted over target: isolating it into a shard of its own first (workflow isolateKey); the next round plans the pieces`,
    );
  }
  if (dropped.size > 0) plan.notes.push(`left out of this round for the isolation: ${[...dropped].join(', ')}`);
  return chosen.map((t) => ({ table: t.table, key: t.key, shardId: t.shardId, node: t.node, share: t.share }));
}
