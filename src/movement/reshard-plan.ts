import type { Queryable, NodeRecord } from '../catalog/nodes.js';
import { getNode, getNodeByName } from '../catalog/nodes.js';
import { compareKeys, hashKey, KEY_TYPES, keyToText, normalizeKey, sqlHashFunction, type KeyType } from '../catalog/keys.js';
import type { ShardMethod } from '../catalog/tables.js';
import { InvalidInputError, NotFoundError } from '../errors.js';
import { quoteIdent, quoteLiteral, shardSchemaName } from '../sql/ident.js';
import { movementNames } from './replication.js';

/**
 * Splits and merges (DESIGN §3): the shards that go (sources), the shards that come (targets), and
 * which target each row belongs to. Ranges travel as text so that plans stay JSON (Temporal payloads).
 */

export type ShardRange = { hashMin: string; hashMax: string } | { rangeMin: string; rangeMax: string };

export interface ReshardSource {
  shardId: number;
  schema: string;
  node: NodeRecord;
  range: ShardRange;
  /** Replication slot and publication on the source node, and the gid of its cutover PREPARE. */
  slot: string;
  publication: string;
  gid: string;
}

export interface ReshardTarget {
  /** Pre-allocated from the catalog's shard id sequence, so schema names are known before the cutover. */
  shardId: number;
  schema: string;
  node: NodeRecord;
  range: ShardRange;
}

export interface ReshardTable {
  name: string;
  columns: string;
  keyColumn: string;
}

export interface ReshardPlan {
  operation: 'split' | 'merge';
  movementId: string;
  groupId: number;
  groupName: string;
  method: ShardMethod;
  keyType: KeyType;
  tables: ReshardTable[];
  sources: ReshardSource[];
  targets: ReshardTarget[];
  /** Gid of the catalog's cutover PREPARE. */
  catalogGid: string;
  bytes: number;
}

interface ShardRow {
  id: number;
  group_id: number;
  group_name: string;
  schema_name: string;
  hash_min: string | null;
  hash_max: string | null;
  range_min: string | null;
  range_max: string | null;
  method: ShardMethod;
  key_type: KeyType;
  node_id: number | null;
}

async function loadShard(catalog: Queryable, shardId: number): Promise<ShardRow> {
  const { rows } = await catalog.query<ShardRow>(
    `select s.id::int as id, s.group_id::int as group_id, g.name as group_name, s.schema_name, s.hash_min::text, s.hash_max::text, s.range_min, s.range_max,
            g.method, g.key_type, p.node_id::int as node_id
       from shardcast.shards s join shardcast.colocation_groups g on g.id = s.group_id
       left join shardcast.placements p on p.shard_id = s.id
      where s.id = $1`,
    [shardId],
  );
  const row = rows[0];
  if (!row || row.node_id === null) throw new NotFoundError(`shard ${shardId} does not exist`);
  return row;
}

function rangeOf(row: ShardRow): ShardRange {
  return row.method === 'hash' ? { hashMin: row.hash_min!, hashMax: row.hash_max! } : { rangeMin: row.range_min!, rangeMax: row.range_max! };
}

async function groupTables(catalog: Queryable, groupId: number): Promise<ReshardTable[]> {
  const { rows } = await catalog.query<ReshardTable>(
    `select name, columns_ddl as columns, key_column as "keyColumn" from shardcast.distributed_tables
      where group_id = $1 and state = 'active' order by id`,
    [groupId],
  );
  return rows;
}

async function allocateShardIds(catalog: Queryable, n: number): Promise<number[]> {
  const { rows } = await catalog.query<{ id: number }>(
    `select nextval(pg_get_serial_sequence('shardcast.shards', 'id'))::int as id from generate_series(1, $1::int)`,
    [n],
  );
  return rows.map((r) => r.id);
}

async function activeNode(catalog: Queryable, name: string): Promise<NodeRecord> {
  const node = await getNodeByName(catalog, name);
  if (node.state !== 'active') throw new InvalidInputError(`node ${node.name} is ${node.state}, not active: it cannot take shards`);
  return node;
}

function source(row: ShardRow, node: NodeRecord, movementId: string, i: number): ReshardSource {
  const base = movementNames(movementId).slot;
  return { shardId: row.id, schema: row.schema_name, node, range: rangeOf(row), slot: `${base}_${i}`, publication: `${base}_${i}`, gid: `${base}_${i}` };
}

export interface SplitRequest {
  movementId: string;
  shardId: number;
  targetNodes: [string, string];
  /** Hash method: the last hash value of the left half (default: the middle). Range method: the key where the right half starts. */
  at?: string;
}

/** Plans a split of one shard into two adjacent halves, each on a node of choice (the source's own included). */
export async function planSplit(catalog: Queryable, request: SplitRequest): Promise<Omit<ReshardPlan, 'bytes'>> {
  const { row, nodes, halves } = await checkSplit(catalog, request);
  const ids = await allocateShardIds(catalog, 2);
  return {
    operation: 'split',
    movementId: request.movementId,
    groupId: row.group_id,
    groupName: row.group_name,
    method: row.method,
    keyType: row.key_type,
    tables: await groupTables(catalog, row.group_id),
    sources: [source(row, await getNode(catalog, row.node_id!), request.movementId, 0)],
    targets: ids.map((id, i) => ({ shardId: id, schema: shardSchemaName(id), node: nodes[i]!, range: halves[i]! })),
    catalogGid: movementNames(request.movementId).gid,
  };
}

/**
 * A split's request checked against the catalog, changing nothing: the shard exists, both target
 * nodes exist and are active, the split point lies inside the shard. The CLI runs it before starting
 * a workflow (a typo is one line and no failed run); the workflow's planning runs it again.
 */
export async function checkSplit(catalog: Queryable, request: Omit<SplitRequest, 'movementId'>): Promise<{ row: ShardRow; nodes: NodeRecord[]; halves: [ShardRange, ShardRange] }> {
  const row = await loadShard(catalog, request.shardId);
  if (!Array.isArray(request.targetNodes) || request.targetNodes.length !== 2) throw new InvalidInputError('a split needs exactly two target nodes');
  const nodes = [await activeNode(catalog, request.targetNodes[0]), await activeNode(catalog, request.targetNodes[1])];
  let halves: [ShardRange, ShardRange];
  if (row.method === 'hash') {
    const min = BigInt(row.hash_min!);
    const max = BigInt(row.hash_max!);
    if (min === max) throw new InvalidInputError(`shard ${row.id} covers a single hash value and cannot be split`);
    let at: bigint;
    if (request.at === undefined) at = (min + max) >> 1n;
    else if (/^-?\d+$/.test(request.at.trim())) at = BigInt(request.at.trim());
    else throw new InvalidInputError(`split point ${JSON.stringify(request.at)} must be a 64-bit hash value (an integer) for a hash-sharded table`);
    if (at < min || at >= max) throw new InvalidInputError(`split point ${at} is outside shard ${row.id}'s hash range [${min}, ${max - 1n}]`);
    halves = [
      { hashMin: min.toString(), hashMax: at.toString() },
      { hashMin: (at + 1n).toString(), hashMax: max.toString() },
    ];
  } else {
    if (request.at === undefined) throw new InvalidInputError(`shard ${row.id} is range-sharded: give the split key with --at`);
    let at: string;
    try {
      at = keyToText(normalizeKey(row.key_type, request.at));
    } catch (err) {
      throw new InvalidInputError(`split point: ${(err as Error).message}`);
    }
    const inside = compareKeys(row.key_type, row.range_min!, at) < 0 && compareKeys(row.key_type, at, row.range_max!) < 0;
    if (!inside) throw new InvalidInputError(`split point ${JSON.stringify(at)} must lie strictly inside shard ${row.id}'s range [${row.range_min}, ${row.range_max})`);
    halves = [
      { rangeMin: row.range_min!, rangeMax: at },
      { rangeMin: at, rangeMax: row.range_max! },
    ];
  }
  return { row, nodes, halves };
}

export interface MergeRequest {
  movementId: string;
  shardIds: [number, number];
  /** Node of the merged shard; default: the node of the lower shard. */
  targetNode?: string;
}

/** Plans a merge of two adjacent shards of one colocation group into one shard. */
export async function planMerge(catalog: Queryable, request: MergeRequest): Promise<Omit<ReshardPlan, 'bytes'>> {
  const { lo, hi, target } = await checkMerge(catalog, request);
  const type = lo.key_type;
  const [id] = await allocateShardIds(catalog, 1);
  const range: ShardRange = lo.method === 'hash' ? { hashMin: lo.hash_min!, hashMax: hi.hash_max! } : { rangeMin: lo.range_min!, rangeMax: hi.range_max! };
  return {
    operation: 'merge',
    movementId: request.movementId,
    groupId: lo.group_id,
    groupName: lo.group_name,
    method: lo.method,
    keyType: type,
    tables: await groupTables(catalog, lo.group_id),
    sources: [source(lo, await getNode(catalog, lo.node_id!), request.movementId, 0), source(hi, await getNode(catalog, hi.node_id!), request.movementId, 1)],
    targets: [{ shardId: id!, schema: shardSchemaName(id!), node: target, range }],
    catalogGid: movementNames(request.movementId).gid,
  };
}

/**
 * A merge's request checked against the catalog, changing nothing: two different shards that exist,
 * of one colocation group, adjacent; the target node (default: the lower shard's) exists and is active.
 * The CLI runs it before starting a workflow; the workflow's planning runs it again.
 */
export async function checkMerge(catalog: Queryable, request: Omit<MergeRequest, 'movementId'>): Promise<{ lo: ShardRow; hi: ShardRow; target: NodeRecord }> {
  if (!Array.isArray(request.shardIds) || request.shardIds.length !== 2) throw new InvalidInputError('a merge needs exactly two shards');
  if (request.shardIds[0] === request.shardIds[1]) throw new InvalidInputError(`cannot merge shard ${request.shardIds[0]} with itself`);
  const rows = [await loadShard(catalog, request.shardIds[0]), await loadShard(catalog, request.shardIds[1])];
  if (rows[0]!.group_id !== rows[1]!.group_id) throw new InvalidInputError(`shards ${rows[0]!.id} and ${rows[1]!.id} belong to different colocation groups and cannot be merged`);
  const type = rows[0]!.key_type;
  const [lo, hi] =
    rows[0]!.method === 'hash'
      ? BigInt(rows[0]!.hash_min!) < BigInt(rows[1]!.hash_min!)
        ? [rows[0]!, rows[1]!]
        : [rows[1]!, rows[0]!]
      : compareKeys(type, rows[0]!.range_min!, rows[1]!.range_min!) < 0
        ? [rows[0]!, rows[1]!]
        : [rows[1]!, rows[0]!];
  const adjacent = lo.method === 'hash' ? BigInt(lo.hash_max!) + 1n === BigInt(hi.hash_min!) : lo.range_max === hi.range_min;
  if (!adjacent) throw new InvalidInputError(`shards ${lo.id} and ${hi.id} are not adjacent: only neighbouring ranges can be merged`);
  const target = await activeNode(catalog, request.targetNode ?? (await getNode(catalog, lo.node_id!)).name);
  return { lo, hi, target };
}

/** SQL that is true for rows of `range` (the key column given by name). */
export function rangePredicate(keyType: KeyType, keyColumn: string, range: ShardRange): string {
  if (!KEY_TYPES.includes(keyType)) throw new InvalidInputError(`key type ${JSON.stringify(keyType)} is not one Shardcast shards by`);
  const key = quoteIdent(keyColumn);
  // Hash bounds are numbers in the text: through BigInt, so that nothing but an integer reaches the SQL.
  if ('hashMin' in range) return `${sqlHashFunction(keyType)}(${key}, 0) between ${int64(range.hashMin)} and ${int64(range.hashMax)}`;
  const collate = keyType === 'text' ? ' collate "C"' : '';
  return `${key}${collate} >= ${quoteLiteral(range.rangeMin)}::${keyType} and ${key}${collate} < ${quoteLiteral(range.rangeMax)}::${keyType}`;
}

function int64(text: string): string {
  if (!/^-?\d{1,19}$/.test(text)) throw new InvalidInputError(`hash bound ${JSON.stringify(text)} is not an integer`);
  const n = BigInt(text);
  if (n < -(2n ** 63n) || n >= 2n ** 63n) throw new InvalidInputError(`hash bound ${text} is outside the 64-bit range`);
  return n.toString();
}

/** Which of the targets holds a row with this key (its text form, as logical replication sends it). */
export function targetIndexFor(plan: Pick<ReshardPlan, 'keyType' | 'targets'>, keyText: string): number {
  if (plan.targets.length === 1) return 0;
  const first = plan.targets[0]!.range;
  if ('hashMin' in first) {
    const hash = hashKey(plan.keyType, keyText);
    return hash <= BigInt(first.hashMax) ? 0 : 1;
  }
  return compareKeys(plan.keyType, normalizeKey(plan.keyType, keyText), first.rangeMax) < 0 ? 0 : 1;
}
